"""Paper size on a CPU: does the full-scale path run, fit and resume exactly?

For BIGLSTM and G-LSTM k=8 at the paper's size (V 793,471, n 8,192, p 1,024, S 8,192) with the
real recipe (row-sparse tables and their Adagrad, EMA, clipping), on a batch small enough for a
CPU (2 sequences of 20 tokens):

1. train 3 steps with a checkpoint at step 2 (and the final one at step 3), in one process;
2. delete the step-3 checkpoint and resume in a new process: step 3 again, whose loss must be
   bit-identical to the first run's;
3. evaluate a few thousand tokens with the chunked full softmax, and score the same file.

Each process's peak resident memory (wait4's ru_maxrss) is recorded, with the checkpoint's
size and save time, the step time, the evaluation's and scoring's tokens/s, and the memory
model's prediction (lm1b.training.memory). The vocabulary is the real `1b_word_vocab.txt` when
`data/lm1b` has it, else a synthetic Zipf vocabulary of the same size; the text is sampled
from that vocabulary's Zipf distribution. Needs about 20 GB of memory and 30 GB of disk.

    python scripts/paper_size_check.py [--out DIR] [--variants biglstm glstm_k8] [--eval-sentences N]

Writes report.json and report.md under --out (default outputs/paper_size_check/<UTC time>).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from measured_run import ROOT, run

PAPER_VOCAB = 793_471
REAL_VOCAB = ROOT / "data" / "lm1b" / "1b_word_vocab.txt"
ROWS, STEPS_PER_ROW = 2, 20
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def synthetic_vocabulary(path: Path, size: int) -> None:
    """`size` entries in the vocabulary file format (word count, decreasing counts, ties in
    code-point order), Zipf counts, the three specials included."""
    counts = np.maximum((1e9 / np.arange(1, size - 2)).astype(np.int64), 1)
    words = [f"w{i}" for i in range(size - 3)]
    entries = list(zip(words, counts.tolist(), strict=True))
    entries += [("<S>", 30_000_000), ("</S>", 30_000_000), ("<UNK>", 0)]
    entries.sort(key=lambda entry: (-entry[1], entry[0]))
    path.write_text("".join(f"{word} {count}\n" for word, count in entries))


def write_text(vocab: Path, path: Path, sentences: int, seed: int) -> int:
    """Sentences of 10-40 words drawn from the vocabulary's counts; returns the word count."""
    words, counts = [], []
    for line in vocab.read_text().splitlines():
        word, count = line.rsplit(" ", 1)
        if word not in ("<S>", "</S>", "<UNK>"):
            words.append(word)
            counts.append(int(count))
    rng = np.random.default_rng(seed)
    probs = np.asarray(counts, dtype=np.float64) / sum(counts)
    lengths = rng.integers(10, 41, size=sentences)
    ids = rng.choice(len(words), size=int(lengths.sum()), p=probs)
    lines, start = [], 0
    for length in lengths:
        lines.append(" ".join(words[i] for i in ids[start : start + length]))
        start += length
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return int(lengths.sum())


def log_times(log: Path, pattern: str) -> list[float]:
    """Epoch seconds of the log lines matching `pattern`."""
    found = []
    for line in log.read_text().splitlines():
        stamp = LOG_TIME.match(line)
        if stamp and re.search(pattern, line):
            moment = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
            found.append(moment.timestamp())
    return found


def losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return {r["step"]: r["sampled_loss"] for r in records if "sampled_loss" in r}


def predicted_bytes(variant: str, overrides: list[str], vocab_size: int) -> dict:
    from lm1b.config import compose_config
    from lm1b.training.memory import HOST_BYTES_PER_VOCAB_ENTRY, estimate_training_memory

    cfg = compose_config([f"experiment={variant}", *overrides])
    estimate = estimate_training_memory(
        cfg.model, cfg.optim, vocab_size=vocab_size, rows=ROWS, num_steps=STEPS_PER_ROW
    )
    host = vocab_size * HOST_BYTES_PER_VOCAB_ENTRY
    return {
        "weights": estimate.weights,
        "gradients": estimate.gradients,
        "optimizer": estimate.optimizer,
        "ema": estimate.ema,
        "activations": estimate.activations,
        "vocabulary_host": host,
        "total": estimate.total + host,
    }


