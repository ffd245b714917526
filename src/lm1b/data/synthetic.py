"""A synthetic corpus in LM1B layout, sampled from a known Markov source (`lm1b.data.markov`).

    python -m lm1b.data.synthetic [--out data/synthetic] [--vocab-size 300] [--seed 0] ...

writes, under the output directory (matching configs/data/synthetic.yaml):

    training-monolingual.tokenized.shuffled/news.en-0000{1..N}-of-0000{N+1}
    heldout-monolingual.tokenized.shuffled/news.en.heldout-0000{0..H-1}-of-0000H
    vocab.txt      every word of the training shards, "word count" lines (lm1b.vocab)
    source.json    the source's exact entropy (nats per predicted token: words + sentence
                   ends, the first word predicted from <S>) and perplexity, plus the source's
                   own perplexity on the test shard (heldout 00000): the floor a model can reach

A model trained on the shards should approach `perplexity`; everything is a pure function of
the arguments (seed included).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from lm1b.data.markov import MarkovSource, make_source
from lm1b.vocab import build_vocabulary

logger = logging.getLogger(__name__)

TRAIN_DIR = "training-monolingual.tokenized.shuffled"
HELDOUT_DIR = "heldout-monolingual.tokenized.shuffled"


def word(index: int) -> str:
    """The spelling of word id `index` (1..V)."""
    return f"w{index - 1}"


def _write_shard(path: Path, sentences: list[np.ndarray]) -> None:
    """One sentence per line, words separated by single spaces, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8", newline="\n") as handle:
        for sentence in sentences:
            handle.write(" ".join(word(i) for i in sentence.tolist()) + "\n")
    os.replace(temporary, path)


def _shard_sentences(source: MarkovSource, count: int, seed: int, split: int, shard: int):
    return source.sample(count, np.random.default_rng([seed, 1, split, shard]))


def generate_corpus(
    out_dir: str | Path,
    *,
    vocab_size: int = 300,
    num_successors: int = 6,
    num_train_shards: int = 10,
    sentences_per_shard: int = 2000,
    num_heldout_shards: int = 2,
    heldout_sentences_per_shard: int = 1000,
    seed: int = 0,
) -> dict:
    """Write the corpus, its vocabulary and source.json under `out_dir`; return source.json's
    content."""
    out_dir = Path(out_dir)
    source = make_source(vocab_size, num_successors, seed)
    entropy, tokens_per_sentence = source.entropy()
    train_paths = []
    for shard in range(1, num_train_shards + 1):
        path = out_dir / TRAIN_DIR / f"news.en-{shard:05d}-of-{num_train_shards + 1:05d}"
        _write_shard(path, _shard_sentences(source, sentences_per_shard, seed, 0, shard))
        train_paths.append(path)
    test_nll = None
    for shard in range(num_heldout_shards):
        sentences = _shard_sentences(source, heldout_sentences_per_shard, seed, 1, shard)
        name = f"news.en.heldout-{shard:05d}-of-{num_heldout_shards:05d}"
        _write_shard(out_dir / HELDOUT_DIR / name, sentences)
        if shard == 0:
            test_nll = source.nll(sentences)
    build_vocabulary(train_paths, min_count=1, num_workers=1).save(out_dir / "vocab.txt")
    info = {
        "source": "sparse first-order Markov chain (lm1b.data.markov)",
        "vocab_size": vocab_size,
        "num_successors": num_successors,
        "seed": seed,
        "entropy_nats_per_token": entropy,
        "perplexity": math.exp(entropy),
        "expected_tokens_per_sentence": tokens_per_sentence,
        "num_train_shards": num_train_shards,
        "sentences_per_shard": sentences_per_shard,
        "num_heldout_shards": num_heldout_shards,
        "heldout_sentences_per_shard": heldout_sentences_per_shard,
    }
    if test_nll is not None:
        info["test_shard_source_perplexity"] = math.exp(test_nll[0] / test_nll[1])
        info["test_shard_tokens"] = test_nll[1]
    (out_dir / "source.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    logger.info("synthetic corpus in %s: true perplexity %.3f", out_dir, info["perplexity"])
    return info


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m lm1b.data.synthetic", description="Write a synthetic LM1B-layout corpus."
    )
    parser.add_argument("--out", default="data/synthetic", help="output directory")
    parser.add_argument("--vocab-size", type=int, default=300)
    parser.add_argument("--successors", type=int, default=6, help="successors per word")
    parser.add_argument("--train-shards", type=int, default=10)
    parser.add_argument("--sentences-per-shard", type=int, default=2000)
    parser.add_argument("--heldout-shards", type=int, default=2)
    parser.add_argument("--heldout-sentences", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    info = generate_corpus(
        args.out,
        vocab_size=args.vocab_size,
        num_successors=args.successors,
        num_train_shards=args.train_shards,
        sentences_per_shard=args.sentences_per_shard,
        num_heldout_shards=args.heldout_shards,
        heldout_sentences_per_shard=args.heldout_sentences,
        seed=args.seed,
    )
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
