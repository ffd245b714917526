"""Log-uniform candidate sampler, identical in distribution to TensorFlow's default.

TensorFlow's `LogUniformCandidateSampler(unique=True)` draws ids with replacement from
P(k) = log((k + 2) / (k + 1)) / log(V + 1) until it holds `num_sampled` distinct ids, and
counts the draws ("tries"). The expected number of times id k appears among those draws,
Q(k) = 1 - (1 - P(k))^tries, is what the sampled softmax subtracts (as log Q) from the logits.

The sequential loop is vectorised here: the draws are taken in one large batch (sized from
the expected number of tries), de-duplicated with `torch.unique`, and the first occurrence of
every distinct id is found with a scatter-min. The S distinct ids first seen earliest, and
the position of the S-th of them (= tries), are exactly what the sequential loop would have
produced from the same stream of uniforms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# The first batch of draws is this much larger than the expected number of tries, so a
# second batch is rarely needed; later batches (if any) add this fraction of it.
_FIRST_DRAW_MARGIN = 1.1
_EXTRA_DRAW_FRACTION = 0.25


def log_uniform_prob(ids: Tensor, vocab_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """P(k) = log((k + 2) / (k + 1)) / log(V + 1) for ids k in [0, V), in `dtype`.

    Written with log1p: `log(k + 2) - log(k + 1)` loses all its digits to cancellation in
    float32 for the rare ids of a large vocabulary.
    """
    k = ids.to(dtype)
    return torch.log1p(1.0 / (k + 1.0)) / math.log1p(vocab_size)


def log_expected_count(ids: Tensor, vocab_size: int, tries: float) -> Tensor:
    """log Q(k), with Q(k) = 1 - (1 - P(k))^tries computed as -expm1(tries * log1p(-P(k))).

    The expm1/log1p form is exact for rare ids (Q ~ tries * P, tiny) and for frequent ones
    (Q -> 1). `tries = math.inf` gives Q = 1 (log Q = 0) for every id.
    """
    log_not_drawn_once = torch.log1p(-log_uniform_prob(ids, vocab_size))  # (...,) < 0
    return torch.log(-torch.expm1(tries * log_not_drawn_once))


@dataclass(frozen=True)
class CandidateSample:
    """One sample set, shared by every position of a batch.

    ids: (S,) int64, distinct, in the order of their first draw.
    tries: how many draws produced them; math.inf stands for "every id, with Q = 1".
    """

    ids: Tensor
    tries: float
    vocab_size: int

    def log_expected_count(self, ids: Tensor) -> Tensor:
        """log Q for any ids (the sampled ones or the true targets) under this sample."""
        return log_expected_count(ids, self.vocab_size, self.tries)

    @classmethod
    def exhaustive(cls, vocab_size: int, device: torch.device | str | None = None):
        """Every id with Q = 1: the sampled softmax then equals the full softmax."""
        ids = torch.arange(vocab_size, device=device)
        return cls(ids=ids, tries=math.inf, vocab_size=vocab_size)


class LogUniformSampler:
    """Draws `num_sampled` distinct ids from the log-uniform distribution over [0, V).

    Holds no tensors until the first draw, so a model that owns one can be built on the
    meta device. Pass the same seeded `torch.Generator` on every rank to get the same sample
    set everywhere.
    """

    def __init__(self, vocab_size: int, num_sampled: int) -> None:
        if not 1 <= num_sampled <= vocab_size:
            raise ValueError(
                f"num_sampled={num_sampled} is invalid: it must be in [1, vocab_size={vocab_size}]"
            )
        self.vocab_size = vocab_size
        self.num_sampled = num_sampled
        self._expected_tries: float | None = None

    def expected_tries(self) -> float:
        """The number of draws N at which S distinct ids are expected (computed once, on CPU).

        Solves sum_k 1 - (1 - P(k))^N = S by bisection on N. With S = V the target is lowered
        by half an id, since the expectation only reaches V in the limit.
        """
        if self._expected_tries is None:
            every_id = torch.arange(self.vocab_size, device="cpu")
            p = log_uniform_prob(every_id, self.vocab_size, torch.float64)  # (V,)
            log_keep = torch.log1p(-p)
            target = min(float(self.num_sampled), self.vocab_size - 0.5)

            def expected_distinct(n: float) -> float:
                return float(-torch.expm1(n * log_keep).sum())

            low, high = float(self.num_sampled) / 2, float(self.num_sampled)
            while expected_distinct(high) < target:
                low, high = high, 2 * high
            while high - low > max(1.0, 1e-3 * high):
                middle = (low + high) / 2
                low, high = (middle, high) if expected_distinct(middle) < target else (low, middle)
            self._expected_tries = high
        return self._expected_tries

    def sample(
        self,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> CandidateSample:
        """Draw one sample set; the uniforms come from `generator` (on its device).

        The result is moved to `device` (default: the generator's device, else CPU). One host
        synchronisation reads the number of tries.
        """
        draw_device = generator.device if generator is not None else torch.device(device or "cpu")
        first_batch = math.ceil(_FIRST_DRAW_MARGIN * self.expected_tries())
        extra_batch = math.ceil(_EXTRA_DRAW_FRACTION * first_batch)
        draws = self.draw_with_replacement(first_batch, generator, draw_device)  # (N,) int64
        while True:
            found = first_distinct(draws, self.num_sampled)
            if found is not None:
                ids, tries = found
                return CandidateSample(ids.to(device or draw_device), tries, self.vocab_size)
            more = self.draw_with_replacement(extra_batch, generator, draw_device)
            draws = torch.cat([draws, more])

    def draw_with_replacement(
        self,
        count: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """`count` independent log-uniform ids, as TF: floor(exp(u log(V + 1))) - 1, mod V.

        float64 throughout: in float32, exp() rounds across integer boundaries near V.
        """
        u = torch.rand(count, generator=generator, device=device, dtype=torch.float64)
        ids = torch.exp(u * math.log1p(self.vocab_size)).floor().long() - 1
        return ids.remainder(self.vocab_size)  # TF's guard against round-off reaching V


def first_distinct(draws: Tensor, num: int) -> tuple[Tensor, int] | None:
    """The first `num` distinct ids of a draw stream, in order, and the 1-based index of the
    draw that produced the last of them (TF's "tries"); None if the stream has fewer.

    draws (N,) int64 -> ids (num,) int64. Vectorised: unique ids, the first position of each
    by scatter-min, then the `num` earliest first positions.
    """
    distinct, inverse = torch.unique(draws, return_inverse=True)  # (U,), (N,)
    if distinct.numel() < num:
        return None
    positions = torch.arange(draws.numel(), device=draws.device)
    first_seen = torch.full_like(distinct, draws.numel())
    first_seen.scatter_reduce_(0, inverse, positions, reduce="amin")  # (U,)
    order = torch.argsort(first_seen)[:num]  # (num,) earliest first
    tries = int(first_seen[order[-1]]) + 1
    return distinct[order], tries
