"""The output layer: sampled softmax for training, chunked full softmax for evaluation.

The softmax weight is a (V, p) table and the bias a (V, 1) table, so both can be read by row
with `F.embedding` and receive row-sparse gradients (only the sampled and target rows).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm1b.models.sampler import CandidateSample


def _upcast(x: Tensor) -> Tensor:
    """float32 for half-precision inputs (autocast), unchanged for float32 and float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _logits(bias: Tensor, hidden: Tensor, weight: Tensor) -> Tensor:
    """bias + hidden @ weight.T, at least float32: under autocast the product would be rounded
    to bf16 before any upcast (bf16 keeps 8 bits of mantissa: logits near 20 would move by
    0.06), and the log-sum-exp over thousands of them would inherit that. On CUDA with TF32 on
    (`trainer.tf32`) the fp32 product rounds its inputs to TF32 (10 bits of mantissa) and
    accumulates in fp32: the output is not rounded."""
    with torch.autocast(hidden.device.type, enabled=False):
        return torch.addmm(_upcast(bias), _upcast(hidden), _upcast(weight).t())


def _masked_targets(targets: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Targets with padded positions replaced by id 0 (any valid id: they get zero weight),
    and the float weights (1 predicted, 0 padding), both (N,)."""
    if mask is None:
        return targets, torch.ones(targets.shape, dtype=torch.float32, device=targets.device)
    return targets.masked_fill(~mask, 0), mask.to(torch.float32)


def sampled_softmax_loss(
    hidden: Tensor,
    targets: Tensor,
    weight: Tensor,
    bias: Tensor,
    sample: CandidateSample,
    mask: Tensor | None = None,
    sparse: bool = False,
) -> Tensor:
    """Mean sampled-softmax cross-entropy over the predicted (unmasked) positions.

    hidden (N, p), targets (N,) int64, weight (V, p), bias (V, 1), mask (N,) bool or None.
    As TensorFlow's `sampled_softmax_loss`: every logit is corrected by -log Q of its id, the
    true class sits at position 0, and a sampled id equal to a row's target ("accidental hit")
    gets logit -inf in that row, so it contributes nothing to value or gradient. With
    `sparse`, weight and bias get row-sparse gradients over the target and sampled rows,
    uncoalesced: the N target rows, then the S sampled rows in the sample's order (the
    multi-rank exchange, lm1b.training.sparse_sync, all-reduces those last S as one block).
    """
    targets, weights = _masked_targets(targets, mask)
    num_targets = targets.numel()
    # One gather for targets and samples: one sparse gradient per table.
    rows = torch.cat([targets, sample.ids])  # (N + S,)
    row_weight = F.embedding(rows, weight, sparse=sparse)  # (N + S, p)
    row_bias = F.embedding(rows, bias, sparse=sparse).squeeze(1)  # (N + S,)
    true_w, sampled_w = row_weight[:num_targets], row_weight[num_targets:]
    true_b, sampled_b = row_bias[:num_targets], row_bias[num_targets:]

    # Logits at least float32 even under autocast: the log-sum-exp is over thousands of terms.
    true_logits = (_upcast(hidden) * _upcast(true_w)).sum(-1) + _upcast(true_b)  # (N,)
    true_logits = true_logits - sample.log_expected_count(targets)
    sampled_logits = _logits(sampled_b, hidden, sampled_w)  # (N, S)
    sampled_logits = sampled_logits - sample.log_expected_count(sample.ids)
    hits = targets.unsqueeze(1) == sample.ids.unsqueeze(0)  # (N, S) accidental hits
    sampled_logits = sampled_logits.masked_fill(hits, -math.inf)

    # Cross-entropy with the true class at 0, without concatenating an (N, S + 1) copy.
    log_normalizer = torch.logaddexp(true_logits, torch.logsumexp(sampled_logits, dim=1))
    losses = log_normalizer - true_logits  # (N,)
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


def full_softmax_loss(
    hidden: Tensor, targets: Tensor, weight: Tensor, bias: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Mean cross-entropy under the softmax over the whole vocabulary, with gradients.

    hidden (N, p), targets (N,), weight (V, p), bias (V, 1), mask (N,) bool or None. The
    training loss of `model.num_sampled=0`: every row of weight and bias gets a (dense)
    gradient. It holds an (N, V) float32 logit block for the backward, so it is meant for
    small vocabularies (the sample's 9,082 words, a 32K subword vocabulary), not for 793K.
    """
    targets, weights = _masked_targets(targets, mask)
    logits = _logits(bias.t(), hidden, weight)  # (N, V)
    losses = F.cross_entropy(logits, targets, reduction="none")  # (N,)
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


def full_softmax_nll(
    hidden: Tensor,
    targets: Tensor,
    weight: Tensor,
    bias: Tensor,
    mask: Tensor | None = None,
    token_chunk_size: int = 512,
    vocab_chunk_size: int = 32768,
) -> tuple[Tensor, Tensor]:
    """Summed negative log-likelihood under the softmax over the whole vocabulary, and the
    number of predicted (unmasked) tokens.

    hidden (N, p), targets (N,), weight (V, p), bias (V, 1), mask (N,) bool or None. See
    `full_softmax_token_nll` for the chunking; the sum is accumulated in float64 per token
    chunk. Perplexity = exp(sum of nll_sum / sum of num_tokens).
    """
    targets, weights = _masked_targets(targets, mask)
    num_tokens = targets.new_full((), targets.numel()) if mask is None else mask.sum()
    nll_sum = torch.zeros((), dtype=torch.float64, device=hidden.device)
    for start in range(0, targets.numel(), token_chunk_size):
        chunk = slice(start, start + token_chunk_size)
        nll = full_softmax_token_nll(hidden[chunk], targets[chunk], weight, bias, vocab_chunk_size)
        nll_sum = nll_sum + (nll * weights[chunk]).sum().double()
    return nll_sum, num_tokens


