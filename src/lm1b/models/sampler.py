"""Log-uniform candidate sampler, identical in distribution to TensorFlow's default.

TensorFlow's `LogUniformCandidateSampler(unique=True)` draws ids with replacement from
P(k) = log((k + 2) / (k + 1)) / log(V + 1) until it holds `num_sampled` distinct ids, and
counts the draws ("tries"). The expected number of times id k appears among those draws,
Q(k) = 1 - (1 - P(k))^tries, is what the sampled softmax subtracts (as log Q) from the logits.

The sequential loop is vectorised here without a single host synchronisation: a fixed number of
draws (`LogUniformSampler.draw_count`) is taken in one batch, and `first_distinct` finds the
first `num_sampled` distinct ids among them and the tries with sorts and scans whose sizes are
known on the host. The ids, tries and a `complete` flag stay on the device (on a GPU, reading
the tries back would stall the step's launch queue every step). The draw count is chosen so that
the draws hold fewer than `num_sampled` distinct ids with probability below 1e-12 (a proven
bound, see `shortfall_bound`); the trainer skips the step in that case rather than train on
a short sample set. Whenever the draws suffice, the result is exactly what TensorFlow's loop
produces from the same stream of draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# The largest accepted probability that a sample's fixed draws hold too few distinct ids.
SHORTFALL_PROBABILITY = 1e-12
# The most draws a sample set may take (128 MiB of int64 ids, sorted every step). Only S close
# to V needs more: there the last distinct ids are the rarest, and wait to be drawn.
MAX_DRAWS = 2**24


def log_uniform_prob(ids: Tensor, vocab_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """P(k) = log((k + 2) / (k + 1)) / log(V + 1) for ids k in [0, V), in `dtype`.

    Written with log1p: `log(k + 2) - log(k + 1)` loses all its digits to cancellation in
    float32 for the rare ids of a large vocabulary.
    """
    k = ids.to(dtype)
    return torch.log1p(1.0 / (k + 1.0)) / math.log1p(vocab_size)


def log_expected_count(
    ids: Tensor, vocab_size: int, tries: float | Tensor, num_sampled: int | None = None
) -> Tensor:
    """log Q(k), with Q(k) = 1 - (1 - P(k))^tries computed as -expm1(tries * log1p(-P(k))).

    The expm1/log1p form is exact for rare ids (Q ~ tries * P, tiny) and for frequent ones
    (Q -> 1). `tries = math.inf` gives Q = 1 (log Q = 0) for every id. Given `num_sampled`,
    a sample whose tries equal it (no draw repeated) gets Q = P * num_sampled instead, as in
    TensorFlow's ExpectedCountHelper; `tries` may be a 0-dim device tensor (then torch.where
    chooses, and nothing is read back).
    """
    prob = log_uniform_prob(ids, vocab_size)  # (...,)
    log_q = torch.log(-torch.expm1(tries * torch.log1p(-prob)))
    if num_sampled is None:
        return log_q
    no_repeat = torch.log(prob * num_sampled)
    if isinstance(tries, Tensor):
        return torch.where(tries == num_sampled, no_repeat, log_q)
    return no_repeat if tries == num_sampled else log_q


@dataclass(frozen=True)
class CandidateSample:
    """One sample set, shared by every position of a batch.

    ids: (S,) int64, distinct, in the order of their first draw.
    tries: how many draws produced them, a 0-dim int64 tensor on the ids' device (or a number);
        math.inf stands for "every id, with Q = 1".
    complete: a 0-dim bool tensor (or True): the draws held S distinct ids. When False (a
        probability below SHORTFALL_PROBABILITY per sample) ids and tries are not a valid
        sample set and the step must not be taken.
    """

    ids: Tensor
    tries: float | Tensor
    vocab_size: int
    complete: bool | Tensor = True

    def log_expected_count(self, ids: Tensor) -> Tensor:
        """log Q for any ids (the sampled ones or the true targets) under this sample."""
        return log_expected_count(ids, self.vocab_size, self.tries, self.ids.numel())

    @classmethod
    def exhaustive(cls, vocab_size: int, device: torch.device | str | None = None):
        """Every id with Q = 1: the sampled softmax then equals the full softmax."""
        ids = torch.arange(vocab_size, device=device)
        return cls(ids=ids, tries=math.inf, vocab_size=vocab_size)


def shortfall_bound(num_draws: int, num_sampled: int, log_keep: Tensor) -> float:
    """An upper bound on P(num_draws log-uniform draws hold fewer than num_sampled distinct ids).

    log_keep (V,) float64 = log(1 - P(k)). The distinct count D is a sum of the indicators
    "id k was drawn", which are negatively associated (balls into bins), so Chernoff's lower
    tail holds: P(D <= mu - t) <= exp(-t^2 / (2 mu)), mu = E[D]. Near saturation (S close to V)
    Markov's inequality on the number of ids never drawn is the sharper one:
    P(D < S) <= E[V - D] / (V - S + 1). The smaller of the two is returned.
    """
    never_drawn = torch.exp(num_draws * log_keep)  # (V,) P(id k not among the draws)
    missing = float(never_drawn.sum())
    mean = log_keep.numel() - missing
    chernoff = math.exp(-((mean - num_sampled) ** 2) / (2 * mean)) if mean > num_sampled else 1.0
    return min(chernoff, missing / (log_keep.numel() - num_sampled + 1))


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
        self._draw_count: int | None = None

    def draw_count(self) -> int:
        """The number of draws per sample set: the smallest N (to within 1%) whose
        `shortfall_bound` is at most SHORTFALL_PROBABILITY; computed once, on the CPU.
        Paper size (S 8,192 of V 793,471): about 1.1x the expected number of tries."""
        if self._draw_count is None:
            every_id = torch.arange(self.vocab_size, device="cpu")
            log_keep = torch.log1p(-log_uniform_prob(every_id, self.vocab_size, torch.float64))

            def enough(n: int) -> bool:
                return shortfall_bound(n, self.num_sampled, log_keep) <= SHORTFALL_PROBABILITY

            low, high = self.num_sampled - 1, 2 * self.num_sampled  # enough(low) is False
            while not enough(high):
                if high > MAX_DRAWS:
                    raise ValueError(
                        f"num_sampled={self.num_sampled} is too close to vocab_size="
                        f"{self.vocab_size}: a sample set would need more than {MAX_DRAWS:,} "
                        "draws to hold that many distinct ids; sample fewer"
                    )
                low, high = high, 2 * high
            while high - low > max(1, high // 100):
                middle = (low + high) // 2
                low, high = (middle, high) if not enough(middle) else (low, middle)
            self._draw_count = high
        return self._draw_count

    def sample(
        self,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> CandidateSample:
        """Draw one sample set; the uniforms come from `generator` (on its device).

        The result is on `device` (default: the generator's device, else CPU). Nothing is read
        back to the host: check `complete` before using the sample (the trainer folds it into
        its skip flag).
        """
        draw_device = generator.device if generator is not None else torch.device(device or "cpu")
        draws = self.draw_with_replacement(self.draw_count(), generator, draw_device)  # (N,)
        ids, tries, complete = first_distinct(draws, self.num_sampled)
        target = torch.device(device) if device is not None else draw_device
        ids, tries, complete = (t.to(target) for t in (ids, tries, complete))
        return CandidateSample(ids, tries, self.vocab_size, complete)

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


def first_distinct(draws: Tensor, num: int) -> tuple[Tensor, Tensor, Tensor]:
    """The first `num` distinct ids of a draw stream, in order of first appearance; the 1-based
    index of the draw that produced the last of them (TF's "tries"); whether the stream held
    `num` distinct ids at all (if not, the ids and tries are meaningless).

    draws (N,) int64 -> ids (num,) int64, tries and complete 0-dim (int64, bool), all on the
    draws' device. Every size is known on the host, so nothing waits for the device: a stable
    sort marks each id's first draw, a running count over the draws ranks those first draws.
    """
    sorted_ids, order = torch.sort(draws, stable=True)  # (N,) each id's draws, earliest first
    opens_run = torch.ones_like(sorted_ids, dtype=torch.bool)
    opens_run[1:] = sorted_ids[1:] != sorted_ids[:-1]
    is_first = torch.empty_like(opens_run).scatter_(0, order, opens_run)  # (N,) in draw order
    rank = torch.cumsum(is_first, 0)  # (N,) distinct ids among draws[: i + 1]
    # Draw i's id goes to slot rank - 1 if it is one of the first `num`; the others to a spare.
    slot = torch.where(is_first & (rank <= num), rank - 1, num)
    ids = draws.new_zeros(num + 1).scatter_(0, slot, draws)[:num]
    tries = (rank < num).sum() + 1  # rank is non-decreasing: the draw where it reaches num
    return ids, tries, rank[-1] >= num
