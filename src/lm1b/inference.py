"""Using a trained model: load a checkpoint for inference and score an evaluation stream.

Shared by `lm1b.evaluate` and the commands built on it (scoring, generation, compression).
A checkpoint holds everything needed: the resolved training config, the tokenizer, the weights
(without DDP prefixes, whatever the number of ranks that wrote it) and the EMA of the LSTM
weights, so nothing outside the file (vocabulary, configs) has to be found again.

    trained = load_trained_model("outputs/train/tiny/<run id>", device="auto")
    stream = build_eval_stream(trained.config.data, files, trained.tokenizer)
    totals = evaluate_stream(trained.model, stream)
    print(totals.perplexity)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from lm1b.config import TrainConfig
from lm1b.config.checks import require
from lm1b.data.batch import Batch
from lm1b.data.eval_stream import EvalStream
from lm1b.models.language_model import LanguageModel, build_language_model
from lm1b.tokenizer import Tokenizer, tokenizer_from_state
from lm1b.training.checkpoint import (
    BEST_NAME,
    CheckpointError,
    find_checkpoint,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedModel:
    """A model ready for inference, with what it was trained with."""

    model: LanguageModel  # in eval mode, on its device
    tokenizer: Tokenizer
    config: TrainConfig  # the training run's config, as saved in the checkpoint
    step: int  # training steps completed when the checkpoint was written
    checkpoint: Path  # the file loaded (a directory resolved to best.pt, else its newest)
    ema: bool  # True when the EMA weights were swapped into the LSTM stack

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def resolve_device(name: str | torch.device) -> torch.device:
    """The device `name` stands for: "auto" is CUDA when torch sees a GPU, else the CPU; a CUDA
    device without a GPU raises ConfigError; anything else is passed to `torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    require(
        device.type != "cuda" or torch.cuda.is_available(),
        "device",
        name,
        "'cpu' or 'auto': torch sees no CUDA device",
    )
    return device


def config_from_checkpoint(state: dict, path: Path) -> TrainConfig:
    """The TrainConfig object of a checkpoint's plain-dict `config` (typed, defaults filled)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), state["config"])
        return OmegaConf.to_object(merged)
    except (OmegaConfBaseException, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} has an unusable config: {exc}") from exc


def _swap_in_ema(model: LanguageModel, ema_state: dict, path: Path) -> None:
    """Copy the EMA shadows into the LSTM stack's parameters (saved in their order)."""
    params = list(model.rnn.parameters())
    shadow = ema_state["shadow"]
    if [s.shape for s in shadow] != [p.shape for p in params]:
        raise CheckpointError(f"checkpoint {path}: its EMA does not match the model's LSTM stack")
    with torch.no_grad():
        for param, average in zip(params, shadow, strict=True):
            param.copy_(average)


def _why_this_file(given: Path, file: Path, counters: dict) -> str:
    """Why `file` was loaded for the path the user gave: the rule of find_checkpoint."""
    if given.is_file():
        return "the file given"
    if file.name == BEST_NAME:
        return f"the run's best checkpoint, validation perplexity {counters['best_val_ppl']:.2f}"
    return "the run's newest checkpoint: it has no best.pt"


def load_trained_model(
    path: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu"
) -> TrainedModel:
    """Load a checkpoint file, or a run or checkpoints directory's best checkpoint (the best
    validation perplexity, `best.pt`) when it has one, else its newest valid checkpoint.

    The model is rebuilt from the checkpoint's own config and tokenizer, loaded with its
    weights, given the EMA weights of its LSTM stack when `use_ema` and the checkpoint has an
    EMA, and put in eval mode on `device` ("auto", "cpu", "cuda", "cuda:1", ...).
    Raises CheckpointError naming the file when it is missing, corrupt or does not fit.
    """
    target = resolve_device(device)
    file, state = find_checkpoint(path, prefer_best=True)
    config = config_from_checkpoint(state, file)
    tokenizer = tokenizer_from_state(state["tokenizer"])
    with target:  # allocate the weights where they will live; load_state_dict copies into them
        model = build_language_model(config.model, vocab_size=tokenizer.vocab_size)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # missing / unexpected keys or shape mismatches
        raise CheckpointError(f"checkpoint {file} does not fit its own config: {exc}") from exc
    ema = use_ema and state.get("ema") is not None
    if ema:
        _swap_in_ema(model, state["ema"], file)
    step = int(state["counters"]["step"])
    logger.info(
        "loaded %s (%s; step %d, %s weights) on %s",
        file,
        _why_this_file(Path(path), file, state["counters"]),
        step,
        "EMA" if ema else "raw",
        target,
    )
    return TrainedModel(model.eval(), tokenizer, config, step, file, ema)


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
