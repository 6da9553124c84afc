"""Statistics for comparing evaluation accuracies: Wilson intervals, exact McNemar, two-proportion z.

Thin, typed wrappers over statsmodels (a maintained implementation, tested against the published
values in ``tests/unit/utils/test_stats.py``) so reports never carry hand-written formulas:

* :func:`wilson_interval`      -- 95% (by default) Wilson score interval of one proportion; the same
  numbers as R's ``prop.test(k, n, correct=FALSE)$conf.int`` and Newcombe (1998), method 3.
* :func:`mcnemar_exact`        -- paired comparison of two conditions scored on the SAME test items:
  two-sided exact binomial test on the discordant pairs (items exactly one condition got right).
* :func:`two_proportion_ztest` -- unpaired comparison of two accuracies (pooled-variance z-test,
  two-sided); equal to R's ``prop.test(c(k1, k2), c(n1, n2), correct=FALSE)`` (its X^2 = z^2).

Use McNemar when both conditions answered the same items (it is the right test there: the z-test
ignores the pairing and is conservative when the conditions' errors are correlated); the z-test is
reported too because it is what the seed's hand-run study quoted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class ProportionEstimate:
    """``successes`` out of ``n`` with its Wilson interval (all proportions in [0, 1])."""

    successes: int
    n: int
    proportion: float  # successes / n; 0.0 when n == 0
    ci_low: float
    ci_high: float
    confidence: float  # e.g. 0.95


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of condition A vs B on paired items.

    ``only_a`` = items A got right and B wrong, ``only_b`` the reverse; the two concordant counts do
    not enter the test. ``p_value`` is two-sided; 1.0 when there is no discordant pair.
    """

    both: int
    only_a: int
    only_b: int
    neither: int
    p_value: float

    @property
    def n(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither


@dataclass(frozen=True)
class ZTestResult:
    """Pooled two-proportion z-test of ``p_a - p_b``; ``z > 0`` when A is higher. Two-sided p."""

    z: float
    p_value: float


def _check_counts(successes: int, n: int, name: str) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"{name}: need 0 <= successes <= n, got successes={successes}, n={n}")


def wilson_interval(successes: int, n: int, *, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of ``successes / n`` (no continuity correction).

    ``n == 0`` gives the uninformative ``(0.0, 1.0)`` instead of statsmodels' NaNs.
    """
    _check_counts(successes, n, "wilson_interval")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"wilson_interval: confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, n, alpha=1.0 - confidence, method="wilson")
    # Clip float round-off: statsmodels gives e.g. low = 1e-17 for 0 successes; the interval must
    # stay inside [0, 1] and contain the point estimate (plots draw p - low as an error bar).
    proportion = successes / n
    return max(0.0, min(float(low), proportion)), min(1.0, max(float(high), proportion))


def estimate_proportion(successes: int, n: int, *, confidence: float = DEFAULT_CONFIDENCE) -> ProportionEstimate:
    """``successes / n`` with its Wilson interval, as one record."""
    low, high = wilson_interval(successes, n, confidence=confidence)
    return ProportionEstimate(successes, n, successes / n if n else 0.0, low, high, confidence)


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemarResult:
    """Exact (binomial) McNemar test from per-item correctness of two conditions.

    ``correct_a[i]`` and ``correct_b[i]`` must score the same test item ``i``.
    """
    if len(correct_a) != len(correct_b):
        raise ValueError(
            f"mcnemar_exact: {len(correct_a)} vs {len(correct_b)} items; both conditions must be scored on the same test items, in the same order"
        )
    both = sum(1 for a, b in zip(correct_a, correct_b) if a and b)
    only_a = sum(1 for a, b in zip(correct_a, correct_b) if a and not b)
    only_b = sum(1 for a, b in zip(correct_a, correct_b) if b and not a)
    neither = len(correct_a) - both - only_a - only_b
    return mcnemar_from_counts(both, only_a, only_b, neither)


def mcnemar_from_counts(both: int, only_a: int, only_b: int, neither: int) -> McNemarResult:
    """Exact McNemar test from the 2x2 table ``[[both, only_a], [only_b, neither]]``."""
    if min(both, only_a, only_b, neither) < 0:
        raise ValueError(f"mcnemar_from_counts: counts must be >= 0, got {(both, only_a, only_b, neither)}")
    if only_a + only_b == 0:
        return McNemarResult(both, only_a, only_b, neither, 1.0)  # no discordant pair: no evidence either way
    from statsmodels.stats.contingency_tables import mcnemar

    result = mcnemar([[both, only_a], [only_b, neither]], exact=True)
    return McNemarResult(both, only_a, only_b, neither, min(1.0, float(result.pvalue)))


def two_proportion_ztest(successes_a: int, n_a: int, successes_b: int, n_b: int) -> ZTestResult:
    """Two-sided pooled z-test of ``successes_a / n_a`` vs ``successes_b / n_b``.

    When the pooled proportion is 0 or 1 (both all wrong or both all right) the difference is
    exactly 0 with zero variance: ``z = 0, p = 1`` rather than statsmodels' NaN.
    """
    _check_counts(successes_a, n_a, "two_proportion_ztest (A)")
    _check_counts(successes_b, n_b, "two_proportion_ztest (B)")
    if n_a == 0 or n_b == 0:
        raise ValueError(f"two_proportion_ztest: both samples need n >= 1, got n_a={n_a}, n_b={n_b}")
    pooled = (successes_a + successes_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):
        return ZTestResult(0.0, 1.0)
    from statsmodels.stats.proportion import proportions_ztest

    z, p_value = proportions_ztest([successes_a, successes_b], [n_a, n_b], alternative="two-sided")
    return ZTestResult(float(z), float(p_value))
