"""Aggregations: per-item records -> numbers with confidence intervals.

Every function here accepts empty input and answers it with ``None`` / ``nan`` and a
count of 0 instead of raising, so a view with nothing to score still reports (the
``inspect_ai`` habit: metrics handle empty input). Intervals follow views.md: Wilson
for proportions, bootstrap over items or over authors (a cluster bootstrap) for
everything else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _sps

__all__ = [
    "RateSummary",
    "bootstrap_ci",
    "by_family",
    "pass_at_k",
    "pass_at_k_curve",
    "rate_with_ci",
    "wilson_interval",
]

_NAN = float("nan")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Definition: with ``p = successes / n`` and ``z`` the two-sided normal quantile of
    ``confidence``,
    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``, clipped to [0, 1].
    No continuity correction; it equals
    ``scipy.stats.binomtest(successes, n).proportion_ci(confidence, method="wilson")``.

    Source: E. B. Wilson, "Probable inference, the law of succession, and statistical
    inference", JASA 22 (1927).

    Args:
        successes: number of successes, ``0 <= successes <= n``.
        n: number of trials. ``n == 0`` gives ``(nan, nan)``.
        confidence: coverage of the interval, in (0, 1).

    Returns:
        ``(lo, hi)``.

    Raises:
        ValueError: ``successes`` outside ``[0, n]`` or ``confidence`` outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (_NAN, _NAN)
    z = float(_sps.norm.ppf(0.5 + confidence / 2.0))
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return (lo, hi)


@dataclass(frozen=True)
class RateSummary:
    """A proportion with its Wilson interval and counts.

    Attributes:
        value: ``successes / n``; ``None`` when ``n == 0``.
        ci: the 95% (or requested) Wilson interval; ``None`` when ``n == 0``.
        n: number of scored records (excluded ones not counted).
        excluded: number of records left out (flag ``None``).
        successes: number of ``True`` flags.
    """

    value: float | None
    ci: tuple[float, float] | None
    n: int
    excluded: int
    successes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (no nan: missing values are ``None``)."""
        return {
            "value": self.value,
            "ci": None if self.ci is None else [self.ci[0], self.ci[1]],
            "n": self.n,
            "excluded": self.excluded,
            "successes": self.successes,
        }


def rate_with_ci(flags: Iterable[bool | None], confidence: float = 0.95) -> RateSummary:
    """Share of ``True`` among the non-``None`` flags, with a Wilson interval.

    Definition: ``None`` marks a record excluded from the rate (views.md: an item with
    empty novel content is excluded and counted as ``excluded``); the rate is
    ``#True / #(True or False)``.

    Args:
        flags: one entry per record: ``True`` / ``False`` / ``None`` (excluded).
        confidence: coverage of the Wilson interval.

    Returns:
        A :class:`RateSummary`; with nothing scored, ``value`` and ``ci`` are ``None``.
    """
    n = excluded = successes = 0
    for flag in flags:
        if flag is None:
            excluded += 1
            continue
        n += 1
        successes += bool(flag)
    if n == 0:
        return RateSummary(value=None, ci=None, n=0, excluded=excluded, successes=0)
    return RateSummary(
        value=successes / n,
        ci=wilson_interval(successes, n, confidence),
        n=n,
        excluded=excluded,
        successes=successes,
    )


