"""The paired test that compares two adapters asked the same items."""

from __future__ import annotations

import math

import pytest

from sap_core.errors import ConfigError
from sap_core.evaluation.stats import exact_mcnemar_p


def test_no_discordant_items_is_no_evidence_of_a_difference() -> None:
    assert exact_mcnemar_p(0, 0) == 1.0
    assert exact_mcnemar_p(5, 5) == 1.0


def test_the_p_value_is_the_two_sided_binomial_tail_of_the_discordant_items() -> None:
    # 10 discordant items all one way: 2 * (1/2)**10.
    assert exact_mcnemar_p(10, 0) == pytest.approx(2 / 1024)
    # 8 vs 2: 2 * (C(10,0) + C(10,1) + C(10,2)) / 2**10.
    assert exact_mcnemar_p(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    # Symmetric in its arguments.
    assert exact_mcnemar_p(2, 8) == exact_mcnemar_p(8, 2)


def test_a_large_difference_on_hundreds_of_items_stays_exact() -> None:
    # 39 vs 13 (two adapters' right answers on 200 shared questions, docs/results.md).
    p = exact_mcnemar_p(39, 13)
    assert p == pytest.approx(2 * sum(math.comb(52, i) for i in range(14)) / 2**52)
    assert 0.0003 < p < 0.0005


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ConfigError):
        exact_mcnemar_p(-1, 3)
