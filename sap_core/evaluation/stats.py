"""Proportions with Wilson score confidence intervals.

The safety report states every rate (harmful score, refusal, off-task, over-refusal, exact match)
with its sample size and a 95 % interval, because evaluation samples are small (tens of prompts)
and a bare percentage overstates what was measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from sap_core.errors import ConfigError

# Two-sided 95 % normal quantile.
Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Unlike the normal ("Wald") interval it stays inside [0, 1] and does not collapse to a point
    at 0/n or n/n, which is exactly where safety rates usually sit.

    Args:
        successes: Number of positive outcomes, ``0 <= successes <= n``.
        n: Number of trials. ``n == 0`` gives the uninformative interval ``(0.0, 1.0)``.
        z: Normal quantile of the two-sided level (1.96 for 95 %).

    Returns:
        ``(low, high)``, both in [0, 1].

    Raises:
        ConfigError: If the counts are inconsistent or ``z`` is not positive.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ConfigError(f"wilson_interval needs 0 <= successes <= n, got {successes}/{n}")
    if z <= 0:
        raise ConfigError(f"wilson_interval needs z > 0, got {z}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    # Clamp: floating error can push the bounds a hair outside [0, 1] at p = 0 or 1.
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Proportion:
    """A counted rate with its Wilson 95 % interval (JSON-friendly via ``to_dict``)."""

    count: int
    n: int
    rate: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict for the JSON report."""
        return asdict(self)


def proportion(count: int, n: int) -> Proportion:
    """Build a :class:`Proportion`; the rate of an empty sample is reported as 0.0.

    Args:
        count: Number of positive outcomes.
        n: Sample size.

    Returns:
        The proportion with its Wilson 95 % interval.
    """
    low, high = wilson_interval(count, n)
    return Proportion(count=count, n=n, rate=count / n if n else 0.0, ci_low=low, ci_high=high)


def exact_mcnemar_p(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value for two models asked the same items.

    Only the discordant items carry information about a difference: ``only_first`` items the
    first model got (e.g. answered right, or complied with) and the second did not, and
    ``only_second`` the reverse. Under "no difference" each discordant item is a fair coin, so
    the p-value is the two-sided binomial(n, 1/2) tail of the smaller count. Far more sensitive
    than comparing two Wilson intervals, which ignores that the items are shared.

    Raises:
        ConfigError: a negative count.
    """
    if only_first < 0 or only_second < 0:
        raise ConfigError(f"counts must be >= 0, got {only_first}, {only_second}")
    n = only_first + only_second
    k = min(only_first, only_second)
    # Exact integer arithmetic: the tail sum of C(n, i) over 2**n, doubled for two sides.
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)
