"""One benchmark candidate per variant: the trainer's own training step on synthetic batches.

Each candidate is built exactly as a training run builds it (the experiment's config composed
with the preset's sizes, `build_language_model`, `Optimizers`, the EMA, `StepRunner` in a
single-process DistContext, the GPU fast paths the trainer config enables), so a timed step
is the recipe's whole step: forward with the sampled softmax, backward, the table-gradient
pass, clipping, both optimizers and the EMA. Only the data differs: a few fixed batches of
uniformly random ids, so the loader is not timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from lm1b.config import ConfigError, TrainConfig, compose_config
from lm1b.config.bench import Preset
from lm1b.data.batch import Batch
from lm1b.models.acceleration import enable_fast_paths
from lm1b.models.counts import count_parameters, train_flops_per_word
from lm1b.models.language_model import LanguageModel, build_language_model
from lm1b.training.distributed import DistContext
from lm1b.training.ema import ExponentialMovingAverage
from lm1b.training.hooks import FaultInjection
from lm1b.training.memory import estimate_training_memory
from lm1b.training.optim import Optimizers
from lm1b.training.step import StepRunner

NUM_BATCHES = 4  # distinct random batches cycled through, so no step reuses the previous one


@dataclass
class Candidate:
    """One variant ready to step, with what the benchmark records about it."""

    name: str
    cfg: TrainConfig
    model: LanguageModel
    runner: StepRunner
    batches: list[Batch]
    flops_per_word: float  # forward + backward, LSTM stack and sampled softmax
    fast_paths: dict[str, bool]  # which GPU fast paths are on (enable_fast_paths)
    build_seconds: float
    warmup_seconds: float | None = None  # the warm-up steps: compilation, graph capture, ...
    step: int = 0
    # Steps the runner skipped as non-finite (no optimizer work: a skewed time, e.g. the cuDNN
    # baseline overflowing in fp16 under autocast); reported so a reader can see it.
    skipped_steps: int = 0
    seconds: list[float] = field(default_factory=list)  # mean step time of each timed pass
    transient_bytes: list[int] = field(default_factory=list)  # CUDA only: peak above resident
    phase_seconds: dict[str, list[float]] = field(default_factory=dict)  # the breakdown's
    accounting_ms: dict[str, float] | None = None  # ms per step per part (benchmark.breakdown)
    host_syncs: int | None = None  # CUDA only: times one step waited for the device

    @property
    def rnn_params(self) -> int:
        return count_parameters(self.model)["rnn"]

    @property
    def words_per_step(self) -> int:
        return self.cfg.data.batch_size * self.cfg.data.num_steps

    @property
    def precision(self) -> str:
        """bf16 or fp32: what the step runs in (trainer.precision resolved for this model)."""
        return self.runner.precision

    def train_step(self) -> None:
        """One whole training step on the next batch."""
        self.step += 1
        result = self.runner.run(self.batches[self.step % len(self.batches)], self.step, [])
        self.skipped_steps += result.skipped

    def state_bytes(self) -> int:
        """Bytes held between steps: parameters, optimizer state and EMA shadows (gradients
        are freed by zero_grad(set_to_none=True)); complete once a step has run."""
        tensors = list(self.model.parameters())
        for optimizer in self.runner.optimizers.optimizers:
            for state in optimizer.state.values():
                tensors += [v for v in state.values() if torch.is_tensor(v)]
        if self.runner.ema is not None:
            tensors += self.runner.ema.shadow
        return sum(t.numel() * t.element_size() for t in tensors)


def variant_overrides(name: str) -> list[str]:
    """The Hydra overrides that select variant `name`: its experiment (configs/experiment)."""
    return [f"experiment={name}"]


def preset_overrides(preset: Preset, precision: str, tf32: bool) -> list[str]:
    """The Hydra overrides that give every variant the preset's sizes and batch shape, and the
    bench's precision (auto, bf16 or fp32) and TF32 setting."""
    return [
        f"size={preset.size}",
        f"model.vocab_size={preset.vocab_size}",
        f"model.num_sampled={preset.num_sampled}",
        f"data.batch_size={preset.batch_size}",
        f"data.num_steps={preset.num_steps}",
        f"trainer.precision={precision}",
        f"trainer.tf32={str(tf32).lower()}",
    ]


def compose_variant_config(
    name: str, preset: Preset, precision: str, overrides: list[str], tf32: bool = True
) -> TrainConfig:
    """Variant `name`'s training config at the preset's sizes, then the bench's `overrides`
    (applied to every variant); an override Hydra or the schema rejects raises ConfigError."""
    try:
        return compose_config(
            [*variant_overrides(name), *preset_overrides(preset, precision, tf32), *overrides]
        )
    except (HydraException, OmegaConfBaseException, ConfigError) as error:
        if not overrides:
            raise
        cause = f" ({str(error.__cause__).splitlines()[0]})" if error.__cause__ else ""
        raise ConfigError(
            f"overrides={overrides!r} is invalid for {name}: {error}{cause}"
        ) from error


def estimated_bytes(cfg: TrainConfig, precision: str) -> int:
    """The memory model's bytes for the variant at its batch in `precision` (bf16 or fp32):
    weights, gradients, optimizer state, EMA and the step's activations
    (lm1b.training.memory). All of it stays allocated while the variant is built: its CUDA
    graphs keep the activations of the captured step in their private memory pool."""
    return estimate_training_memory(
        cfg.model,
        cfg.optim,
        vocab_size=cfg.model.vocab_size,
        rows=cfg.data.batch_size,
        num_steps=cfg.data.num_steps,
        precision=precision,
    ).total


def random_batches(cfg: TrainConfig, device: torch.device) -> list[Batch]:
    """NUM_BATCHES batches of (B, T) uniformly random ids, each target the next input."""
    batch, steps, vocab = cfg.data.batch_size, cfg.data.num_steps, cfg.model.vocab_size
    batches = []
    for _ in range(NUM_BATCHES):
        ids = torch.randint(vocab, (batch, steps + 1), device=device)
        batches.append(Batch(ids[:, :-1], ids[:, 1:]))
    return batches


def build_candidate(name: str, cfg: TrainConfig, device: torch.device, seed: int) -> Candidate:
    """Variant `name` from its training config on `device`, wired as the trainer wires a run."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    with device:
        model = build_language_model(cfg.model).train()
    # As the trainer does: once the model is on its device, before the optimizers see it.
    fast_paths = enable_fast_paths(model, cfg.trainer, device)
    optimizers = Optimizers(model, cfg.optim)
    ema = None
    if cfg.optim.ema_decay:
        ema = ExponentialMovingAverage(list(model.rnn.parameters()), cfg.optim.ema_decay)
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=device)
    runner = StepRunner(
        model, optimizers, ema, cfg, ctx, FaultInjection.from_config(cfg.testing, 0)
    )
    flops = train_flops_per_word(model, cfg.model.num_sampled)
    batches = random_batches(cfg, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the build's queued initialisation belongs to the build
    seconds = time.perf_counter() - start
    return Candidate(name, cfg, model, runner, batches, flops, fast_paths, seconds)
