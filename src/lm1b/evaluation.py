"""Scoring an evaluation stream with the full softmax: the validation of the trainer and the
`lm1b.evaluate` command (and everything built on it) share this one pass.

    stream = build_eval_stream(data_config, files, tokenizer)
    totals = evaluate_stream(model, stream)
    print(totals.perplexity)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from lm1b.data.batch import Batch
from lm1b.data.eval_stream import EvalStream


@dataclass(frozen=True)
class EvalTotals:
    """Sums over one evaluation pass.

    `nll` and `num_tokens` describe exactly the scored positions. `num_words`,
    `num_sentences` and `num_unk` are the stream's counts of the rows evaluated (this rank's
    share); they describe the scored text only when the pass was not cut by `max_batches`.
    """

    nll: float  # total nats
    num_tokens: int  # predicted (scored) ids: words or subwords, plus one sentence end each
    num_words: int  # corpus tokens plus sentence ends: per-word perplexity's denominator
    num_sentences: int
    num_unk: int  # scored targets equal to the tokenizer's <UNK>
    seconds: float  # wall time of the pass

    @property
    def perplexity(self) -> float:
        """exp(nll / predicted tokens): the reference convention."""
        return math.exp(self.nll / max(self.num_tokens, 1))

    @property
    def perplexity_per_word(self) -> float:
        """exp(nll / words): equals `perplexity` for a word-level tokenizer."""
        return math.exp(self.nll / max(self.num_words, 1))

    @property
    def words_per_sec(self) -> float:
        """Predicted tokens per second, counted as the trainer's train/words_per_sec."""
        return self.num_tokens / max(self.seconds, 1e-9)


def _rows(batch: Batch, rows: slice) -> Batch:
    """Rows `rows` of every tensor of `batch`."""
    mask = None if batch.mask is None else batch.mask[rows]
    return Batch(batch.inputs[rows], batch.targets[rows], mask)


@torch.no_grad()
def evaluate_stream(
    model: torch.nn.Module,
    stream: EvalStream,
    *,
    rows_per_step: int | None = None,
    max_batches: int | None = None,
    progress_bar: bool = False,
) -> EvalTotals:
    """Full-softmax NLL of every masked position of `stream`, on the model's device.

    Each row of the stream is one contiguous run of sentences whose LSTM state is carried from
    window to window (and sentence to sentence) from a zero start, so the result depends on
    the stream's rows (its batch size) but not on `rows_per_step`, the number of rows run
    through the model at once (null: all of them), beyond float rounding. At most
    `max_batches` windows of each row are scored (null: all). The model is put in eval mode
    and returned to its previous mode; swap in EMA weights around the call if wanted.
    """
    device = next(model.parameters()).device
    counts = stream.rank_counts
    num_rows = next(iter(stream)).inputs.shape[0]
    step = rows_per_step or num_rows
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    bar = tqdm(total=counts.num_tokens, disable=not progress_bar, unit="tok", unit_scale=True)
    try:
        with bar:
            sums = [
                _score_rows(model, stream, slice(first, first + step), max_batches, device, bar)
                for first in range(0, num_rows, step)
            ]
        nll = torch.stack([s[0] for s in sums]).sum().item()  # one device sync for the pass
        num_tokens = int(torch.stack([s[1] for s in sums]).sum().item())
    finally:
        model.train(was_training)
    return EvalTotals(
        nll=nll,
        num_tokens=num_tokens,
        num_words=counts.num_words,
        num_sentences=counts.num_sentences,
        num_unk=counts.num_unk,
        seconds=time.perf_counter() - started,
    )


def _score_rows(
    model: torch.nn.Module,
    stream: EvalStream,
    rows: slice,
    max_batches: int | None,
    device: torch.device,
    bar: tqdm,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL (float64) and scored-token count (int64) of rows `rows`, as device scalars,
    the state of every row carried from window to window."""
    nll = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    state = None  # (h (L, B, p), c (L, B, n)); None: zeros for the first window
    for index, batch in enumerate(stream):
        window = _rows(batch, rows)  # (B, T) each, B = the rows of this group
        # Rows are padded at their end only: the first window with nothing to score ends them.
        if (max_batches is not None and index >= max_batches) or window.num_tokens == 0:
            break
        bar.update(window.num_tokens)  # counted on the host: no device sync per window
        window = window.to(device, non_blocking=True)
        out = model(window.inputs, window.targets, state, mask=window.mask)
        state = out.state
        nll += out.nll_sum
        count += out.num_tokens
    return nll, count
