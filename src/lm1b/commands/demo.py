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
from datetime import datetime
from pathlib import Path

from lm1b.config import compose_config
from lm1b.data.synthetic import generate_corpus
from lm1b.reference import SAMPLE_KNESER_NEY_PERPLEXITY

FULL_ROOT = Path("data/lm1b/1-billion-word-language-modeling-benchmark-r13output")
SYNTHETIC_ROOT = Path("data/synthetic")


def choose_data() -> tuple[str, list[str]]:
    """A description of the corpus and the Hydra overrides that select it."""
    if (FULL_ROOT / "training-monolingual.tokenized.shuffled").is_dir():
        return "the full LM1B corpus (2 training shards)", [
            "data=lm1b",
            "data.train_files=training-monolingual.tokenized.shuffled/news.en-0000[12]-of-00100",
            "data.vocab_file=null",
            "data.vocab_max_size=32768",
        ]
    sample = os.environ.get("LM1B_SAMPLE_DIR")
    if sample and (Path(sample) / "heldout-monolingual.tokenized.shuffled").is_dir():
        return f"the real LM1B sample in {sample}", ["data=sample"]
    if not (SYNTHETIC_ROOT / "source.json").is_file():
        generate_corpus(SYNTHETIC_ROOT)
    # Its vocabulary has a few hundred words: fewer candidates than size=cpu's 512.
    return f"the synthetic corpus in {SYNTHETIC_ROOT}", ["data=synthetic", "model.num_sampled=64"]


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
    description, data = choose_data()
    overrides = ["experiment=demo", *data, *args.overrides]
    test_files = compose_config(overrides).data.test_files
    print(f"demo: training on {description}", flush=True)
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
    _report(out, description, result)
    return result


def _report(out: Path, description: str, result: dict) -> None:
    print(
        f"\ndemo: test perplexity {result['perplexity']:.2f} on {result['num_tokens']:,} tokens ({description})"
    )
    if "sample" in description:
        kneser_ney = SAMPLE_KNESER_NEY_PERPLEXITY
        verdict = "better than" if result["perplexity"] < kneser_ney else "NOT better than"
        print(
            f"demo: a 5-gram Kneser-Ney model scores {kneser_ney} on the same text: this model "
            f"is {verdict} Kneser-Ney (lower is better)"
        )
    truth = SYNTHETIC_ROOT / "source.json"
    if "synthetic" in description and truth.is_file():
        print(
            f"demo: the source's true perplexity is {json.loads(truth.read_text())['perplexity']:.2f}"
        )
    print(f"demo: run directory   {out / 'train'} (config, log, metrics.jsonl, checkpoints)")
    print(f"demo: TensorBoard     make tensorboard LOGDIR={out / 'train' / 'tensorboard'}")
    print(f"demo: results         {out / 'eval' / 'eval.json'}")


if __name__ == "__main__":
    main()
