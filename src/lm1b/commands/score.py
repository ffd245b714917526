"""`python -m lm1b.score checkpoint=PATH input=FILE [carry_state=false] [output=-]`: the
log-probability of every sentence of a text file, for rescoring n-best lists.

Output: one JSON line per non-blank input line, in input order:
`{"line": 3, "sentence": "...", "truncated": false, "logprob": -41.2, "num_tokens": 12,
"num_unk": 1, "ppl": 31.0}`,
where `logprob` is the natural log of P(w1 .. wn </S> | <S>) under the full softmax (the
sentence end included, `<S>` given), `num_tokens` the predicted ids (words or subwords, plus
the sentence end), `num_unk` how many of them are `<UNK>` (unknown words are scored as
`<UNK>`), `ppl` = exp(-logprob / num_tokens), and `line` the 1-based input line number.
Every non-blank line gets exactly one record; a line longer than the limit is scored cut to
it, with `truncated` true.

Lines are read exactly as every corpus reader reads them (`lm1b.data.text.read_lines`, with
the checkpoint's `data.max_line_tokens`): blank lines are skipped (`line` keeps the alignment
with the input) and tokens are split on single spaces. `input=-` reads standard input. The
input is streamed: `batch_size * POOL_BATCHES` sentences are held at a time.

- Default (`carry_state=false`): every sentence starts from a zero state, as rescoring needs.
  A pool of sentences is sorted by length and cut into batches of `batch_size` similar
  lengths, padded at the end and masked.
- `carry_state=true`: one stream, the state carried from sentence to sentence in file order,
  exactly as the evaluator scores one row (`num_streams=1`): each sentence contributes its
  pairs (s[j], s[j+1]), so `</S>` is never an input and the next sentence starts from `<S>`.
  Then minus the sum of `logprob` equals the evaluator's total NLL on the same file.

On CUDA, `tf32` (default true) lets fp32 matmuls use TF32 tensor cores; the totals logged at
the end name the device and the TF32 setting in force.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.errors import HydraException
from omegaconf import MISSING

from lm1b.config.checks import require
from lm1b.config.compose import compose_schema
from lm1b.config.trainer import DEVICES
from lm1b.data.encode import SentenceBuffer, encode_lines
from lm1b.data.text import ReadStats, read_lines
from lm1b.inference import TrainedModel, load_trained_model
from lm1b.models.language_model import LanguageModel
from lm1b.training.checkpoint import CheckpointError
from lm1b.training.precision import set_tf32

logger = logging.getLogger(__name__)

POOL_BATCHES = 16  # batches read ahead and sorted by length together (fresh-state mode)
STDIN = "-"


@dataclass
class ScoreConfig:
    """Options of `python -m lm1b.score` (configs/score.yaml)."""

    checkpoint: str = MISSING  # a checkpoint file, or a run / checkpoints directory
    input: str = MISSING  # a text file, one sentence per line; "-": standard input
    output: str = STDIN  # JSON lines to this file; "-": standard output
    carry_state: bool = False  # carry the LSTM state across sentences (the evaluator's way)
    batch_size: int = 64  # sentences per forward pass
    use_ema: bool = True  # score with the EMA weights when the checkpoint has them
    device: str = "auto"
    tf32: bool = True  # CUDA only: fp32 matmuls on TF32 tensor cores (no effect on a CPU)


def validate_score_config(cfg: ScoreConfig) -> ScoreConfig:
    """Check the fields; raise ConfigError naming the field and the allowed values."""
    require(cfg.device in DEVICES, "device", cfg.device, f"one of {list(DEVICES)}")
    require(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "at least 1")
    return cfg


@dataclass(frozen=True)
class Window:
    """Sentences run through the model together: ids (B, T) with their pairs' inputs and
    targets, and for each sentence its row and its span of positions in that row."""

    inputs: torch.Tensor  # (B, T) int64, padded with 0
    targets: torch.Tensor  # (B, T) int64, padded with 0
    spans: list[tuple[int, int, int]]  # per sentence: (row, first position, end position)


def numbered_lines(path: str, max_line_tokens: int | None) -> Iterator[tuple[int, str, bool]]:
    """(1-based line number, line, whether it was truncated) for every non-blank line of
    `path` ("-": stdin); a line over the length limit is cut, never dropped."""
    stats = ReadStats()
    source = "/dev/stdin" if path == STDIN else path
    truncated_so_far = 0
    for line in read_lines(source, max_line_tokens=max_line_tokens, stats=stats):
        truncated = stats.truncated_lines > truncated_so_far
        truncated_so_far = stats.truncated_lines
        # Every physical line read so far is either yielded or counted as blank.
        yield stats.sentences + stats.blank_lines, line, truncated


def _sentence(buffer: SentenceBuffer, index: int) -> np.ndarray:
    """`<S> ids </S>` of sentence `index`."""
    return buffer.ids[buffer.offsets[index] : buffer.offsets[index + 1]]


def fresh_windows(buffer: SentenceBuffer, batch_size: int) -> Iterator[tuple[list[int], Window]]:
    """Batches of up to `batch_size` sentences of similar length, each sentence in its own row
    from position 0; yields (sentence indices, window)."""
    order = np.argsort(np.diff(buffer.offsets), kind="stable")
    for first in range(0, len(order), batch_size):
        chosen = [int(i) for i in order[first : first + batch_size]]
        lengths = [len(_sentence(buffer, i)) - 1 for i in chosen]  # pairs per sentence
        inputs = torch.zeros(len(chosen), max(lengths), dtype=torch.int64)
        targets = torch.zeros_like(inputs)
        for row, (index, length) in enumerate(zip(chosen, lengths, strict=True)):
            ids = torch.from_numpy(_sentence(buffer, index).astype(np.int64))
            inputs[row, :length], targets[row, :length] = ids[:-1], ids[1:]
        spans = [(row, 0, length) for row, length in enumerate(lengths)]
        yield chosen, Window(inputs, targets, spans)


def carried_windows(buffer: SentenceBuffer, batch_size: int) -> Iterator[tuple[list[int], Window]]:
    """Up to `batch_size` consecutive sentences' pairs in one row (1, T), in file order."""
    for first in range(0, len(buffer), batch_size):
        chosen = list(range(first, min(first + batch_size, len(buffer))))
        sentences = [torch.from_numpy(_sentence(buffer, i).astype(np.int64)) for i in chosen]
        inputs = torch.cat([ids[:-1] for ids in sentences]).unsqueeze(0)  # (1, T)
        targets = torch.cat([ids[1:] for ids in sentences]).unsqueeze(0)
        ends = np.cumsum([len(ids) - 1 for ids in sentences]).tolist()
        spans = [(0, start, end) for start, end in zip([0, *ends[:-1]], ends, strict=True)]
        yield chosen, Window(inputs, targets, spans)


