"""Loader benchmark: tokens per second for read + tokenize + batch in one process.

    python -m lm1b.loader_bench data=sample [--seconds 5] [hydra overrides ...]

Composes the training config with the overrides, builds the tokenizer (and the vocabulary file
when it is missing), then pulls training batches from a `TrainLoader` with no loader workers
for about `--seconds` after one warm-up batch. Every epoch re-reads and re-tokenizes the
shards, so with a small corpus the figure includes all three stages. The last line printed is a
JSON object with `tokens_per_sec`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from lm1b.config import compose_config
from lm1b.data.build import build_train_loader, resolve_data_files
from lm1b.tokenizer import build_tokenizer


def measure(loader, seconds: float) -> dict:
    """Pull batches for about `seconds` after a warm-up batch; tokens are B x T per batch."""
    batches = iter(loader)
    next(batches)
    tokens, count = 0, 0
    start, start_cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        tokens += next(batches).num_tokens
        count += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {
        "tokens": tokens,
        "batches": count,
        "seconds": round(elapsed, 3),
        "tokens_per_sec": round(tokens / elapsed),
        # CPU time of this process: on a shared machine, wall time also counts other jobs.
        "tokens_per_cpu_sec": round(tokens / cpu),
        "epoch": loader.epoch,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m lm1b.loader_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time (default 5)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=sample")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = compose_config(args.overrides)
    files = resolve_data_files(cfg.data)
    # A null data.vocab_file / data.spm_model means a file under data/cache (built when missing).
    tokenizer = build_tokenizer(cfg.data, files["train"], Path("data/cache"))
    cfg.data.num_workers = 0  # one process: the figure is per loader process
    loader = build_train_loader(cfg.data, files["train"], tokenizer, seed=cfg.seed)
    result = measure(loader, args.seconds)
    result.update(
        batch_size=cfg.data.batch_size,
        num_steps=cfg.data.num_steps,
        tokenizer=cfg.data.tokenizer,
        num_files=len(files["train"]),
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