def full_softmax_token_nll(
    hidden: Tensor,
    targets: Tensor,
    weight: Tensor,
    bias: Tensor,
    vocab_chunk_size: int = 32768,
    token_chunk_size: int | None = None,
) -> Tensor:
    """Each token's negative log-likelihood under the full softmax: (N,), at least float32.

    hidden (N, p), targets (N,), weight (V, p), bias (V, 1). Tokens go `token_chunk_size` at
    a time (None: all at once) and the vocabulary `vocab_chunk_size` rows at a time with an
    online log-sum-exp, so under `torch.no_grad()` the extra memory is a few
    (token chunk x vocab chunk) float32 blocks, never (N x V); each pass over the vocabulary
    reads the (V, p) weight once for the whole token chunk.
    """
    step = token_chunk_size or max(targets.numel(), 1)
    parts = []
    for start in range(0, targets.numel(), step):
        chunk = slice(start, start + step)
        log_normalizer = _chunked_logsumexp(hidden[chunk], weight, bias, vocab_chunk_size)
        parts.append(log_normalizer - _row_logits(hidden[chunk], targets[chunk], weight, bias))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def _row_logits(hidden: Tensor, ids: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """The logit of ids[i] for hidden[i]: (n, p), (n,) -> (n,), at least float32."""
    return (_upcast(hidden) * _upcast(weight[ids])).sum(-1) + _upcast(bias[ids, 0])


def _chunked_logsumexp(hidden: Tensor, weight: Tensor, bias: Tensor, vocab_chunk: int) -> Tensor:
    """log sum_v exp(hidden . weight[v] + bias[v]) over all V rows, vocab_chunk rows at a time.

    hidden (n, p) -> (n,), at least float32. Each block's log-sum-exp is merged into the
    running one with logaddexp, the stable online form of the reduction.
    """
    running = None
    for start in range(0, weight.shape[0], vocab_chunk):
        rows = slice(start, start + vocab_chunk)
        logits = _logits(bias[rows, 0], hidden, weight[rows])  # (n, v)
        block = torch.logsumexp(logits, dim=1)  # (n,)
        running = block if running is None else torch.logaddexp(running, block)
    return running


def uniform_unit_scaling_(table: Tensor, limit: float | None = None) -> Tensor:
    """f-lm's initialisation of a (V, ...) vocabulary table, in place: U(-sqrt(3/V), sqrt(3/V)).

    This is TensorFlow's `uniform_unit_scaling_initializer` (factor 1) on a (V, p) table,
    whose input size is V; TF's default Glorot initialiser gives a 1-D (V,) bias the same
    limit. Small tables make the first logits nearly zero: training starts from the uniform
    prediction (loss ~ log V) and the embedding starts small. An explicit `limit` gives
    U(-limit, limit) instead (`model.table_init`).
    """
    if limit is None:
        limit = math.sqrt(3.0 / table.shape[0])
    return nn.init.uniform_(table, -limit, limit)


class SoftmaxLayer(nn.Module):
    """Output layer: weight (V, p) and bias stored as a (V, 1) table, both initialised by
    `uniform_unit_scaling_` as in f-lm. With `sparse`, the sampled loss gives both tables
    row-sparse gradients; the full-softmax training loss always gives dense ones."""

    def __init__(
        self, vocab_size: int, dim: int, sparse: bool = False, init_limit: float | None = None
    ) -> None:
        super().__init__()
        self.sparse = sparse
        self.init_limit = init_limit  # the weight's U(-limit, limit); None: f-lm's
        self.weight = nn.Parameter(torch.empty(vocab_size, dim))
        self.bias = nn.Parameter(torch.empty(vocab_size, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        uniform_unit_scaling_(self.weight, self.init_limit)
        uniform_unit_scaling_(self.bias)

    def sampled_loss(
        self, hidden: Tensor, targets: Tensor, sample: CandidateSample, mask: Tensor | None = None
    ) -> Tensor:
        """Mean sampled-softmax loss; see `sampled_softmax_loss`."""
        return sampled_softmax_loss(
            hidden, targets, self.weight, self.bias, sample, mask, sparse=self.sparse
        )

    def full_loss(self, hidden: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean full-softmax loss with gradients; see `full_softmax_loss`."""
        return full_softmax_loss(hidden, targets, self.weight, self.bias, mask)

    def full_nll(
        self, hidden: Tensor, targets: Tensor, mask: Tensor | None = None, **chunk_sizes: int
    ) -> tuple[Tensor, Tensor]:
        """Summed full-softmax NLL and token count; see `full_softmax_nll`."""
        return full_softmax_nll(hidden, targets, self.weight, self.bias, mask, **chunk_sizes)

    def token_nll(
        self, hidden: Tensor, targets: Tensor, token_chunk_size: int, vocab_chunk_size: int
    ) -> Tensor:
        """Each token's full-softmax NLL, (N,); see `full_softmax_token_nll`."""
        return full_softmax_token_nll(
            hidden, targets, self.weight, self.bias, vocab_chunk_size, token_chunk_size
        )
