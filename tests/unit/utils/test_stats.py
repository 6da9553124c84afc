"""Report statistics against published reference values and float64 brute force."""

from __future__ import annotations

import math

import pytest

from nemo_distill.utils.stats import (
    estimate_proportion,
    mcnemar_exact,
    mcnemar_from_counts,
    two_proportion_ztest,
    wilson_interval,
)


@pytest.mark.parametrize(
    "successes,n,low,high",
    [
        # Newcombe, R. G. (1998), "Two-sided confidence intervals for the single proportion:
        # comparison of seven methods", Statistics in Medicine 17:857-872, Table II, method 3
        # (Wilson score, no continuity correction); also R: prop.test(81, 263, correct=FALSE).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombe_1998(successes, n, low, high):
    got_low, got_high = wilson_interval(successes, n)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def _wilson_by_hand(k: int, n: int, z: float) -> tuple[float, float]:
    # (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), in float64
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


@pytest.mark.parametrize("successes,n", [(135, 500), (162, 500), (1, 3), (7, 7), (250, 1319)])
def test_wilson_interval_matches_the_formula(successes, n):
    z = 1.959963984540054  # the 0.975 standard-normal quantile
    assert wilson_interval(successes, n) == pytest.approx(_wilson_by_hand(successes, n, z), abs=1e-12)
    # 90%: z = 1.6448536269514722
    assert wilson_interval(successes, n, confidence=0.90) == pytest.approx(_wilson_by_hand(successes, n, 1.6448536269514722), abs=1e-12)


def test_estimate_proportion_and_edge_cases():
    estimate = estimate_proportion(135, 500)
    assert (estimate.successes, estimate.n, estimate.proportion, estimate.confidence) == (135, 500, 0.27, 0.95)
    assert estimate.ci_low < 0.27 < estimate.ci_high
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert estimate_proportion(0, 0).proportion == 0.0
    assert wilson_interval(5, 5)[1] == 1.0
    for n in range(1, 60):  # the interval always contains the estimate, exactly at 0 and 1
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0
    with pytest.raises(ValueError, match="successes=6, n=5"):
        wilson_interval(6, 5)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 5, confidence=95)


def _mcnemar_exact_by_hand(b: int, c: int) -> float:
    # Two-sided exact test: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1.
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def test_mcnemar_exact_small_tables_by_hand():
    # b=0, c=5: 2 * (1/2)^5 = 0.0625.   b=1, c=5: 2 * (1 + 6) / 64 = 0.21875.
    assert mcnemar_from_counts(10, 0, 5, 10).p_value == pytest.approx(0.0625, abs=1e-15)
    assert mcnemar_from_counts(10, 1, 5, 10).p_value == pytest.approx(0.21875, abs=1e-15)
    assert mcnemar_from_counts(10, 3, 3, 10).p_value == 1.0
    assert mcnemar_from_counts(10, 0, 0, 10).p_value == 1.0  # no discordant pair


@pytest.mark.parametrize("b,c", [(121, 59), (2, 9), (30, 41), (0, 1), (17, 17)])
def test_mcnemar_exact_matches_the_binomial_sum(b, c):
    # (121, 59): the discordant cells of Wikipedia's McNemar example table [[101, 121], [59, 33]].
    assert mcnemar_from_counts(101, b, c, 33).p_value == pytest.approx(_mcnemar_exact_by_hand(b, c), rel=1e-10)


def test_mcnemar_exact_from_per_item_correctness():
    a = [True, True, False, False, True, False, True]
    b = [True, False, False, True, False, False, False]
    result = mcnemar_exact(a, b)
    assert (result.both, result.only_a, result.only_b, result.neither, result.n) == (1, 3, 1, 2, 7)
    assert result.p_value == pytest.approx(_mcnemar_exact_by_hand(3, 1))  # 2 * 5/16 = 0.625
    assert result.p_value == pytest.approx(0.625)
    with pytest.raises(ValueError, match="same test items"):
        mcnemar_exact([True], [True, False])


def test_two_proportion_ztest_reproduces_the_seed_study():
    # Seed 004 (n=500 per condition): Oracle 32.4% (162) vs Baseline 27.0% (135), quoted p~0.06.
    # By hand: pooled p = 297/1000, se = sqrt(0.297 * 0.703 * (2/500)) = 0.0288991,
    # z = 0.054 / se = 1.86856, p = erfc(z / sqrt 2) = 0.06168.
    result = two_proportion_ztest(162, 500, 135, 500)
    assert result.z == pytest.approx(1.86856, abs=1e-5)
    assert result.p_value == pytest.approx(0.06168, abs=1e-5)
    # Baseline 27.0% (135) vs Base 21.0% (105), quoted p~0.03: pooled 0.24, z = 2.22131, p = 0.02633.
    result = two_proportion_ztest(135, 500, 105, 500)
    assert result.z == pytest.approx(2.22131, abs=1e-5)
    assert result.p_value == pytest.approx(0.02633, abs=1e-5)
    assert two_proportion_ztest(105, 500, 135, 500).z == pytest.approx(-2.22131, abs=1e-5)  # sign: A - B


@pytest.mark.parametrize("k1,n1,k2,n2", [(45, 100, 30, 90), (1, 7, 6, 11), (300, 1319, 280, 1319)])
def test_two_proportion_ztest_matches_the_formula(k1, n1, k2, n2):
    pooled = (k1 + k2) / (n1 + n2)
    z = (k1 / n1 - k2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    result = two_proportion_ztest(k1, n1, k2, n2)
    assert result.z == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-10)


def test_two_proportion_ztest_degenerate_cases():
    assert two_proportion_ztest(0, 10, 0, 20) == two_proportion_ztest(10, 10, 20, 20)
    assert two_proportion_ztest(0, 10, 0, 20).p_value == 1.0
    with pytest.raises(ValueError, match="n_a=0"):
        two_proportion_ztest(0, 0, 1, 2)
