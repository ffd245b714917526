"""The synthetic corpus: LM1B layout, deterministic, and an exact entropy that the text obeys."""

from __future__ import annotations

import json

import numpy as np

from lm1b.config.data import DataConfig
from lm1b.data.build import resolve_data_files
from lm1b.data.markov import make_source
from lm1b.data.synthetic import generate_corpus, main
from lm1b.data.text import read_sentences
from lm1b.vocab import Vocabulary


def test_exact_entropy_matches_the_empirical_nll_of_samples():
    source = make_source(vocab_size=200, num_successors=5, seed=4)
    entropy, tokens_per_sentence = source.entropy()
    sentences = source.sample(20_000, np.random.default_rng(0))
    nll, tokens = source.nll(sentences)
    # ~300K tokens: the standard error of the mean NLL is about 0.002 nats.
    assert abs(nll / tokens - entropy) < 0.01
    assert abs(tokens / len(sentences) - tokens_per_sentence) < 0.02 * tokens_per_sentence
    assert 10 <= tokens_per_sentence <= 30


def test_corpus_layout_matches_the_synthetic_config_and_is_deterministic(tmp_path):
    options = {
        "num_train_shards": 3,
        "sentences_per_shard": 300,
        "heldout_sentences_per_shard": 200,
    }
    info = generate_corpus(tmp_path / "a", seed=7, **options)
    generate_corpus(tmp_path / "b", seed=7, **options)
    cfg = DataConfig(
        root=str(tmp_path / "a"),
        train_files="training-monolingual.tokenized.shuffled/news.en-*",
        valid_files="heldout-monolingual.tokenized.shuffled/news.en.heldout-00001-*",
        test_files="heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-*",
    )
    files = resolve_data_files(cfg)
    assert [len(files[s]) for s in ("train", "valid", "test")] == [3, 1, 1]
    for path in files["train"] + files["test"]:
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert path.read_bytes() == twin.read_bytes()
    assert json.loads((tmp_path / "a" / "source.json").read_text()) == info
    assert info["perplexity"] == np.exp(info["entropy_nats_per_token"])
    vocab = Vocabulary.load(tmp_path / "a" / "vocab.txt")
    assert all(
        vocab.lookup(w) != vocab.unk_id
        for p in files["train"]
        for s in read_sentences(p)
        for w in s
    )


def test_cli_writes_the_corpus(tmp_path, capsys):
    main(
        [
            "--out",
            str(tmp_path),
            "--train-shards",
            "1",
            "--sentences-per-shard",
            "50",
            "--heldout-sentences",
            "20",
        ]
    )
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["vocab_size"] == 300
    assert (
        tmp_path / "training-monolingual.tokenized.shuffled" / "news.en-00001-of-00002"
    ).is_file()