@torch.no_grad()
def score_window(model: LanguageModel, window: Window, state=None):
    """Per-sentence NLL (float64 list) of one window from `state` (None: zeros), and the
    final state. Every sentence's positions go through the full softmax together (the
    evaluator's chunked log-sum-exp): one pass over the (V, p) softmax weight per token chunk,
    not one per sentence."""
    device = model.softmax.weight.device
    inputs, targets = window.inputs.to(device), window.targets.to(device)
    hidden, state = model.hidden_states(inputs, state)  # (T, B, p); eval mode: no dropout
    rows = torch.cat([torch.full((end - start,), row) for row, start, end in window.spans])
    positions = torch.cat([torch.arange(start, end) for _, start, end in window.spans])
    rows, positions = rows.to(device), positions.to(device)  # (M,) each: the scored tokens
    token_nll = model.softmax.token_nll(
        hidden[positions, rows],  # (M, p)
        targets[rows, positions],  # (M,)
        token_chunk_size=model.token_chunk_size,
        vocab_chunk_size=model.vocab_chunk_size,
    )
    lengths = [end - start for _, start, end in window.spans]
    sentence_nll = [part.double().sum() for part in token_nll.split(lengths)]
    return torch.stack(sentence_nll).tolist(), state


def score_lines(
    trained: TrainedModel,
    lines: Iterator[tuple[int, str, bool]],
    *,
    carry_state: bool,
    batch_size: int,
) -> Iterator[dict]:
    """One record per (line number, line), in input order (see the module docstring)."""
    model, tokenizer = trained.model.eval(), trained.tokenizer
    make_windows = carried_windows if carry_state else fresh_windows
    state = None
    while pool := list(itertools.islice(lines, batch_size * POOL_BATCHES)):
        buffer = encode_lines([line for _, line, _ in pool], tokenizer)
        nll = [0.0] * len(pool)
        for chosen, window in make_windows(buffer, batch_size):
            values, state = score_window(model, window, state if carry_state else None)
            for index, value in zip(chosen, values, strict=True):
                nll[index] = value
        for index, (number, line, truncated) in enumerate(pool):
            targets = _sentence(buffer, index)[1:]
            yield {
                "line": number,
                "sentence": line,
                "truncated": truncated,
                "logprob": -nll[index],
                "num_tokens": len(targets),
                "num_unk": int(np.count_nonzero(targets == tokenizer.unk_id)),
                "ppl": math.exp(nll[index] / len(targets)),
            }


