"""Membership inference: per-item attack statistics, ROC AUC, its bootstrap interval, privleak.

Pure functions on per-token log-probabilities; nothing here touches a model.

**Sign convention.** Every per-item statistic is signed like a loss, as open-unlearning
signs it (``src/evals/metrics/mia/__init__.py``: "higher the score on an example, less
likely the membership"), so per-item values compare one to one with its ``value_by_index``.
:func:`mia_auc` turns them into the ROC AUC of "this item is a member" with the forget set
as the positive class (views.md): 1.0 when every forget item looks more familiar to the
model than every holdout item, 0.5 when the attack cannot tell them apart, near 0 when the
forget set looks *less* familiar than text never seen (over-unlearning, open-unlearning
issue #167). open-unlearning computes the same number as ``roc_auc_score`` with the
holdout set labelled 1 on the loss-signed scores.

**Which tokens.** LOSS, zlib and reference use the mean NLL over the whole answer with its
closing end-of-turn token (open-unlearning's ``evaluate_probability``, TOFU's
``avg_gt_loss``); Min-K% and Min-K%++ use the answer's tokens without it
(open-unlearning's ``tokenwise_logprobs`` drops the last label, the end-of-turn token).
The view passes each attack the tokens its definition takes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "MIN_K_FRACTION",
    "PRIVLEAK_DEFAULT_REFERENCE_AUC",
    "auc_bootstrap_ci",
    "loss_statistic",
    "mia_auc",
    "min_k_plus_plus_statistic",
    "min_k_statistic",
    "privleak",
    "reference_statistic",
    "zlib_statistic",
]

#: The share of lowest-scoring tokens Min-K% and Min-K%++ average: open-unlearning's
#: ``configs/eval/tofu_metrics/mia_min_k.yaml`` (``k: 0.4``).
MIN_K_FRACTION = 0.4
#: The retain model's AUC privleak assumes when no retain model is measured:
#: open-unlearning's ``configs/eval/tofu_metrics/privleak.yaml`` (``ref_value: 0.5``),
#: i.e. a model that never saw the forget set cannot tell it from the holdout set.
PRIVLEAK_DEFAULT_REFERENCE_AUC = 0.5
# open-unlearning's floor on the vocabulary variance in Min-K%++ (``torch.clamp(sigma, 1e-6)``).
_MIN_VARIANCE = 1e-6
# open-unlearning's guard against a zero denominator in privleak (``ref + 1e-10``).
_EPS = 1e-10


def _lp(logprobs: Sequence[float]) -> np.ndarray:
    return np.asarray(logprobs, dtype=np.float64)


def loss_statistic(logprobs: Sequence[float]) -> float:
    """LOSS attack: the answer's mean negative log-likelihood per token.

    Definition: ``-mean_t log p(y_t | x, y_<t)`` over the answer's tokens (end-of-turn
    token included). Lower means more familiar, hence more likely a member.

    Source: Yeom et al. 2018, "Privacy Risk in Machine Learning" (the LOSS attack);
    open-unlearning ``src/evals/metrics/mia/loss.py`` (``avg_loss``).

    Returns:
        The mean NLL; ``nan`` for an empty answer.
    """
    lp = _lp(logprobs)
    return float(-lp.mean()) if lp.size else math.nan


def zlib_statistic(logprobs: Sequence[float], text: str) -> float:
    """zlib attack: the mean NLL divided by the answer's zlib-compressed length in bytes.

    Definition: ``loss_statistic(logprobs) / len(zlib.compress(text.encode("utf-8")))``.
    Text that is cheap to compress (repetitive, generic) is easy for any model; dividing
    by its zlib entropy calibrates the loss by how surprising the text is on its own.

    Source: Carlini et al. 2021, "Extracting Training Data from Large Language Models"
    (USENIX Security), the zlib-entropy ratio; open-unlearning
    ``src/evals/metrics/mia/zlib.py`` (same numerator and default zlib level).

    Args:
        logprobs: the answer's token log-probabilities (end-of-turn token included).
        text: the answer text.
    """
    return loss_statistic(logprobs) / len(zlib.compress(text.encode("utf-8")))


def _min_k_mean(values: np.ndarray, k: float) -> float:
    if not 0 < k <= 1:
        raise ValueError(f"Min-K% needs a fraction k in (0, 1]; got {k!r}")
    if values.size == 0:
        return math.nan
    n = max(1, int(values.size * k))
    return float(-np.sort(values)[:n].mean())


def min_k_statistic(logprobs: Sequence[float], k: float = MIN_K_FRACTION) -> float:
    """Min-K% Prob: minus the mean of the lowest ``k`` share of the token log-probabilities.

    Definition: sort the answer's token log-probabilities ascending, keep the first
    ``max(1, floor(n * k))``, and return minus their mean. A text seen in training has few
    very unlikely tokens, so its lowest tokens are less low.

    Source: Shi et al. 2024, "Detecting Pretraining Data from Large Language Models" (ICLR);
    open-unlearning ``src/evals/metrics/mia/min_k.py`` (the same count and sign, k = 0.4).

    Args:
        logprobs: the answer's token log-probabilities, end-of-turn token excluded.
        k: the share of tokens kept.

    Returns:
        The statistic; ``nan`` for an empty answer (open-unlearning returns 0 there).
    """
    return _min_k_mean(_lp(logprobs), k)


def min_k_plus_plus_statistic(
    logprobs: Sequence[float],
    vocab_mean: Sequence[float],
    vocab_std: Sequence[float],
    k: float = MIN_K_FRACTION,
) -> float:
    """Min-K%++: Min-K% over token log-probabilities standardised by the model's own spread.

    Definition: for each token, ``(log p(y_t) - mu_t) / sigma_t`` with ``mu_t`` and
    ``sigma_t^2`` the mean and variance of ``log p(z)`` for ``z`` drawn from the model's
    next-token distribution at that position (variance floored at 1e-6); then minus the
    mean of the lowest ``max(1, floor(n * k))`` of them. A training text sits near a local
    maximum of the likelihood, so its tokens stand out from what the model would expect.

    Source: Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training
    Data from Large Language Models" (eq. 3-4); open-unlearning
    ``src/evals/metrics/mia/min_k_plus_plus.py`` (same floor, count and sign).

    Args:
        logprobs: the answer's token log-probabilities, end-of-turn token excluded.
        vocab_mean: ``mu_t`` per token (``TokenScores.vocab_mean``).
        vocab_std: ``sigma_t`` per token (``TokenScores.vocab_std``).
        k: the share of tokens kept.
    """
    lp, mu, sd = _lp(logprobs), _lp(vocab_mean), _lp(vocab_std)
    if not lp.shape == mu.shape == sd.shape:
        raise ValueError(
            f"Min-K%++ needs one mean and one spread per token; got {lp.size} log-probs, "
            f"{mu.size} means and {sd.size} spreads"
        )
    z = (lp - mu) / np.sqrt(np.maximum(sd**2, _MIN_VARIANCE))
    return _min_k_mean(z, k)


def reference_statistic(target_nll: float, reference_nll: float) -> float:
    """Reference attack: the target model's mean NLL minus a reference model's on the same text.

    Definition: ``loss(target) - loss(reference)``. A reference model that never saw the
    text removes how hard the text is in itself, leaving what the target learned.

    Source: Carlini et al. 2021 (the "small reference model" comparison), Mireshghallah
    et al. 2022 (likelihood-ratio attacks on language models); open-unlearning
    ``src/evals/metrics/mia/reference.py``.
    """
    return float(target_nll) - float(reference_nll)


def mia_auc(forget: Sequence[float], holdout: Sequence[float]) -> float:
    """ROC AUC of membership, forget set positive, from loss-signed statistics.

    Definition: ``sklearn.metrics.roc_auc_score`` with forget items labelled 1, holdout
    items 0, and ``-statistic`` as the score (lower loss = more likely member); equal to
    the probability that a random forget item scores lower than a random holdout item,
    ties counting one half. Items whose statistic is ``nan`` are dropped.

    Source: open-unlearning ``src/evals/metrics/mia/utils.py`` (``mia_auc``: the same
    number, computed with the labels the other way round on the raw statistic).

    Returns:
        The AUC in [0, 1]; ``nan`` when either side has no item.
    """
    from sklearn.metrics import roc_auc_score

    f, h = _finite(forget), _finite(holdout)
    if f.size == 0 or h.size == 0:
        return math.nan
    labels = np.r_[np.ones(f.size), np.zeros(h.size)]
    return float(roc_auc_score(labels, -np.r_[f, h]))


def auc_bootstrap_ci(
    forget: Sequence[float],
    holdout: Sequence[float],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    forget_groups: Sequence[object] | None = None,
    holdout_groups: Sequence[object] | None = None,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of :func:`mia_auc`, resampling each set on its own.

    Definition: draw the forget items and the holdout items with replacement, each set
    keeping its size (a stratified bootstrap: the two sets are separate samples), and
    recompute the AUC; the interval is the central ``confidence`` share of the replicates.
    With groups (the author of each item) whole groups are drawn within each set instead
    (a cluster bootstrap): an author's items are not independent, so with few authors this
    is the honest interval.

    Source: Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13 (percentile
    interval) and §8.3 (two-sample problems); cluster resampling: Davison & Hinkley 1997,
    "Bootstrap Methods and their Application", §3.8.

    Args:
        forget: loss-signed statistics of the forget items (``nan`` dropped with its group).
        holdout: the same for the holdout items.
        n_resamples: bootstrap replicates.
        seed: seed of the resampling.
        confidence: coverage of the interval.
        forget_groups: optional group label per forget item.
        holdout_groups: optional group label per holdout item (both or neither).

    Returns:
        ``(lo, hi)``, or ``None`` when a side has fewer than two items (or groups).
    """
    f_all, h_all = np.asarray(forget, dtype=np.float64), np.asarray(holdout, dtype=np.float64)
    f_groups = _clusters(f_all, forget_groups)
    h_groups = _clusters(h_all, holdout_groups)
    if len(f_groups) < 2 or len(h_groups) < 2:
        return None
    rng = np.random.default_rng(seed)
    reps = np.empty(n_resamples)
    for b in range(n_resamples):
        fs = np.concatenate([f_groups[i] for i in rng.integers(0, len(f_groups), len(f_groups))])
        hs = np.concatenate([h_groups[i] for i in rng.integers(0, len(h_groups), len(h_groups))])
        reps[b] = _auc_fast(fs, hs)
    alpha = (1 - confidence) / 2
    lo, up = np.quantile(reps, [alpha, 1 - alpha])
    return float(lo), float(up)


