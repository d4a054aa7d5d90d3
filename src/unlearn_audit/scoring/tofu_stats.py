"""Bootstrap statistics of the tofu view's intervals: per-item values, model utility's bootstrap.

Pure functions of :class:`~unlearn_audit.scoring.tofu.SplitScores` and arrays (no model):

* :func:`per_item_values` -- the per-item numbers whose mean is each per-split number
  ``tofu.<split>_<kind>`` (``kind`` in :data:`KINDS`: the nine model-utility components
  and the forget-set numbers), exactly as :func:`~unlearn_audit.scoring.tofu.tofu_numbers`
  averages them, so an item bootstrap of them is an interval of the reported number;
* :func:`model_utility_ci` -- the stratified percentile bootstrap of model utility (each
  split resampled on its own, the nine components and their harmonic mean recomputed),
  with :func:`hmean_rows`, :func:`~unlearn_audit.scoring.tofu.model_utility` vectorised
  over replicates;
* :func:`ks_statistic` -- the KS distance beside forget quality's p-value.

The tofu view (:mod:`unlearn_audit.views.tofu`) turns these into its metrics' intervals;
the item bootstrap itself is :func:`unlearn_audit.scoring.stats.bootstrap_ci`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
from scipy import stats as _sps

from unlearn_audit.scoring.tofu import (
    NORMALISED_PROB_SPLITS,
    SplitScores,
    normalized_probability,
    probability,
    truth_ratio_score,
)

__all__ = [
    "KINDS",
    "N_RESAMPLES",
    "hmean_rows",
    "ks_statistic",
    "model_utility_ci",
    "per_item_values",
]

#: Bootstrap replicates of every interval.
N_RESAMPLES = 2000
#: The per-item numbers each mean metric averages, by the metric-name suffix.
KINDS = ("prob", "rouge", "truth_ratio")


def per_item_values(split: str, kind: str, s: SplitScores, compat: str) -> np.ndarray | None:
    """The per-item values whose mean is ``tofu.<split>_<kind>`` (as ``tofu_numbers`` takes it)."""
    if kind == "rouge":
        return s.rougeL_recall
    if kind == "prob":
        if s.gt_mean_nll is None:
            return None
        if split in NORMALISED_PROB_SPLITS:
            if s.perturbed_mean_nll is None:
                return None
            return normalized_probability(s.gt_mean_nll, s.perturbed_mean_nll, compat)
        return probability(s.gt_mean_nll)
    r = s.truth_ratios(compat)
    if r is None:
        return None
    on_forget = split == "forget"
    return np.array(
        [truth_ratio_score([x], on_forget=on_forget, compat=compat) for x in r], dtype=np.float64
    )


def hmean_rows(components: np.ndarray) -> np.ndarray:
    """:func:`~unlearn_audit.scoring.tofu.model_utility` of each row, vectorised.

    Definition: the harmonic mean ``k / sum(1 / x)`` of a row's ``k`` components, 0 when
    one is 0 (the harmonic mean's limit), as ``model_utility`` (``scipy.stats.hmean``)
    gives it; two thousand scipy calls per bootstrap would take seconds.

    Args:
        components: shape ``(rows, k)``, finite and ``>= 0``.

    Returns:
        Shape ``(rows,)``.
    """
    x = np.asarray(components, dtype=np.float64)
    zero = (x == 0).any(axis=1)
    with np.errstate(divide="ignore"):
        hm = x.shape[1] / np.sum(1.0 / x, axis=1)
    return np.where(zero, 0.0, hm)


def model_utility_ci(
    per_item: Mapping[str, Mapping[str, np.ndarray]], seed: int
) -> tuple[float, float] | None:
    """Stratified percentile bootstrap of model utility.

    Each of the three splits is resampled over its own items (they are different item
    sets), the nine component means recomputed, and their harmonic mean taken
    (:func:`hmean_rows`, i.e. ``model_utility``). Replicates where a component has no
    value are dropped.
    """
    rng = np.random.default_rng(seed)
    comps = []
    for split in ("retain", "real_authors", "world_facts"):
        mat = np.column_stack([per_item[split][kind] for kind in KINDS])  # (n, 3)
        idx = rng.integers(0, mat.shape[0], size=(N_RESAMPLES, mat.shape[0]))
        with warnings.catch_warnings():
            # An all-nan column of a replicate ("mean of empty slice") is dropped below.
            warnings.simplefilter("ignore", RuntimeWarning)
            comps.append(np.nanmean(mat[idx], axis=1))  # (B, 3)
    reps = np.concatenate(comps, axis=1)  # (B, 9), COMPONENT_NAMES order
    values = hmean_rows(reps[np.isfinite(reps).all(axis=1)])
    if values.size < 2:
        return None
    lo, hi = np.quantile(values, [0.025, 0.975])
    return (float(lo), float(hi))


def ks_statistic(candidate_truth_ratios: np.ndarray, retain_truth_ratios: np.ndarray) -> float:
    """The two-sample KS statistic of two sets of truth ratios, ``nan`` left out.

    The distance whose p-value is :func:`~unlearn_audit.scoring.tofu.forget_quality`;
    reported beside it, since a p-value has no interval.
    """
    a, b = candidate_truth_ratios, retain_truth_ratios
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    return float(_sps.ks_2samp(a, b).statistic)
