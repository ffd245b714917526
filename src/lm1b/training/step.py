"""One optimisation step of the recipe, taken identically on every rank.

forward (sampled softmax, one sample set shared by all ranks) -> backward (DDP averages the
LSTM gradients) -> the vocabulary tables' row-sparse gradients averaged over ranks -> the
original code's scalings -> global-norm clipping of the LSTM gradients -> one all-reduce of
the step's flags (non-finite or short sample set, and the loop's stop/checkpoint votes) ->
the tables' update, conditioned on those flags on the device -> the dense optimizer step and
EMA, or a skipped step on every rank.

On one GPU the host waits for the device once per step, to read those flags with the loss and
the gradient norm: the sampler, the loss and the table optimizer keep everything else on the
device, and no tensor is made from host data inside the step (a host-to-device copy from
pageable memory waits for the device too). Several ranks add none: the tables' rows are
exchanged in sizes fixed by the batch (lm1b.training.sparse_sync).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from lm1b.config import TrainConfig
from lm1b.data.batch import Batch
from lm1b.models.sampler import CandidateSample
from lm1b.models.scopes import BACKWARD, CLIP, EMA, SAMPLER, STEP, TABLES, scope
from lm1b.training.distributed import DistContext, ddp_lstm_stack
from lm1b.training.ema import ExponentialMovingAverage
from lm1b.training.hooks import StepHooks
from lm1b.training.optim import Optimizers, lstm_parameters, table_parameters
from lm1b.training.precision import resolve_precision
from lm1b.training.sparse_sync import average_sparse_gradient

State = tuple[torch.Tensor, torch.Tensor]


@dataclass
class StepResult:
    loss: float  # this rank's mean training loss (sampled softmax, or full with num_sampled 0)
    grad_norm: float  # global norm of the LSTM gradients before clipping
    skipped: bool  # some rank saw a non-finite loss or gradient (or a short sample set)
    votes: tuple[float, ...]  # the loop's votes, each the maximum over ranks


class StepRunner:
    """Owns what a step carries to the next: the LSTM state of every row."""

    def __init__(
        self,
        model: nn.Module,
        optimizers: Optimizers,
        ema: ExponentialMovingAverage | None,
        cfg: TrainConfig,
        ctx: DistContext,
        hooks: StepHooks | None = None,
    ) -> None:
        self.model = model
        self.optimizers = optimizers
        self.ema = ema
        self.cfg = cfg
        self.ctx = ctx
        self.lstm_params = lstm_parameters(model)
        self.tables = table_parameters(model)
        self.softmax_param_ids = {id(p) for p in model.softmax.parameters()}
        self.rows_per_rank = cfg.data.batch_size // ctx.world_size
        # bf16 or fp32: trainer.precision resolved for this model on this device.
        self.precision = resolve_precision(cfg.trainer.precision, cfg.model.type, ctx.device)
        # Seeded from (seed, step) on every rank: one sample set for all, and nothing to save.
        self.sample_generator = torch.Generator(device=ctx.device)
        self.lstm_state: State | None = None
        # The LSTM stack the training forward runs: in DDP when distributed (the model keeps
        # the unwrapped stack; only this forward and its backward go through the wrapper).
        self.rnn = (
            ddp_lstm_stack(model.rnn, ctx, cfg.trainer.ddp_bf16_grads)
            if ctx.is_distributed
            else model.rnn
        )
        # Fault injection (tests) and phase marks (the benchmark's step-time breakdown).
        self.hooks = hooks or StepHooks()

    def autocast(self):
        """The step's autocast context: bf16 autocast, or none (fp32)."""
        if self.precision != "bf16":
            return nullcontext()
        # No weight cache: the LSTM casts its own weights, and CUDA-graph capture refuses it.
        return torch.autocast(
            device_type=self.ctx.device.type, dtype=torch.bfloat16, cache_enabled=False
        )

    def _draw_sample(self, step: int) -> CandidateSample | None:
        """The step's sample set, the same on every rank; None when training with the full
        softmax (`model.num_sampled=0`)."""
        if self.model.sampler is None:
            return None
        self.sample_generator.manual_seed(self.cfg.seed * 1_000_003 + step)
        with scope(SAMPLER):
            return self.model.sampler.sample(self.sample_generator, device=self.ctx.device)

    def _forward_backward(
        self, batch: Batch, step: int
    ) -> tuple[torch.Tensor, CandidateSample | None]:
        """The step's loss (detached) and its sample set (None with the full softmax)."""
        sample = self._draw_sample(step)
        with self.autocast():
            out = self.model(
                batch.inputs, batch.targets, self.lstm_state, sample=sample, rnn=self.rnn
            )
        self.lstm_state = tuple(s.detach() for s in out.state)
        loss = self.hooks.loss(out.loss, step)
        self.hooks.on_phase("forward")
        scale = self.cfg.data.num_steps if self.cfg.optim.scale_loss_by_num_steps else 1
        with scope(BACKWARD):
            (loss * scale).backward()
        self.hooks.on_phase("backward")
        return loss.detach(), sample

    def _sync_tables(self, num_sampled: int) -> torch.Tensor:
        """Average the tables' gradients over ranks; a device bool: all of them are finite.
        The softmax tables' last `num_sampled` rows (the shared sample set) are exchanged as
        one block; with the full softmax (num_sampled 0) their gradients are dense."""
        finite = torch.ones((), dtype=torch.bool, device=self.ctx.device)
        for param in self.tables:
            if self.ctx.is_distributed:
                if param.grad is None or param.grad.is_sparse:
                    shared = num_sampled if id(param) in self.softmax_param_ids else 0
                    average_sparse_gradient(param, self.ctx.world_size, shared)
                else:
                    dist.all_reduce(param.grad)
                    param.grad.div_(self.ctx.world_size)
            grad = param.grad
            if grad is not None:
                # A sparse gradient's stored rows, repeated ids not yet summed (the optimizer
                # sums them; coalescing here would wait for the device).
                values = grad._values() if grad.is_sparse else grad
                finite = finite & torch.isfinite(values).all()
        if self.cfg.optim.scale_embedding_grad_by_batch:
            grad = self.model.embedding.weight.grad
            if grad is not None:
                grad.mul_(self.rows_per_rank)  # f-lm multiplied by the per-GPU batch size
        return finite

    def run(
        self, batch: Batch, step: int, votes: Sequence[float], *, usable: bool = True
    ) -> StepResult:
        """Take step number `step` (1-based) on `batch`; `votes` are reduced with MAX across
        ranks in the same collective as the non-finite flag. `usable=False` (a stand-in batch:
        this rank could not read its data) makes every rank skip the step."""
        with scope(STEP):
            return self._run(batch, step, votes, usable)

    def _run(self, batch: Batch, step: int, votes: Sequence[float], usable: bool) -> StepResult:
        loss, sample = self._forward_backward(batch, step)
        with scope(TABLES):
            tables_finite = self._sync_tables(0 if sample is None else sample.ids.numel())
        max_norm = self.cfg.optim.max_grad_norm or math.inf
        with scope(CLIP):
            grad_norm = torch.nn.utils.clip_grad_norm_(self.lstm_params, max_norm)
        valid = tables_finite & torch.isfinite(loss) & torch.isfinite(grad_norm) & usable
        if sample is not None:
            # A sample set short of S ids (probability < 1e-12, lm1b.models.sampler) is skipped.
            valid = valid & sample.complete
        # (1 + len(votes),) float32: [this rank's step is invalid, *votes], MAX-reduced over
        # ranks. The votes are filled in on the device: torch.tensor(votes, device=...) would
        # be a blocking host-to-device copy.
        flags = torch.stack(
            [(~valid).float(), *(valid.new_full((), vote, dtype=torch.float32) for vote in votes)]
        )
        if self.ctx.is_distributed:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        # The tables' update is queued now, conditioned on the reduced flag on the device, so
        # its launches overlap the backward still running there rather than follow the wait.
        self.optimizers.step_device_flagged(flags[0] == 0)
        # The step's one host sync: the reduced flags with this rank's loss and norm.
        read = torch.cat([flags, loss.float().view(1), grad_norm.float().view(1)]).tolist()
        skipped, reduced_votes = bool(read[0]), tuple(read[1:-2])
        loss_value, norm_value = read[-2:]
        if skipped:
            # A NaN forward may have poisoned the carried state: restart the rows from zeros.
            self.lstm_state = None
        else:
            self.optimizers.step_host_checked()
            if self.ema is not None:
                with scope(EMA):
                    self.ema.update()
        self.optimizers.zero_grad()
        self.hooks.on_phase("optimizer")
        return StepResult(loss_value, norm_value, skipped, reduced_votes)
