"""Word and sentencepiece tokenizers behind one interface (RELIABILITY.md #27)."""

from __future__ import annotations

import pytest
import torch

from lm1b.config.data import DataConfig
from lm1b.tokenizer import (
    SentencePieceTokenizer,
    WordTokenizer,
    build_tokenizer,
    tokenizer_from_state,
    tokenizer_state,
    train_sentencepiece,
)
from lm1b.vocab import Vocabulary


def _messy_corpus(tmp_path):
    lines = [
        "The cat sat on the mat .",
        "Ünïcödé wörds , an odd \x92 token and émigrés .",
        "a " * 3000,  # longer than sentencepiece's max_sentence_length
        "",
        "   ",
    ] + [f"sentence number {i} about cats and dogs ." for i in range(200)]
    path = tmp_path / "shard"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_sentencepiece_trains_on_messy_input_and_round_trips(tmp_path):
    model = train_sentencepiece([_messy_corpus(tmp_path)], tmp_path / "spm.model", vocab_size=300)
    tokenizer = SentencePieceTokenizer(model)
    assert 0 < tokenizer.vocab_size <= 300
    assert (tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2)
    ids = tokenizer.encode(["The", "cat", "sat", "."])
    assert ids and all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == "The cat sat ."


def test_sentencepiece_on_an_empty_corpus_names_the_input(tmp_path):
    empty = tmp_path / "empty-shard"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty-shard"):
        train_sentencepiece([empty], tmp_path / "spm.model", vocab_size=100)
    assert not (tmp_path / "spm.model").exists()


def test_build_tokenizer_builds_once_and_then_loads(tmp_path):
    shard = _messy_corpus(tmp_path)
    cfg = DataConfig(train_files="shard", vocab_file=str(tmp_path / "v.txt"), vocab_min_count=2)
    first = build_tokenizer(cfg, [shard], cache_dir=tmp_path / "unused")
    assert isinstance(first, WordTokenizer)
    stamp = (tmp_path / "v.txt").stat().st_mtime_ns
    second = build_tokenizer(cfg, [shard], cache_dir=tmp_path / "unused")
    assert (tmp_path / "v.txt").stat().st_mtime_ns == stamp
    assert second.vocabulary == first.vocabulary == Vocabulary.load(tmp_path / "v.txt")
    assert first.encode(["cats", "zebra"]) == [first.vocabulary.lookup("cats"), first.unk_id]

    spm_cfg = DataConfig(
        train_files="shard",
        tokenizer="sentencepiece",
        spm_model=str(tmp_path / "s.model"),
        spm_vocab_size=200,
    )
    assert isinstance(build_tokenizer(spm_cfg, [shard], tmp_path), SentencePieceTokenizer)
    assert (tmp_path / "s.model").is_file()
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("kind", ["word", "sentencepiece"])
def test_tokenizer_survives_a_checkpoint(tmp_path, kind):
    """Runs are self-contained: the tokenizer is rebuilt from a weights_only checkpoint."""
    shard = _messy_corpus(tmp_path)
    cfg = DataConfig(train_files="shard", tokenizer=kind, spm_vocab_size=200)
    tokenizer = build_tokenizer(cfg, [shard], cache_dir=tmp_path / "run")
    assert (tmp_path / "run" / ("vocab.txt" if kind == "word" else "spm.model")).is_file()
    torch.save({"tokenizer": tokenizer_state(tokenizer)}, tmp_path / "ckpt.pt")
    restored = tokenizer_from_state(
        torch.load(tmp_path / "ckpt.pt", weights_only=True)["tokenizer"]
    )
    words = ["The", "cat", "sat", "on", "émigrés", "zebra", "."]
    assert restored.encode(words) == tokenizer.encode(words)
    assert (restored.vocab_size, restored.eos_id) == (tokenizer.vocab_size, tokenizer.eos_id)