def _check_paths(cfg: ScoreConfig) -> None:
    """Input and output must be files (or "-"), and not the same file: opening the output
    truncates it before a line of the input is read, so the same file (by inode, so also
    through a link or another path) as both would be lost."""
    for name, value in (("input", cfg.input), ("output", cfg.output)):
        if value != STDIN and Path(value).is_dir():
            raise ValueError(f"{name}={value} is a directory: name a file, or - for standard I/O")
    if STDIN in (cfg.input, cfg.output) or not Path(cfg.output).exists():
        return
    if Path(cfg.input).exists() and os.path.samefile(cfg.input, cfg.output):
        raise ValueError(
            f"output={cfg.output} is the input file {cfg.input}: writing the scores would erase "
            "the sentences before they are read; write them to another file"
        )


def run(cfg: ScoreConfig) -> dict:
    """Score `cfg.input` into `cfg.output`; return the totals over all sentences."""
    _check_paths(cfg)
    trained = load_trained_model(cfg.checkpoint, use_ema=cfg.use_ema, device=cfg.device)
    tf32 = set_tf32(trained.device, cfg.tf32)  # None on a CPU
    lines = numbered_lines(cfg.input, trained.config.data.max_line_tokens)
    totals = {"num_sentences": 0, "num_tokens": 0, "num_unk": 0, "logprob": 0.0}
    started = time.perf_counter()  # scoring speed, the model's loading left out
    to_file = cfg.output != STDIN
    with open(cfg.output, "w", encoding="utf-8") if to_file else nullcontext(sys.stdout) as out:
        for record in score_lines(
            trained, lines, carry_state=cfg.carry_state, batch_size=cfg.batch_size
        ):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            totals["num_sentences"] += 1
            totals["num_tokens"] += record["num_tokens"]
            totals["num_unk"] += record["num_unk"]
            totals["logprob"] += record["logprob"]
    totals["perplexity"] = math.exp(-totals["logprob"] / max(totals["num_tokens"], 1))
    totals["tokens_per_sec"] = totals["num_tokens"] / max(time.perf_counter() - started, 1e-9)
    return {**totals, "device": str(trained.device), "tf32": tf32}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = compose_schema("score", ScoreConfig, sys.argv[1:] if argv is None else argv)
        totals = run(validate_score_config(cfg))
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly, as other Unix filters do. Point
        # stdout at /dev/null so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except (ValueError, HydraException, CheckpointError, FileNotFoundError) as error:
        sys.exit(f"lm1b.score: {error}")
    logger.info(
        "%d sentences, %d tokens (%d <UNK>), perplexity %.2f, %.0f tokens/s on %s (TF32 %s)",
        totals["num_sentences"],
        totals["num_tokens"],
        totals["num_unk"],
        totals["perplexity"],
        totals["tokens_per_sec"],
        totals["device"],
        "n/a" if totals["tf32"] is None else totals["tf32"],
    )


if __name__ == "__main__":
    main()
