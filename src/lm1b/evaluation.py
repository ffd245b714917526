"""Scoring an evaluation stream with the full softmax: the validation of the trainer and the
`lm1b.evaluate` command (and everything built on it) share this one pass.

    stream = build_eval_stream(data_config, files, tokenizer)
    totals = evaluate_stream(model, stream)
    print(totals.perplexity)

The LSTM runs window by window, every row's state carried; the hidden states of the scored
positions (the padding at the rows' ends left out) wait until `tokens_per_pass` of them are
collected, and then go through the full softmax together. Each pass over the vocabulary reads
the whole (V, p) softmax weight (3.25 GB at V = 793,471), so it is made once per
`tokens_per_pass` tokens, not once per window.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from lm1b.config.evaluate import DEFAULT_TOKENS_PER_PASS
from lm1b.data.batch import Batch
from lm1b.data.eval_stream import EvalStream
from lm1b.models.language_model import LanguageModel


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


@torch.no_grad()
def evaluate_stream(
    model: LanguageModel,
    stream: EvalStream,
    *,
    rows_per_step: int | None = None,
    tokens_per_pass: int = DEFAULT_TOKENS_PER_PASS,
    max_batches: int | None = None,
    progress_bar: bool = False,
) -> EvalTotals:
    """Full-softmax NLL of every masked position of `stream`, on the model's device.

    Each row of the stream is one contiguous run of sentences whose LSTM state is carried from
    window to window (and sentence to sentence) from a zero start, so the result depends on
    the stream's rows (its batch size) but not, beyond float rounding, on `rows_per_step`, the
    number of rows run through the LSTM at once (null: all of them), nor on `tokens_per_pass`,
    the number of tokens scored per pass over the vocabulary. At most `max_batches` windows
    of each row are scored (null: all). The model is put in eval mode and returned to its
    previous mode; swap in EMA weights around the call if wanted.
    """
    counts = stream.rank_counts
    num_rows = next(iter(stream)).inputs.shape[0]
    step = rows_per_step or num_rows
    passes = SoftmaxPasses(model, tokens_per_pass)
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    bar = tqdm(total=counts.num_tokens, disable=not progress_bar, unit="tok", unit_scale=True)
    try:
        with bar:
            for first in range(0, num_rows, step):
                _run_rows(model, stream, slice(first, first + step), max_batches, passes, bar)
            nll = passes.total_nll().item()  # one device sync for the pass
    finally:
        model.train(was_training)
    return EvalTotals(
        nll=nll,
        num_tokens=passes.num_tokens,
        num_words=counts.num_words,
        num_sentences=counts.num_sentences,
        num_unk=counts.num_unk,
        seconds=time.perf_counter() - started,
    )


def _run_rows(
    model: LanguageModel,
    stream: EvalStream,
    rows: slice,
    max_batches: int | None,
    passes: SoftmaxPasses,
    bar: tqdm,
) -> None:
    """Run the LSTM over rows `rows`, the state of every row carried from window to window,
    and hand the hidden states of every scored position to `passes`."""
    device = model.softmax.weight.device
    state = None  # (h (L, B, p), c (L, B, n)); None: zeros for the first window
    for index, batch in enumerate(stream):
        window = _rows(batch, rows)  # (B, T) each, B = the rows of this group
        # Rows are padded at their end only: the first window with nothing to score ends them.
        if (max_batches is not None and index >= max_batches) or window.num_tokens == 0:
            break
        bar.update(window.num_tokens)  # counted on the host: no device sync per window
        positions = _scored_positions(window).to(device, non_blocking=True)  # (n,)
        window = window.to(device, non_blocking=True)
        outputs, state = model.hidden_states(window.inputs, state)  # (T, B, p)
        hidden = outputs.reshape(-1, outputs.shape[-1])  # (T * B, p)
        targets = window.targets.t().reshape(-1)  # (T * B,), the hidden states' order
        passes.add(hidden.index_select(0, positions), targets.index_select(0, positions))


def _rows(batch: Batch, rows: slice) -> Batch:
    """Rows `rows` of every tensor of `batch`."""
    mask = None if batch.mask is None else batch.mask[rows]
    return Batch(batch.inputs[rows], batch.targets[rows], mask)


def _scored_positions(window: Batch) -> Tensor:
    """The scored (masked-in) positions of an evaluation window on the host, as indices into
    its time-major flattening (T * B): (n,) int64. Found on the host, so that selecting them
    on the device waits for nothing."""
    return window.mask.t().reshape(-1).nonzero().squeeze(1)


class SoftmaxPasses:
    """Full-softmax NLL of hidden states handed in window by window, `tokens_per_pass` tokens
    per pass over the vocabulary.

    Every pass but the last covers exactly `tokens_per_pass` tokens, whatever the windows'
    sizes; its logit blocks are (tokens_per_pass, model.vocab_chunk_size) float32.
    """

    def __init__(self, model: LanguageModel, tokens_per_pass: int) -> None:
        self.model = model
        self.tokens_per_pass = tokens_per_pass
        self.num_tokens = 0  # tokens handed in, counted on the host: no device sync
        self._nll = torch.zeros((), dtype=torch.float64, device=model.softmax.weight.device)
        self._hidden: list[Tensor] = []  # (n, p) each, waiting for a pass
        self._targets: list[Tensor] = []  # (n,) each
        self._waiting = 0  # tokens in the two lists

    def add(self, hidden: Tensor, targets: Tensor) -> None:
        """Queue hidden states (n, p) with their targets (n,); run every pass now full."""
        self._hidden.append(hidden)
        self._targets.append(targets)
        self._waiting += targets.numel()
        self.num_tokens += targets.numel()
        if self._waiting >= self.tokens_per_pass:
            self._run(self._waiting - self._waiting % self.tokens_per_pass)

    def total_nll(self) -> Tensor:
        """Summed NLL (float64 device scalar) of every token handed in, the last pass run."""
        if self._waiting:
            self._run(self._waiting)
        return self._nll

    def _run(self, count: int) -> None:
        """Score the first `count` waiting tokens; the rest waits for the next pass."""
        hidden = torch.cat(self._hidden)  # (waiting, p)
        targets = torch.cat(self._targets)  # (waiting,)
        token_nll = self.model.softmax.token_nll(
            hidden[:count],
            targets[:count],
            token_chunk_size=self.tokens_per_pass,
            vocab_chunk_size=self.model.vocab_chunk_size,
        )  # (count,)
        self._nll += token_nll.double().sum()
        self._hidden, self._targets = [hidden[count:]], [targets[count:]]
        self._waiting -= count