def check_variant(variant: str, data: Path, vocab: Path, out: Path, args) -> dict:
    python = sys.executable
    run_dir = out / "runs" / variant
    size = [
        f"size={args.size}",
        f"data.root={data}",
        "data.train_files=train/*",
        "data.valid_files=heldout/*",
        "data.test_files=heldout/*",
        f"data.vocab_file={vocab}",
        f"data.batch_size={ROWS}",
        f"data.num_steps={STEPS_PER_ROW}",
        "optim=adagrad",
    ]
    train = [
        python, "-m", "lm1b.train", f"experiment={variant}", *size,
        "trainer.max_steps=3", "trainer.checkpoint_every=2", "trainer.keep_last=2",
        "trainer.val_every=0", "trainer.keep_best=false", "trainer.log_every=1",
        "logger.progress_bar=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    first = run(train, out / f"{variant}-train.log")
    first_losses = losses(run_dir)
    step2, step3 = (run_dir / "checkpoints" / f"step-00000000{s}.pt" for s in (2, 3))
    checkpoint_bytes = step2.stat().st_size
    train_log = run_dir / "train.log"
    saves = re.findall(r"saved checkpoint .* \(([\d.]+) GB in ([\d.]+) s\)", train_log.read_text())
    step_times = log_times(train_log, r"- step \d+ \|")
    step3.unlink()  # resume from step 2 in a new process
    resumed = run(train, out / f"{variant}-resume.log")
    started = log_times(train_log, r"resuming from")[-1]
    first_step = [t for t in log_times(train_log, r"- step 3 \|") if t > started][0]

    evaluate = [
        python, "-m", "lm1b.evaluate", f"checkpoint={run_dir}", "data.test_files=heldout/*",
        f"data.root={data}", "num_streams=8", f"hydra.run.dir={out / 'eval' / variant}",
    ]  # fmt: skip
    evaluated = run(evaluate, out / f"{variant}-evaluate.log")
    report = json.loads((out / "eval" / variant / "eval.json").read_text())
    scores = out / f"{variant}-scores.jsonl"
    score = [
        python, "-m", "lm1b.score", f"checkpoint={run_dir}", f"input={data}/heldout/text",
        f"output={scores}", "batch_size=64",
    ]  # fmt: skip
    scored = run(score, out / f"{variant}-score.log")
    score_line = (out / f"{variant}-score.log").read_text().strip().splitlines()[-1]
    resumed_losses = losses(run_dir)
    shutil.rmtree(run_dir)  # 28 GB of checkpoints
    return {
        "variant": variant,
        "predicted_bytes": predicted_bytes(variant, size, args.vocab_size),
        # Steps 1 and 2 follow each other; the step-2 checkpoint comes between steps 2 and 3.
        "train": {**first, "step_seconds": step_times[1] - step_times[0]},
        "checkpoint": {
            "bytes": checkpoint_bytes,
            "save_seconds": [float(seconds) for _, seconds in saves],
        },
        "resume": {
            **resumed,
            "seconds_to_first_step": first_step - started,
            "step3_loss": [first_losses[3], resumed_losses[3]],
            "bit_identical": first_losses[3] == resumed_losses[3],
        },
        "evaluate": {
            **evaluated,
            "tokens": report["num_tokens"],
            "tokens_per_sec": report["words_per_sec"],
            "perplexity": report["perplexity"],
        },
        "score": {
            **scored,
            "tokens_per_sec": float(re.search(r"([\d.]+) tokens/s", score_line).group(1)),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "paper_size_check" / stamp)
    parser.add_argument("--variants", nargs="+", default=["biglstm", "glstm_k8"])
    parser.add_argument("--eval-sentences", type=int, default=100)
    # A smaller run of the same path (a smoke test of this script): e.g. --size tiny
    # --vocab-size 5000.
    parser.add_argument("--size", default="paper")
    parser.add_argument("--vocab-size", type=int, default=PAPER_VOCAB)
    args = parser.parse_args()
    out = args.out.resolve()
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    vocab = data / "vocab.txt"
    real = REAL_VOCAB.is_file() and args.vocab_size == PAPER_VOCAB
    if real:
        shutil.copyfile(REAL_VOCAB, vocab)
    else:
        synthetic_vocabulary(vocab, args.vocab_size)
    write_text(vocab, data / "train" / "text", sentences=2000, seed=1)
    eval_words = write_text(vocab, data / "heldout" / "text", args.eval_sentences, seed=2)
    results = [check_variant(v, data, vocab, out, args) for v in args.variants]
    report = {
        "date": stamp,
        "machine": os.uname().nodename,
        "cpus": os.cpu_count(),
        "size": args.size,
        "vocab_size": args.vocab_size,
        "vocabulary": "real" if real else "synthetic Zipf",
        "eval_words": eval_words,
        "variants": results,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
