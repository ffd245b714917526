"""The vocabulary builder and the training loader at the scale of LM1B's training set.

1. Generate (not committed) a corpus shaped like LM1B's training set: `--shards` shards
   (99) of about `--words-per-shard` words (8 million) in sentences of 10-40 words, drawn from
   a Zipf distribution (exponent 1.1) over `--types` word types (2.4 million).
2. Build the vocabulary with both cores (`lm1b.vocab.build_vocabulary`, min count 3 as for
   the standard 793K vocabulary): wall time and peak memory (of its own process).
3. Stream the training loader of rank 0 of 8 (128 rows of 20 tokens, the shards shuffled and
   partitioned over the ranks) for `--batches` batches, over all the shards and over the first
   tenth of them: tokens/s and peak memory, to show the memory does not grow with the number
   of shards.

    python scripts/corpus_scale_check.py [--out DIR] [--shards 99] [--words-per-shard 8000000]

Writes report.json under --out (default outputs/corpus_scale_check/<UTC time>).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from measured_run import ROOT, run


def _word(index: int) -> str:
    return f"t{np.base_repr(index, 36).lower()}"


def generate(out: Path, shards: int, words_per_shard: int, types: int, seed: int) -> float:
    """Write the shards; returns seconds taken."""
    started = time.perf_counter()
    words = np.array([_word(i) for i in range(types)], dtype=object)
    ranks = np.arange(1, types + 1, dtype=np.float64)
    cumulative = np.cumsum(ranks**-1.1)
    cumulative /= cumulative[-1]
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        ids = np.searchsorted(cumulative, rng.random(words_per_shard))
        lengths = rng.integers(10, 41, size=words_per_shard // 10)
        ends = np.cumsum(lengths)
        ends = ends[ends < words_per_shard]
        lines = [" ".join(part) for part in np.split(words[ids], ends)]
        path = out / f"news.en-{shard + 1:05d}-of-{shards:05d}"
        path.write_text("\n".join(lines) + "\n")
    return time.perf_counter() - started


def measured(code: str, log: Path, *args: str) -> dict:
    """Run `code` in a fresh interpreter (output in `log`); the JSON line it prints last, its
    wall time and its peak memory."""
    result = run([sys.executable, "-c", code, *args], log)
    printed = [line for line in log.read_text().splitlines() if line.startswith("{")]
    return {**json.loads(printed[-1]), **result}


BUILD = """
import json, sys
from pathlib import Path
from lm1b.vocab import build_vocabulary
files = sorted(Path(sys.argv[1]).glob("news.en-*"))
vocab = build_vocabulary(files, min_count=3, num_workers=2)
vocab.save(Path(sys.argv[2]))
print(json.dumps({"entries": len(vocab), "files": len(files)}))
"""

STREAM = """
import json, sys, time
from pathlib import Path
from lm1b.data.train_loader import TrainLoader
from lm1b.tokenizer import WordTokenizer
from lm1b.vocab import Vocabulary
files = sorted(Path(sys.argv[1]).glob("news.en-*"))[: int(sys.argv[3])]
loader = TrainLoader(files, WordTokenizer(Vocabulary.load(Path(sys.argv[2]))), batch_size=128,
                     num_steps=20, seed=1, rank=0, world_size=8)
batches, count = iter(loader), int(sys.argv[4])
next(batches)
started = time.perf_counter()
for _ in range(count):
    next(batches)
seconds = time.perf_counter() - started
print(json.dumps({"files": len(files), "batches": count, "tokens_per_sec": count * 128 * 20 / seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "corpus_scale_check" / stamp)
    parser.add_argument("--shards", type=int, default=99)
    parser.add_argument("--words-per-shard", type=int, default=8_000_000)
    parser.add_argument("--types", type=int, default=2_400_000)
    parser.add_argument("--batches", type=int, default=20_000)
    args = parser.parse_args()
    out = args.out.resolve()
    corpus, vocab = out / "corpus", out / "vocab.txt"
    report: dict = {"date": stamp, "machine": os.uname().nodename, "cpus": os.cpu_count()}
    report["generate_seconds"] = generate(
        corpus, args.shards, args.words_per_shard, args.types, seed=1
    )
    report["corpus_bytes"] = sum(p.stat().st_size for p in corpus.iterdir())
    report["vocabulary"] = measured(BUILD, out / "vocabulary.log", str(corpus), str(vocab))
    tenth = max(args.shards // 10, 1)
    report["loader"] = [
        measured(
            STREAM, out / f"loader-{n}.log", str(corpus), str(vocab), str(n), str(args.batches)
        )
        for n in (tenth, args.shards)
    ]
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