def _bootstrap_kwargs(seed: int) -> dict[str, Any]:
    # scipy >= 1.15 takes ``rng``; older releases only ``random_state``.
    try:
        import inspect

        if "rng" in inspect.signature(_sps.bootstrap).parameters:
            return {"rng": np.random.default_rng(seed)}
    except (TypeError, ValueError):  # pragma: no cover - signature unavailable
        pass
    return {"random_state": np.random.default_rng(seed)}  # pragma: no cover


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[..., float] = np.mean,
    groups: Sequence[Hashable] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    method: str = "percentile",
) -> tuple[float, float]:
    """Bootstrap confidence interval of ``statistic(values)``.

    Definition: without ``groups``, items are resampled with replacement
    (``scipy.stats.bootstrap``, ``method`` ``"percentile"`` or ``"BCa"``). With
    ``groups`` (e.g. the author of each item) it is a cluster bootstrap: whole groups
    are resampled with replacement, their items pooled, and the statistic recomputed;
    the interval is the percentile interval of those replicates. Items of one author
    are not independent, so the cluster interval is the honest one for per-author data.

    Source: Efron & Tibshirani, "An Introduction to the Bootstrap" (1993); cluster
    resampling: Davison & Hinkley, "Bootstrap Methods and their Application" (1997), §3.8.

    Args:
        values: one number per item; ``nan`` entries are kept (the statistic decides).
        statistic: maps a 1-d array to a number. ``np.mean`` by default.
        groups: optional group label per item (same length as ``values``).
        n_resamples: number of bootstrap replicates.
        seed: seed of the resampling; the same seed gives the same interval.
        confidence: coverage of the interval.
        method: ``"percentile"`` or ``"BCa"`` (item bootstrap only).

    Returns:
        ``(lo, hi)``. Empty input gives ``(nan, nan)``; fewer than two items (or
        groups), or all values equal, gives ``(v, v)`` with ``v = statistic(values)``.

    Raises:
        ValueError: ``groups`` of a different length than ``values``.
    """
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.size == 0:
        return (_NAN, _NAN)
    point = float(statistic(arr))
    if groups is not None and len(groups) != arr.size:
        raise ValueError(
            f"groups has {len(groups)} labels but values has {arr.size} entries; "
            "pass one group label per value"
        )
    n_units = arr.size if groups is None else len(set(groups))
    all_equal = bool(np.all(arr == arr[0])) or bool(np.all(np.isnan(arr)))
    if n_units < 2 or all_equal:
        return (point, point)
    alpha = (1.0 - confidence) / 2.0
    if groups is None:
        res = _sps.bootstrap(
            (arr,),
            statistic,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method=method,
            **_bootstrap_kwargs(seed),
        )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isnan(lo) or math.isnan(hi):  # BCa on a degenerate distribution
            reps = np.asarray(res.bootstrap_distribution, dtype=float)
            lo, hi = (float(x) for x in np.nanquantile(reps, [alpha, 1.0 - alpha]))
        return (lo, hi)
    labels: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        labels.setdefault(g, []).append(i)
    members = [np.asarray(ix, dtype=int) for ix in labels.values()]
    rng = np.random.default_rng(seed)
    reps = np.empty(n_resamples, dtype=float)
    for r in range(n_resamples):
        pick = rng.integers(0, len(members), size=len(members))
        reps[r] = float(statistic(arr[np.concatenate([members[j] for j in pick])]))
    lo, hi = np.nanquantile(reps, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def _getter(key: str | Callable[[Any], Any]) -> Callable[[Any], Any]:
    if callable(key):
        return key

    def get(record: Any) -> Any:
        if isinstance(record, Mapping):
            return record[key]
        return getattr(record, key)

    return get


def by_family(
    records: Iterable[Any],
    key_family: str | Callable[[Any], Any],
    key_value: str | Callable[[Any], Any],
    confidence: float = 0.95,
) -> dict[str, RateSummary]:
    """Rate of ``True`` per fact family.

    Definition: records are grouped by their family; within each group the rate is
    :func:`rate_with_ci` of the flag (``None`` = excluded). views.md: "Every view also
    reports its numbers per family."

    Args:
        records: mappings or objects, one per scored item.
        key_family: key / attribute name of the family, or a function of the record.
            A missing family (``None``) is reported as ``"other"``.
        key_value: key / attribute name of the ``bool | None`` flag, or a function.
        confidence: coverage of the Wilson intervals.

    Returns:
        ``{family: RateSummary}`` sorted by family name; empty input gives ``{}``.
    """
    fam_of, val_of = _getter(key_family), _getter(key_value)
    flags: dict[str, list[bool | None]] = {}
    for rec in records:
        fam = fam_of(rec)
        flags.setdefault("other" if fam is None else str(fam), []).append(val_of(rec))
    return {fam: rate_with_ci(flags[fam], confidence) for fam in sorted(flags)}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` succeed.

    Definition: the probability that a uniformly random ``k``-subset of the ``n``
    samples contains at least one success, ``1 - C(n-c, k) / C(n, k)``, computed in
    the numerically stable product form ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``.
    For best_of_n "success" is a leaking sample, so this is the leak rate at k tries.

    Source: Chen et al., "Evaluating Large Language Models Trained on Code" (2021),
    the HumanEval paper, Fig. 3.

    Args:
        n: samples drawn for the prompt (``n == 0`` gives ``nan``).
        c: successful samples, ``0 <= c <= n``.
        k: tries, ``1 <= k <= n``.

    Raises:
        ValueError: ``c`` outside ``[0, n]`` or ``k`` outside ``[1, n]``.
    """
    if n < 0 or c < 0 or c > n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if n == 0:
        return _NAN
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}; draw at least k samples")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=float)))


def pass_at_k_curve(counts: Sequence[tuple[int, int]], ks: Sequence[int]) -> list[float]:
    """Mean pass@k over prompts, for each ``k`` in ``ks``.

    Definition: for each ``k``, the mean of :func:`pass_at_k` over the prompts that
    have at least ``k`` samples (prompts with fewer cannot estimate pass@k and are
    left out); ``nan`` when no prompt qualifies or ``counts`` is empty.

    Source: Chen et al. (2021), HumanEval.

    Args:
        counts: one ``(n, c)`` pair per prompt.
        ks: the values of ``k``.

    Returns:
        One float per entry of ``ks``.
    """
    out: list[float] = []
    for k in ks:
        vals = [pass_at_k(n, c, k) for n, c in counts if n >= k and n > 0]
        out.append(float(np.mean(vals)) if vals else _NAN)
    return out
