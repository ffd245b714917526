"""One tokenizer interface for words and subwords.

Both tokenizers take one sentence as its list of corpus tokens (split on single spaces by
`lm1b.data.text`) and return ids without sentence markers; the data stream adds `bos_id` and
`eos_id`. Whatever the tokenizer, perplexity is reported per word: total nats divided by the
number of words plus sentence ends, which the evaluation stream counts from the token lists.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import sentencepiece as spm
import torch

from lm1b.config.checks import ConfigError
from lm1b.config.data import DataConfig
from lm1b.config.schema import TrainConfig
from lm1b.data.text import read_sentences
from lm1b.vocab import Vocabulary, build_vocabulary

logger = logging.getLogger(__name__)


class Tokenizer(Protocol):
    """What training, evaluation and the commands need of a tokenizer (WordTokenizer and
    SentencePieceTokenizer below): the data streams use the ids and `encode`, the commands
    `vocab_size` and `decode` too."""

    vocab_size: int
    bos_id: int
    eos_id: int
    unk_id: int

    def encode(self, words: Sequence[str]) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class WordTokenizer:
    """Each corpus token is one id of a `Vocabulary`; unknown words map to `<UNK>`."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self.vocab_size = len(vocabulary)
        self.bos_id = vocabulary.bos_id
        self.eos_id = vocabulary.eos_id
        self.unk_id = vocabulary.unk_id
        self.encode = vocabulary.encode  # bound once: the loader calls it per sentence

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocabulary.decode(ids))


class SentencePieceTokenizer:
    """A sentencepiece model applied to the space-joined corpus tokens of a sentence."""

    def __init__(self, model_file: str | Path | None = None, model_proto: bytes | None = None):
        if model_proto is None:
            if model_file is None or not Path(model_file).is_file():
                raise FileNotFoundError(f"sentencepiece model {model_file} does not exist")
            model_proto = Path(model_file).read_bytes()
        self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self._processor.get_piece_size()
        self.bos_id = self._processor.bos_id()
        self.eos_id = self._processor.eos_id()
        self.unk_id = self._processor.unk_id()

    def encode(self, words: Sequence[str]) -> list[int]:
        return self._processor.encode(" ".join(words))

    def decode(self, ids: Sequence[int]) -> str:
        return self._processor.decode(list(ids))

    def serialized_model(self) -> bytes:
        return self._processor.serialized_model_proto()


def _sample_sentences(paths: Sequence[Path], max_sentences: int) -> Iterator[str]:
    """Up to `max_sentences` lines, an equal share from the start of each shard."""
    per_file = max(1, max_sentences // len(paths))
    for path in paths:
        for index, tokens in enumerate(read_sentences(path)):
            if index >= per_file:
                break
            yield " ".join(tokens)


def train_sentencepiece(
    paths: Sequence[str | Path],
    model_file: str | Path,
    vocab_size: int,
    max_sentences: int = 1_000_000,
) -> Path:
    """Train a unigram sentencepiece model on a sample of `paths` and write it atomically.

    `hard_vocab_limit=False` lets a small corpus yield fewer pieces than asked instead of
    failing; ids 0, 1, 2 are `<unk>`, `<s>`, `</s>` (sentencepiece's defaults).
    """
    paths = [Path(p) for p in paths]
    sentences = list(_sample_sentences(paths, max_sentences)) if paths else []
    if not sentences:
        raise ValueError(f"cannot train sentencepiece: no sentences in {[str(p) for p in paths]}")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=0.9995,
        minloglevel=2,
    )
    model_file = Path(model_file)
    model_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=model_file.parent, delete=False, suffix=".tmp") as out:
        out.write(model.getvalue())
    os.replace(out.name, model_file)
    logger.info("trained sentencepiece model %s on %d sentences", model_file, len(sentences))
    return model_file


def build_tokenizer(cfg: DataConfig, train_paths: Sequence[Path], cache_dir: Path) -> Tokenizer:
    """The tokenizer `cfg.tokenizer` names. Its file is `data.vocab_file` / `data.spm_model`, or
    `cache_dir/vocab.txt` / `cache_dir/spm.model` when that is null; a missing file is built
    from `train_paths` and saved (the trainer calls this on rank 0 before the other ranks)."""
    if cfg.tokenizer == "sentencepiece":
        model_file = Path(cfg.spm_model or cache_dir / "spm.model")
        _refuse_a_non_file("data.spm_model", model_file)
        if not model_file.is_file():
            train_sentencepiece(train_paths, model_file, cfg.spm_vocab_size)
        return SentencePieceTokenizer(model_file)
    path = Path(cfg.vocab_file or cache_dir / "vocab.txt")
    _refuse_a_non_file("data.vocab_file", path)
    if path.is_file():
        return WordTokenizer(Vocabulary.load(path))
    logger.info("building vocabulary %s from %d files", path, len(train_paths))
    vocabulary = build_vocabulary(
        train_paths, min_count=cfg.vocab_min_count, max_size=cfg.vocab_max_size
    )
    vocabulary.save(path)
    return WordTokenizer(vocabulary)


def _refuse_a_non_file(field: str, path: Path) -> None:
    """A directory (or other non-file) where the tokenizer's file should be would be found
    missing, rebuilt from every shard, and only then fail to be written: say so first."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"{field}={path} is invalid: it exists and is not a file")


def tokenizer_state(tokenizer: Tokenizer) -> dict:
    """The tokenizer as checkpoint entries (lists, str and tensors: weights_only-loadable), so
    a checkpoint is all that evaluating or scoring needs."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        proto = tokenizer.serialized_model()
        return {
            "kind": "sentencepiece",
            "model": torch.frombuffer(bytearray(proto), dtype=torch.uint8),
        }
    return {
        "kind": "word",
        "words": list(tokenizer.vocabulary.words),
        "counts": list(tokenizer.vocabulary.counts),
    }


def tokenizer_from_state(state: dict) -> Tokenizer:
    """Inverse of `tokenizer_state`."""
    if state["kind"] == "sentencepiece":
        return SentencePieceTokenizer(model_proto=state["model"].numpy().tobytes())
    return WordTokenizer(Vocabulary(state["words"], state["counts"]))


def resolve_vocab_size(cfg: TrainConfig) -> int:
    """`model.vocab_size`, or the size of the configured vocabulary file / sentencepiece model."""
    if cfg.model.vocab_size is not None:
        return cfg.model.vocab_size
    if cfg.data.tokenizer == "sentencepiece" and cfg.data.spm_model:
        return SentencePieceTokenizer(cfg.data.spm_model).vocab_size
    path = Path(cfg.data.vocab_file or "")
    if not cfg.data.vocab_file or not path.is_file():
        raise ConfigError(
            f"model.vocab_size=None is taken from data.vocab_file={cfg.data.vocab_file!r}, which "
            "does not exist yet; set model.vocab_size=<V> or build the vocabulary first"
        )
    return len(Vocabulary.load(path))
