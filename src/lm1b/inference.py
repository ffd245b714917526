"""Using a trained model: load a checkpoint for inference (scoring a stream is
lm1b.evaluation's).

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
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lm1b.config import TrainConfig
from lm1b.config.checks import require
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