def _clusters(values: np.ndarray, groups: Sequence[object] | None) -> list[np.ndarray]:
    """The finite values split into resampling units: one per item, or one per group."""
    keep = np.isfinite(values)
    if groups is None:
        return [values[i : i + 1] for i in np.flatnonzero(keep)]
    if len(groups) != len(values):
        raise ValueError(f"one group per value is needed; got {len(groups)} for {len(values)}")
    units: dict[object, list[float]] = {}
    for v, g, k in zip(values, groups, keep, strict=True):
        if k:
            units.setdefault(g, []).append(float(v))
    return [np.asarray(u) for u in units.values()]


def _auc_fast(forget: np.ndarray, holdout: np.ndarray) -> float:
    """The Mann-Whitney form of :func:`mia_auc` (same number, no sklearn call per replicate)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.r_[-forget, -holdout])
    u = ranks[: forget.size].sum() - forget.size * (forget.size + 1) / 2
    return float(u / (forget.size * holdout.size))


def privleak(auc: float, reference_auc: float | None = None) -> float:
    """privleak: the relative gap, in percent, between a model's MIA AUC and the retain model's.

    Definition (open-unlearning's sign convention, which follows MUSE's reporting of AUC
    as ``1 - AUC``): ``((1 - auc) - (1 - ref)) / ((1 - ref) + 1e-10) * 100``, where
    ``ref`` is the retain model's AUC, or 0.5 when none was measured
    (:data:`PRIVLEAK_DEFAULT_REFERENCE_AUC`). 0 is the retain model's own value; negative
    means the forget set is still more recognisable than for a model that never saw it
    (under-unlearning, about -100 for a model that memorised it); large positive values
    mean it is *less* recognisable than unseen text (over-unlearning).

    Source: Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language
    Models" (PrivLeak); open-unlearning ``src/evals/metrics/privacy.py`` (``privleak``) and
    ``configs/eval/tofu_metrics/privleak.yaml`` (Min-K% AUC, ``ref_value: 0.5``).
    """
    ref = PRIVLEAK_DEFAULT_REFERENCE_AUC if reference_auc is None else float(reference_auc)
    score, base = 1 - float(auc), 1 - ref
    return (score - base) / (base + _EPS) * 100


def _finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return a[np.isfinite(a)]
