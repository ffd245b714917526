"""`make demo` / `python -m lm1b.demo`: the whole pipeline in a few CPU minutes.

Trains the `demo` experiment (a small G-LSTM) on the best corpus available here, evaluates it
with the full softmax on that corpus's test text, and prints where the run directory, the
TensorBoard events and the results are. The corpus, in order of preference:

1. the full LM1B corpus under data/lm1b (`make data`), on its first two training shards with a
   32,768-word vocabulary built for the run, tested on the standard test shard;
2. the real LM1B sample named by LM1B_SAMPLE_DIR (heldout shard 10 to train, 11 to test);
3. the synthetic Markov corpus (written to data/synthetic if missing), whose true perplexity
   the result can be compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path

from lm1b.config import compose_config
from lm1b.data.synthetic import generate_corpus
from lm1b.reference import SAMPLE_KNESER_NEY_PERPLEXITY

FULL_ROOT = Path("data/lm1b/1-billion-word-language-modeling-benchmark-r13output")
SYNTHETIC_ROOT = Path("data/synthetic")


class Corpus(Enum):
    """The corpora the demo trains on; each value names its data config (configs/data/)."""

    FULL = "lm1b"
    SAMPLE = "sample"
    SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class DemoData:
    """The corpus the demo trains on, where it is, and the overrides beyond `data=<config>`."""

    corpus: Corpus
    location: Path
    extra_overrides: tuple[str, ...] = ()

    @property
    def overrides(self) -> list[str]:
        """The Hydra overrides that select this corpus."""
        return [f"data={self.corpus.value}", *self.extra_overrides]

    @property
    def description(self) -> str:
        """The corpus in words, for the demo's messages."""
        if self.corpus is Corpus.FULL:
            return "the full LM1B corpus (2 training shards)"
        if self.corpus is Corpus.SAMPLE:
            return f"the real LM1B sample in {self.location}"
        return f"the synthetic corpus in {self.location}"


def choose_data() -> DemoData:
    """The best corpus available here (the module docstring's order)."""
    if (FULL_ROOT / "training-monolingual.tokenized.shuffled").is_dir():
        train_files = "training-monolingual.tokenized.shuffled/news.en-0000[12]-of-00100"
        return DemoData(
            Corpus.FULL,
            FULL_ROOT,
            (
                f"data.train_files={train_files}",
                "data.vocab_file=null",
                "data.vocab_max_size=32768",
            ),
        )
    sample = os.environ.get("LM1B_SAMPLE_DIR")
    if sample and (Path(sample) / "heldout-monolingual.tokenized.shuffled").is_dir():
        return DemoData(Corpus.SAMPLE, Path(sample))
    if not (SYNTHETIC_ROOT / "source.json").is_file():
        generate_corpus(SYNTHETIC_ROOT)
    # Its vocabulary has a few hundred words: fewer candidates than size=cpu's 512.
    return DemoData(Corpus.SYNTHETIC, SYNTHETIC_ROOT, ("model.num_sampled=64",))


def _run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m lm1b.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="run directory (default: outputs/demo/<time>)"
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for training")
    args = parser.parse_args(argv)
    out = args.out or Path("outputs/demo") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    data = choose_data()
    overrides = ["experiment=demo", *data.overrides, *args.overrides]
    test_files = compose_config(overrides).data.test_files
    print(f"demo: training on {data.description}", flush=True)
    _run([sys.executable, "-m", "lm1b.train", *overrides, f"hydra.run.dir={out / 'train'}"])
    _run(
        [
            sys.executable,
            "-m",
            "lm1b.evaluate",
            f"checkpoint={out / 'train'}",
            f"data.test_files={test_files}",
            f"hydra.run.dir={out / 'eval'}",
        ]
    )
    result = json.loads((out / "eval" / "eval.json").read_text(encoding="utf-8"))
    _report(out, data, result)
    return result


def _report(out: Path, data: DemoData, result: dict) -> None:
    print(
        f"\ndemo: test perplexity {result['perplexity']:.2f} on {result['num_tokens']:,} tokens "
        f"({data.description})"
    )
    if data.corpus is Corpus.SAMPLE:
        kneser_ney = SAMPLE_KNESER_NEY_PERPLEXITY
        verdict = "better than" if result["perplexity"] < kneser_ney else "NOT better than"
        print(
            f"demo: a 5-gram Kneser-Ney model scores {kneser_ney} on the same text: this model "
            f"is {verdict} Kneser-Ney (lower is better)"
        )
    truth = data.location / "source.json"
    if data.corpus is Corpus.SYNTHETIC and truth.is_file():
        print(
            f"demo: the source's true perplexity is {json.loads(truth.read_text())['perplexity']:.2f}"
        )
    print(f"demo: run directory   {out / 'train'} (config, log, metrics.jsonl, checkpoints)")
    print(f"demo: TensorBoard     make tensorboard LOGDIR={out / 'train' / 'tensorboard'}")
    print(f"demo: results         {out / 'eval' / 'eval.json'}")


if __name__ == "__main__":
    main()
