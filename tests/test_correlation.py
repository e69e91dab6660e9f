"""Pearson / Spearman on hand-checked cases."""

from __future__ import annotations

import math

import pytest

from vipyloqwen_tools.train.correlation import average_ranks, pearson, spearman


def test_correlations_hand_checked():
    # Spearman = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # Pearson of (1,2,3) vs (2,4,7): cov sum 5, sxx 2, syy 114/9.
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert average_ranks([3.0, 1.0, 1.0]).tolist() == [3.0, 1.5, 1.5]
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
