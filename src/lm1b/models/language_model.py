"""The language model: embedding -> dropout -> LSTMP stack (dropout after every layer) ->
output layer, with a sampled-softmax loss in training and the full softmax in evaluation.

It knows nothing about optimizers, distribution or logging: the trainer reads `loss`, the
evaluator `nll_sum` and `num_tokens`, and both carry `state` (detached) to the next window.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm1b.config.model import ModelConfig
from lm1b.models.lstm_stack import build_lstm_stack
from lm1b.models.sampler import CandidateSample, LogUniformSampler
from lm1b.models.scopes import SOFTMAX, scope
from lm1b.models.softmax import SoftmaxLayer, uniform_unit_scaling_

State = tuple[Tensor, Tensor]  # h (L, B, p), c (L, B, n)


class LMOutput(NamedTuple):
    """What one window gives, in either mode.

    loss: mean loss over the predicted (unmasked) positions: sampled softmax in training,
        full softmax in evaluation. float32 scalar.
    nll_sum: the same loss summed over those positions (float64 in evaluation).
    num_tokens: the number of predicted positions, int64 scalar.
    state: the final (h, c), still attached to the graph; detach it between windows.
    """

    loss: Tensor
    nll_sum: Tensor
    num_tokens: Tensor
    state: State


class LanguageModel(nn.Module):
    """Word-level LSTMP language model with a batch-major API.

    `forward(inputs, targets, state=None, mask=None, generator=None)`: inputs and targets
    (B, T) int64, mask (B, T) bool (False = padding, not scored). In training mode the loss is
    the sampled softmax over one sample set of `sampler.num_sampled` ids drawn from
    `generator` (seed it identically on every rank to share the set), or, without a sampler
    (`model.num_sampled=0`), the full softmax with gradients for every vocabulary row; in
    eval mode it is the full softmax, computed in (token_chunk_size x vocab_chunk_size)
    blocks without gradients.
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        rnn: nn.Module,
        softmax: SoftmaxLayer,
        sampler: LogUniformSampler | None,
        dropout: float,
        token_chunk_size: int = 512,
        vocab_chunk_size: int = 32768,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.rnn = rnn
        self.softmax = softmax
        self.sampler = sampler
        self.dropout = dropout
        self.token_chunk_size = token_chunk_size
        self.vocab_chunk_size = vocab_chunk_size

    def forward(
        self,
        inputs: Tensor,
        targets: Tensor,
        state: State | None = None,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        sample: CandidateSample | None = None,
        rnn: nn.Module | None = None,
    ) -> LMOutput:
        """One window: (B, T) ids in, the loss of predicting (B, T) targets out. In training,
        `sample` is the sample set to use, whose `complete` flag the caller checks (the trainer
        skips the step on it); else one is drawn from `generator` and that flag, False with a
        probability below 1e-12, goes unchecked. `rnn` runs the LSTM stack in place of
        `self.rnn`: the trainer's DDP wrapper of it."""
        outputs, new_state = self.hidden_states(inputs, state, rnn)  # (T, B, p)
        hidden = outputs.reshape(-1, outputs.shape[-1])  # (T * B, p)
        flat_targets = targets.t().reshape(-1)  # (T * B,)
        flat_mask = None if mask is None else mask.t().reshape(-1)
        if self.training and self.sampler is None:
            with scope(SOFTMAX):
                loss = self.softmax.full_loss(hidden, flat_targets, flat_mask)
            return self._training_output(loss, flat_targets, flat_mask, new_state)
        if self.training:
            if sample is None:
                sample = self.sampler.sample(generator, device=hidden.device)
            with scope(SOFTMAX):
                loss = self.softmax.sampled_loss(hidden, flat_targets, sample, flat_mask)
            return self._training_output(loss, flat_targets, flat_mask, new_state)
        nll_sum, num_tokens = self.softmax.full_nll(
            hidden,
            flat_targets,
            flat_mask,
            token_chunk_size=self.token_chunk_size,
            vocab_chunk_size=self.vocab_chunk_size,
        )
        loss = (nll_sum / num_tokens.clamp(min=1)).float()
        return LMOutput(loss, nll_sum, num_tokens, new_state)

    def hidden_states(
        self, inputs: Tensor, state: State | None = None, rnn: nn.Module | None = None
    ) -> tuple[Tensor, State]:
        """What the softmax reads: the LSTM stack's outputs (T, B, p) for ids (B, T) from
        `state` (None: zeros), dropout applied in training mode, and the stack's final state.
        Time-major (the stack's layout): transposing the ids is cheaper than the activations,
        so the callers put targets and mask in the same (T, B) order. `rnn` runs in place of
        `self.rnn` (the trainer's DDP wrapper of it)."""
        embedded = F.dropout(self.embedding(inputs.t()), self.dropout, self.training)
        stack = self.rnn if rnn is None else rnn
        return stack(embedded, state)  # the stack applies its own output dropout

    @staticmethod
    def _training_output(
        loss: Tensor, targets: Tensor, mask: Tensor | None, state: State
    ) -> LMOutput:
        """The training loss (a mean over the predicted positions) with its token count."""
        # new_full, not new_tensor: that would copy from the host, and wait for the device.
        num_tokens = targets.new_full((), targets.numel()) if mask is None else mask.sum()
        return LMOutput(loss, loss * num_tokens, num_tokens, state)


def build_language_model(
    cfg: ModelConfig,
    vocab_size: int | None = None,
    *,
    token_chunk_size: int = 512,
    vocab_chunk_size: int = 32768,
) -> LanguageModel:
    """The model for `cfg`, with V = `vocab_size` (e.g. from the vocabulary file) or
    cfg.vocab_size. Vocabulary tables are initialised as in f-lm (`uniform_unit_scaling_`),
    or U(-cfg.table_init, cfg.table_init) for both weight tables when it is set;
    `cfg.sparse_embedding` gives both the embedding and the softmax tables row-sparse
    gradients (with `cfg.num_sampled=0` the model trains with the full softmax: no sampler,
    and the softmax tables' gradients are dense). Builds on the meta device without allocating (nothing is sampled until the
    first training step)."""
    vocab = _resolve_vocab_size(cfg, vocab_size)
    p = cfg.projection_size
    embedding = nn.Embedding(vocab, p, sparse=cfg.sparse_embedding)
    uniform_unit_scaling_(embedding.weight, cfg.table_init)
    return LanguageModel(
        embedding=embedding,
        rnn=build_lstm_stack(cfg),
        softmax=SoftmaxLayer(
            vocab, p, sparse=cfg.sparse_embedding and cfg.num_sampled > 0, init_limit=cfg.table_init
        ),
        sampler=LogUniformSampler(vocab, cfg.num_sampled) if cfg.num_sampled else None,
        dropout=cfg.dropout,
        token_chunk_size=token_chunk_size,
        vocab_chunk_size=vocab_chunk_size,
    )


def _resolve_vocab_size(cfg: ModelConfig, vocab_size: int | None) -> int:
    """The explicit `vocab_size`, else cfg.vocab_size; an error if neither or they differ."""
    if vocab_size is None and cfg.vocab_size is None:
        raise ValueError(
            "model.vocab_size is null and no vocab_size was given: pass the vocabulary's size"
        )
    if vocab_size is not None and cfg.vocab_size is not None and vocab_size != cfg.vocab_size:
        raise ValueError(
            f"model.vocab_size={cfg.vocab_size} disagrees with the vocabulary's size {vocab_size}"
        )
    return vocab_size if vocab_size is not None else cfg.vocab_size
