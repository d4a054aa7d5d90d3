"""Aggregations: Wilson intervals, rates, bootstrap, per-family rates, pass@k."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from unlearn_audit.scoring.stats import (
    RateSummary,
    bootstrap_ci,
    by_family,
    pass_at_k,
    pass_at_k_curve,
    rate_with_ci,
    wilson_interval,
)

Z95 = 1.959963984540054


def _wilson_closed_form(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return center - half, center + half


# -- Wilson ---------------------------------------------------------------------------------


def test_wilson_hand_value():
    # 12 of 300 (the retain model's corrected leak count on TOFU forget10)
    lo, hi = wilson_interval(12, 300)
    assert (lo, hi) == pytest.approx((0.0230273, 0.0686042), abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 2000), data=st.data())
def test_wilson_matches_closed_form_and_scipy(n, data):
    k = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(k, n)
    clo, chi = _wilson_closed_form(k, n)
    assert lo == pytest.approx(max(0.0, clo), abs=1e-12)
    assert hi == pytest.approx(min(1.0, chi), abs=1e-12)
    ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-9)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_other_confidence_and_bad_input():
    lo90, hi90 = wilson_interval(5, 20, confidence=0.90)
    lo95, hi95 = wilson_interval(5, 20)
    assert lo95 < lo90 < 0.25 < hi90 < hi95
    ref = sps.binomtest(5, 20).proportion_ci(confidence_level=0.90, method="wilson")
    assert (lo90, hi90) == pytest.approx((ref.low, ref.high), abs=1e-9)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    for args in [(3, 2), (-1, 5), (1, 5, 1.0), (1, 5, 0.0)]:
        with pytest.raises(ValueError):
            wilson_interval(*args)


# -- rates ----------------------------------------------------------------------------------


def test_rate_with_ci_counts_excluded():
    s = rate_with_ci([True, False, None, True])
    assert s.value == pytest.approx(2 / 3)
    assert (s.n, s.excluded, s.successes) == (3, 1, 2)
    assert s.ci == pytest.approx(wilson_interval(2, 3))
    assert s.to_dict() == {"value": 2 / 3, "ci": list(s.ci), "n": 3, "excluded": 1, "successes": 2}


@pytest.mark.parametrize("flags", [[], [None, None], iter([])])
def test_rate_with_ci_empty(flags):
    s = rate_with_ci(flags)
    assert s == RateSummary(
        value=None, ci=None, n=0, excluded=len(flags) if isinstance(flags, list) else 0
    )
    assert s.to_dict()["value"] is None and s.to_dict()["ci"] is None


def test_by_family_with_keys_and_callables():
    records = [
        {"family": "genre", "leaked": True},
        {"family": "genre", "leaked": False},
        {"family": "awards", "leaked": None},
        {"family": None, "leaked": True},
    ]
    out = by_family(records, "family", "leaked")
    assert list(out) == ["awards", "genre", "other"]
    assert out["genre"].value == 0.5 and out["genre"].n == 2
    assert out["awards"].value is None and out["awards"].excluded == 1
    assert out["other"].value == 1.0

    class Rec:
        def __init__(self, fam, flag):
            self.fam, self.flag = fam, flag

    objs = [Rec("a", True), Rec("a", True), Rec("b", False)]
    assert {k: v.value for k, v in by_family(objs, "fam", "flag").items()} == {"a": 1.0, "b": 0.0}
    assert by_family(objs, lambda r: r.fam.upper(), lambda r: r.flag)["A"].n == 2
    assert by_family([], "family", "leaked") == {}


# -- bootstrap ------------------------------------------------------------------------------


def test_bootstrap_deterministic_and_covers_mean():
    values = np.random.default_rng(1).normal(loc=3.0, scale=1.0, size=200)
    a = bootstrap_ci(values, seed=7)
    b = bootstrap_ci(values, seed=7)
    assert a == b
    assert a != bootstrap_ci(values, seed=8)
    lo, hi = a
    assert lo < values.mean() < hi
    assert lo < 3.0 < hi
    assert hi - lo == pytest.approx(2 * 1.96 / math.sqrt(200), rel=0.25)
    blo, bhi = bootstrap_ci(values, seed=7, method="BCa")
    assert blo < values.mean() < bhi


def test_bootstrap_other_statistic():
    values = list(range(1, 102))
    lo, hi = bootstrap_ci(values, statistic=np.median, n_resamples=500)
    assert lo <= 51 <= hi


@pytest.mark.parametrize(
    ("values", "expected"),
    [([4.0], (4.0, 4.0)), ([0.5, 0.5, 0.5], (0.5, 0.5)), ([1, 1], (1.0, 1.0))],
)
def test_bootstrap_degenerate(values, expected):
    assert bootstrap_ci(values) == expected
    assert bootstrap_ci(values, groups=["a"] * len(values)) == expected


def test_bootstrap_empty():
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert all(math.isnan(x) for x in bootstrap_ci([], groups=[]))


def test_cluster_bootstrap_over_authors():
    rng = np.random.default_rng(0)
    # 20 authors x 20 items; strong author effect -> items within an author are correlated
    author_means = rng.normal(0.0, 1.0, size=20)
    values = np.concatenate([m + rng.normal(0.0, 0.1, size=20) for m in author_means])
    groups = np.repeat([f"author{i}" for i in range(20)], 20).tolist()
    c1 = bootstrap_ci(values, groups=groups, seed=3, n_resamples=1000)
    assert c1 == bootstrap_ci(values, groups=groups, seed=3, n_resamples=1000)
    assert c1[0] < values.mean() < c1[1]
    items = bootstrap_ci(values, seed=3, n_resamples=1000)
    # resampling whole authors sees the between-author spread; item resampling hides it
    assert (c1[1] - c1[0]) > 2.5 * (items[1] - items[0])
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci(values, groups=groups[:-1])


# -- pass@k ---------------------------------------------------------------------------------


def _pass_at_k_brute(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 10), data=st.data())
def test_pass_at_k_equals_brute_force(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_brute(n, c, k), abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_edges_and_large_n():
    assert pass_at_k(16, 0, 16) == 0.0
    assert pass_at_k(16, 1, 16) == 1.0
    assert pass_at_k(16, 4, 1) == pytest.approx(0.25)
    assert pass_at_k(10_000, 1, 100) == pytest.approx(0.01)  # C(10000, 100) would overflow a float
    assert pass_at_k(10_000, 3, 5000) == pytest.approx(1 - 0.5**3, rel=1e-3)
    assert math.isnan(pass_at_k(0, 0, 1))
    for args in [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)]:
        with pytest.raises(ValueError):
            pass_at_k(*args)


def test_pass_at_k_curve():
    counts = [(4, 0), (4, 1), (4, 4), (2, 1)]
    curve = pass_at_k_curve(counts, [1, 2, 4])
    assert curve[0] == pytest.approx((0 + 0.25 + 1 + 0.5) / 4)
    assert curve[1] == pytest.approx((0 + 0.5 + 1 + 1) / 4)
    assert curve[2] == pytest.approx((0 + 1 + 1) / 3)  # the 2-sample prompt cannot estimate k=4
    assert curve == sorted(curve)  # pass@k never falls with k
    assert all(math.isnan(x) for x in pass_at_k_curve([], [1, 4]))
    assert math.isnan(pass_at_k_curve([(2, 1)], [3])[0])
    assert pass_at_k_curve(counts, []) == []
