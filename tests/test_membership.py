"""Membership-inference scorers, privleak, exact memorisation and extraction strength.

Hand-computed cases: each number below is worked out in the comment beside it, so a
change to a definition shows up as a wrong number, not as a moved threshold.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from unlearn_audit.scoring.membership import (
    auc_bootstrap_ci,
    loss_statistic,
    mia_auc,
    min_k_plus_plus_statistic,
    min_k_statistic,
    privleak,
    reference_statistic,
    zlib_statistic,
)
from unlearn_audit.scoring.memorization import exact_memorization, extraction_strength


def test_loss_is_the_mean_nll():
    assert loss_statistic([-1.0, -2.0, -3.0]) == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    assert math.isnan(loss_statistic([]))


def test_zlib_divides_by_the_compressed_length():
    # zlib.compress(b"abc") is 11 bytes (2 header + 5 deflate + 4 adler32).
    assert zlib_statistic([-1.0, -2.0, -3.0], "abc") == pytest.approx(2.0 / 11)


def test_min_k_averages_the_lowest_share():
    lp = [-0.1, -5.0, -2.0, -0.5, -3.0]
    # k = 0.4 of 5 tokens keeps int(2.0) = 2: -5 and -3, mean -4, negated.
    assert min_k_statistic(lp, k=0.4) == pytest.approx(4.0)
    # int(0.5) = 0 tokens: at least one is kept, the lowest.
    assert min_k_statistic(lp, k=0.1) == pytest.approx(5.0)
    # k = 1 is the LOSS statistic.
    assert min_k_statistic(lp, k=1.0) == pytest.approx(loss_statistic(lp))
    assert math.isnan(min_k_statistic([]))
    with pytest.raises(ValueError, match="fraction k"):
        min_k_statistic(lp, k=0)


def test_min_k_plus_plus_standardises_by_the_vocabulary():
    # z = (-1 - -3) / 2 = 1 and (-2 - -1) / 0.5 = -2; k = 0.4 of 2 keeps 1: -(-2) = 2.
    assert min_k_plus_plus_statistic([-1.0, -2.0], [-3.0, -1.0], [2.0, 0.5]) == pytest.approx(2.0)
    # A zero spread is floored at variance 1e-6 (std 1e-3): (-1 - -1.5) / 1e-3 = 500.
    assert min_k_plus_plus_statistic([-1.0], [-1.5], [0.0]) == pytest.approx(-500.0)
    with pytest.raises(ValueError, match="one mean and one spread per token"):
        min_k_plus_plus_statistic([-1.0, -2.0], [-1.0], [1.0])


def test_reference_is_the_difference_of_losses():
    assert reference_statistic(3.0, 1.25) == pytest.approx(1.75)


def test_auc_counts_forget_below_holdout_with_ties_as_half():
    # Pairs (forget, holdout) with forget lower: (1,2) (1,4) (2,4) (3,4), and (2,2) ties: 4.5 / 6.
    assert mia_auc([1.0, 2.0, 3.0], [2.0, 4.0]) == pytest.approx(0.75)
    assert mia_auc([1.0, 2.0], [3.0, 4.0]) == 1.0  # every forget item more familiar
    assert mia_auc([3.0, 4.0], [1.0, 2.0]) == 0.0  # over-unlearned: less familiar than unseen text
    assert mia_auc([1.0, float("nan")], [2.0]) == 1.0  # nan items dropped
    assert math.isnan(mia_auc([], [1.0]))


def test_auc_matches_open_unlearnings_labelling():
    """open-unlearning labels the holdout set 1 and scores the raw loss-signed statistic."""
    rng = np.random.default_rng(3)
    f, h = rng.normal(1.0, 1.0, 30), rng.normal(1.5, 1.0, 25)
    theirs = roc_auc_score(np.r_[np.zeros(30), np.ones(25)], np.r_[f, h])
    assert mia_auc(f, h) == pytest.approx(theirs, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=12), st.lists(st.integers(0, 5), min_size=1, max_size=12))
def test_fast_bootstrap_auc_equals_sklearn(f, h):
    from unlearn_audit.scoring.membership import _auc_fast

    f, h = np.asarray(f, float), np.asarray(h, float)
    assert _auc_fast(f, h) == pytest.approx(mia_auc(f, h), abs=1e-12)


def test_auc_interval():
    rng = np.random.default_rng(0)
    f, h = rng.normal(0.0, 1.0, 40), rng.normal(1.0, 1.0, 40)
    lo, hi = auc_bootstrap_ci(f, h, seed=1)
    assert lo < mia_auc(f, h) < hi
    assert 0.05 < hi - lo < 0.4  # 40 + 40 items: about +-0.1
    assert auc_bootstrap_ci(f, h, seed=1) == (lo, hi)  # seeded
    assert auc_bootstrap_ci([1.0, 2.0], [3.0, 4.0]) == (1.0, 1.0)  # perfect separation stays perfect
    assert auc_bootstrap_ci([1.0], [3.0, 4.0]) is None
    # By author: two authors per side, items of one author identical, so the cluster
    # replicates can only be the AUCs of author mixes: all four authors' values apart.
    cl = auc_bootstrap_ci([1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 4.0, 4.0], seed=0,
                          forget_groups=["a", "a", "b", "b"], holdout_groups=["c", "c", "d", "d"])
    # Possible replicate AUCs: 0 (forget all 3, holdout all 2), 0.5, 1 (1 vs 2 or 4, 3 vs 4)...
    assert cl[0] == 0.0 and cl[1] == 1.0
    # Fewer than two authors on a side: no interval.
    assert auc_bootstrap_ci([1.0, 2.0], [3.0, 4.0], forget_groups=["a", "a"], holdout_groups=["c", "d"]) is None


def test_privleak_sign_convention():
    # ((1 - 0.75) - (1 - 0.5)) / (1 - 0.5) * 100 = (0.25 - 0.5) / 0.5 * 100 = -50.
    assert privleak(0.75, 0.5) == pytest.approx(-50.0)
    assert privleak(0.25, 0.5) == pytest.approx(50.0)  # over-unlearning is positive
    assert privleak(0.75) == pytest.approx(-50.0)  # no retain model: open-unlearning's 0.5
    assert privleak(0.6, 0.6) == pytest.approx(0.0)
    # (0.1 - 0.4) / 0.4 * 100 = -75.
    assert privleak(0.9, 0.6) == pytest.approx(-75.0)
    # open-unlearning's 1e-10 guard: a retain AUC of 1 does not divide by zero.
    assert privleak(0.5, 1.0) == pytest.approx(0.5 / 1e-10 * 100)


def test_exact_memorization():
    assert exact_memorization([1, 9, 3, 4], [1, 2, 3, 4]) == pytest.approx(0.75)
    assert exact_memorization([], []) != exact_memorization([], [])  # nan
    with pytest.raises(ValueError, match="one prediction per gold token"):
        exact_memorization([1], [1, 2])


@pytest.mark.parametrize(
    ("predicted", "es"),
    [
        ([1, 2, 3, 4], 1.0),  # whole answer from the question alone: k = 0
        ([9, 2, 3, 4], 0.75),  # needs the first gold token: k = 1, 1 - 1/4
        ([1, 9, 3, 4], 0.5),  # the suffix from index 2 matches: 1 - 2/4
        ([1, 2, 3, 9], 0.25),  # no suffix matches: open-unlearning's loop stops at k = 3
    ],
)
def test_extraction_strength(predicted, es):
    assert extraction_strength(predicted, [1, 2, 3, 4]) == pytest.approx(es)


def test_extraction_strength_empty_answer():
    assert extraction_strength([], []) == 0.0
