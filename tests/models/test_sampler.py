"""The log-uniform sampler against its definition: frequencies, tries, expected counts."""

from __future__ import annotations

import math

import pytest
import torch

from lm1b.models.sampler import (
    CandidateSample,
    LogUniformSampler,
    first_distinct,
    log_expected_count,
    log_uniform_prob,
    shortfall_bound,
)

# A chi-square statistic with df degrees of freedom has mean df and standard deviation
# sqrt(2 df); with a fixed seed we accept anything below mean + 5 sd (a false alarm has
# probability ~1e-6 for a correct sampler, while a wrong one is off by thousands of sd).
CHI2_SIGMAS = 5.0


def _chi2_bound(df: int) -> float:
    return df + CHI2_SIGMAS * math.sqrt(2 * df)


def _chi2(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def _sequential_first_distinct(draws: list[int], num: int) -> tuple[list[int], int]:
    """TensorFlow's loop: take draws until `num` distinct ids are held; count the draws."""
    seen: list[int] = []
    for tries, value in enumerate(draws, start=1):
        if value not in seen:
            seen.append(value)
            if len(seen) == num:
                return seen, tries
    raise AssertionError("stream too short")


def test_probabilities_sum_to_one_and_match_float64():
    vocab = 793_471
    ids = torch.arange(vocab)
    reference = (torch.log(ids.double() + 2) - torch.log(ids.double() + 1)) / math.log(vocab + 1)
    probs = log_uniform_prob(ids, vocab)
    torch.testing.assert_close(probs.double(), reference, rtol=1e-5, atol=0)
    assert float(log_uniform_prob(ids, vocab, torch.float64).sum()) == pytest.approx(1, abs=1e-9)


def test_draw_frequencies_match_probabilities_small_vocab():
    vocab, draws = 1000, 2_000_000
    sampler = LogUniformSampler(vocab, num_sampled=10)
    ids = sampler.draw_with_replacement(draws, torch.Generator().manual_seed(1))
    counts = torch.bincount(ids, minlength=vocab).double()
    probs = log_uniform_prob(torch.arange(vocab), vocab, torch.float64)
    assert _chi2(counts, probs) < _chi2_bound(vocab - 1)


def test_draw_frequencies_match_probabilities_full_vocab():
    """2M draws over the paper's 793,471 ids, binned on a log scale (bin masses telescope:
    P(lo <= k < hi) = log((hi + 1) / (lo + 1)) / log(V + 1))."""
    vocab, draws = 793_471, 2_000_000
    sampler = LogUniformSampler(vocab, num_sampled=8192)
    ids = sampler.draw_with_replacement(draws, torch.Generator().manual_seed(2))
    assert int(ids.min()) >= 0 and int(ids.max()) < vocab
    edges = torch.unique(torch.logspace(0, math.log10(vocab + 1), 80).floor().long() - 1)
    edges = torch.cat([edges[edges < vocab], torch.tensor([vocab])])  # starts at 0, ends at V
    counts = torch.bucketize(ids, edges[1:], right=True).bincount(minlength=len(edges) - 1)
    probs = torch.log((edges[1:] + 1.0).double() / (edges[:-1] + 1.0)) / math.log(vocab + 1)
    assert float(probs.sum()) == pytest.approx(1.0)
    assert _chi2(counts.double(), probs) < _chi2_bound(len(probs) - 1)


@pytest.mark.parametrize("vocab,num", [(5, 5), (50, 7), (1000, 200)])
def test_first_distinct_equals_sequential_loop(vocab, num):
    generator = torch.Generator().manual_seed(vocab)
    for _ in range(20):
        draws = torch.randint(0, vocab, (400,), generator=generator)
        ids, tries, complete = first_distinct(draws, num)
        expected_ids, expected_tries = _sequential_first_distinct(draws.tolist(), num)
        assert ids.tolist() == expected_ids and int(tries) == expected_tries and bool(complete)
    # The last of the `num` ids drawn last: tries is the whole stream.
    ids, tries, complete = first_distinct(torch.tensor([3, 3, 1, 3, 1, 0]), 3)
    assert ids.tolist() == [3, 1, 0] and int(tries) == 6 and bool(complete)
    assert not bool(first_distinct(torch.zeros(10, dtype=torch.long), 2)[2])


def test_first_distinct_never_waits_for_the_device():
    """Every size is known without reading a value: it runs on the meta device, where any
    data-dependent operation (unique, nonzero, item) raises. On a GPU each such read would
    stall the step's launch queue."""
    ids, tries, complete = first_distinct(torch.empty(1000, dtype=torch.long, device="meta"), 64)
    assert ids.shape == (64,) and ids.device.type == "meta"
    assert tries.shape == complete.shape == () and complete.dtype == torch.bool


@pytest.mark.parametrize("draw_count", [None, 200])
def test_sample_equals_sequential_loop_over_its_draws(monkeypatch, draw_count):
    """The vectorised sample equals TF's loop over the same stream of draws; with too few
    draws (forced) it says it is incomplete instead."""
    sampler = LogUniformSampler(vocab_size=10_000, num_sampled=300)
    if draw_count is not None:
        monkeypatch.setattr(sampler, "_draw_count", draw_count)
    stream: list[int] = []
    draw = sampler.draw_with_replacement

    def recording_draw(*args, **kwargs):
        ids = draw(*args, **kwargs)
        stream.extend(ids.tolist())
        return ids

    monkeypatch.setattr(sampler, "draw_with_replacement", recording_draw)
    sample = sampler.sample(torch.Generator().manual_seed(3))
    assert len(stream) == sampler.draw_count()
    assert sample.ids.dtype == torch.int64 and sample.vocab_size == 10_000
    if draw_count is not None:  # 200 draws cannot hold 300 distinct ids
        assert not bool(sample.complete)
        return
    expected_ids, expected_tries = _sequential_first_distinct(stream, 300)
    assert bool(sample.complete)
    assert sample.ids.tolist() == expected_ids and int(sample.tries) == expected_tries


def test_same_seed_same_sample_set():
    """Ranks seeding their generators identically share one sample set."""
    sampler = LogUniformSampler(vocab_size=793_471, num_sampled=8192)
    first = sampler.sample(torch.Generator().manual_seed(7))
    second = sampler.sample(torch.Generator().manual_seed(7))
    other = sampler.sample(torch.Generator().manual_seed(8))
    assert torch.equal(first.ids, second.ids) and int(first.tries) == int(second.tries)
    assert not torch.equal(first.ids, other.ids)
    assert first.ids.unique().numel() == 8192 and bool(first.complete)
    # The fixed draw count is enough, and not wasteful: about 1.1x the tries it took.
    assert int(first.tries) < sampler.draw_count() < 1.25 * int(first.tries)


@pytest.mark.parametrize("vocab,num", [(1000, 32), (60, 50)])
def test_shortfall_bound_bounds_the_observed_shortfall(vocab, num):
    """For the first draw counts where the bound is between 1% and 50%, 4,000 streams of that
    many draws fall short of `num` distinct ids no more often than the bound allows (3 binomial
    sd); and the sampler's draw count meets SHORTFALL_PROBABILITY."""
    sampler = LogUniformSampler(vocab, num)
    log_keep = torch.log1p(-log_uniform_prob(torch.arange(vocab), vocab, torch.float64))
    generator = torch.Generator().manual_seed(vocab)
    checked = 0
    for draws in range(num, 40 * num, max(1, num // 4)):
        bound = shortfall_bound(draws, num, log_keep)
        if not 0.01 <= bound <= 0.5 or checked == 3:
            continue
        streams = sampler.draw_with_replacement(4000 * draws, generator).view(4000, draws)
        distinct = (torch.zeros(4000, vocab).scatter_(1, streams, 1.0) > 0).sum(1)
        short = float((distinct < num).double().mean())
        assert short <= bound + 3 * math.sqrt(bound * (1 - bound) / 4000), (draws, short, bound)
        checked += 1
    assert checked >= 2
    # The draw count meets the bound, and is the smallest that does (to the bisection's 1%).
    count = sampler.draw_count()
    assert shortfall_bound(count, num, log_keep) <= 1e-12
    assert shortfall_bound(int(0.98 * count), num, log_keep) > 1e-12


def test_a_sample_set_too_close_to_the_vocabulary_is_refused():
    """S = V = 100,000 would need tens of millions of draws per step: a clear error instead."""
    with pytest.raises(ValueError, match="num_sampled=100000 is too close to vocab_size=100000"):
        LogUniformSampler(100_000, 100_000).draw_count()


def test_expected_count_is_stable_and_exact():
    vocab, tries = 793_471, 16_000
    ids = torch.tensor([0, 1, 10, 1000, 100_000, vocab - 1])
    p = log_uniform_prob(ids, vocab, torch.float64)
    reference = torch.log(1 - (1 - p) ** tries)  # fine in float64 for these values
    torch.testing.assert_close(log_expected_count(ids, vocab, tries).double(), reference)
    assert torch.isfinite(log_expected_count(ids, vocab, 1)).all()  # Q = P, tiny for the tail
    assert torch.equal(log_expected_count(ids, vocab, math.inf), torch.zeros(6))
    # TensorFlow's shortcut: tries equal to the sample size (no draw repeated) -> Q = P * S.
    shortcut = torch.log(log_uniform_prob(ids, vocab) * 6)
    for tries_six in (6, torch.tensor(6)):
        assert torch.equal(log_expected_count(ids, vocab, tries_six, num_sampled=6), shortcut)
    torch.testing.assert_close(
        log_expected_count(ids, vocab, torch.tensor(7), num_sampled=6),
        log_expected_count(ids, vocab, 7),
    )
    exhaustive = CandidateSample.exhaustive(vocab)
    assert exhaustive.ids.numel() == vocab and exhaustive.log_expected_count(ids).eq(0).all()


def test_expected_count_matches_monte_carlo_for_fixed_tries():
    """Q(k) = P(id k appears in `tries` draws with replacement), estimated over 20,000 runs
    of 100 draws each; every id within 5 binomial standard deviations."""
    vocab, tries, runs = 500, 100, 20_000
    sampler = LogUniformSampler(vocab, num_sampled=10)
    draws = sampler.draw_with_replacement(runs * tries, torch.Generator().manual_seed(4))
    run_of_draw = torch.arange(runs).repeat_interleave(tries)
    appeared = torch.zeros(runs, vocab, dtype=torch.bool)
    appeared[run_of_draw, draws] = True
    frequency = appeared.double().mean(0)
    q = log_expected_count(torch.arange(vocab), vocab, tries).double().exp()
    std = torch.sqrt(q * (1 - q) / runs)
    assert float(((frequency - q).abs() / std).max()) < 5.0


def test_unique_sampler_inclusion_matches_expected_count():
    """How often the unique sampler includes id k matches the mean Q(k) at its tries (TF's
    correction): 3,000 sample sets of 50 from 1,000 ids, within 5 binomial sd per id."""
    vocab, num, runs = 1000, 50, 3000
    sampler = LogUniformSampler(vocab, num)
    generator = torch.Generator().manual_seed(5)
    every_id = torch.arange(vocab)
    included = torch.zeros(vocab, dtype=torch.float64)
    q_sum = torch.zeros(vocab, dtype=torch.float64)
    for _ in range(runs):
        sample = sampler.sample(generator)
        included[sample.ids] += 1
        q_sum += sample.log_expected_count(every_id).double().exp()
    frequency, q = included / runs, q_sum / runs
    std = torch.sqrt(q * (1 - q) / runs)
    assert float(((frequency - q).abs() / std).max()) < 5.0


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_sampled"):
        LogUniformSampler(vocab_size=10, num_sampled=11)
    with pytest.raises(ValueError, match="num_sampled"):
        LogUniformSampler(vocab_size=10, num_sampled=0)


def test_every_id_can_be_sampled():
    sample = LogUniformSampler(vocab_size=50, num_sampled=50).sample(torch.Generator())
    assert sorted(sample.ids.tolist()) == list(range(50)) and bool(sample.complete)
    assert int(sample.tries) >= 50
