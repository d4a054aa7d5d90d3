"""privacy: does the model still give away that it saw the forget set?

Definition (views.md, "privacy"): membership inference of the forget set (members)
against a holdout set no model was trained on (non-members): TOFU's ``holdout10`` split,
``--holdout-split``; the tiny world has holdout authors of its own. Every item's gold
``answer`` is scored teacher-forced after its ``question`` (the prompt and continuation
TOFU's forget probability uses, so the engine serves both from one cached pass), with the
vocabulary statistics Min-K%++ needs (``ScoreRequest(vocab_stats=True)``). Per item, five
attack statistics, signed like a loss as open-unlearning signs them
(:mod:`unlearn_audit.scoring.membership`):

- LOSS: the mean NLL over the answer and its end-of-turn token (Yeom et al. 2018);
- zlib: that NLL over the answer's zlib-compressed length (Carlini et al. 2021);
- Min-K%: minus the mean of the lowest 40% token log-probabilities (Shi et al. 2024);
- Min-K%++: the same on log-probabilities standardised by the mean and spread of
  ``log p`` over the vocabulary under the model (Zhang et al. 2024);
- reference: the NLL minus a reference model's NLL on the same text. The reference is
  the retain model (it never saw the forget set), or the base model when no retain model
  is given or the audited model is the retain model itself; without either it is skipped.

Min-K% and Min-K%++ take the answer's tokens without the end-of-turn token, LOSS, zlib and
reference with it, as open-unlearning does.

- ``privacy.auc_<attack>``: ROC AUC of membership, forget = positive
  (:func:`~unlearn_audit.scoring.membership.mia_auc`, scikit-learn); 0.5 cannot tell,
  1 recognises every forget item, near 0 is over-unlearning (the forget set looks *less*
  familiar than unseen text). 95% interval: stratified percentile bootstrap (each set
  resampled on its own, seeded by ``--seed``). ``by_family``: the AUC within each fact
  family that has items on both sides.
- ``privacy.privleak``: open-unlearning's privleak on the Min-K% AUC, relative to the
  retain model's Min-K% AUC measured in the same run
  (:func:`~unlearn_audit.scoring.membership.privleak`): 0 for the retain model by
  construction, about -100 for a model that memorised the forget set, large and positive
  for over-unlearning. Without a retain model it is taken against open-unlearning's fixed
  reference AUC 0.5, and the metric's reason says so.

A missing holdout split skips every metric with the fix in the reason.

Sources: MUSE (Shi et al. 2024, PrivLeak) and open-unlearning (``src/evals/metrics/mia/``,
``src/evals/metrics/privacy.py``, ``configs/eval/tofu_metrics/privleak.yaml``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from unlearn_audit.data import DatasetError, Item
from unlearn_audit.model._types import Prompt, ScoreRequest
from unlearn_audit.scoring.membership import (
    MIN_K_FRACTION,
    PRIVLEAK_DEFAULT_REFERENCE_AUC,
    auc_bootstrap_ci,
    loss_statistic,
    mia_auc,
    min_k_plus_plus_statistic,
    min_k_statistic,
    privleak,
    reference_statistic,
    zlib_statistic,
)
from unlearn_audit.views._base import (
    Metric,
    Plot,
    Skip,
    View,
    ViewResult,
    plot_number,
    register_view,
)
from unlearn_audit.views._leak import item_fields

if TYPE_CHECKING:
    from unlearn_audit.context import AuditContext
    from unlearn_audit.model._types import TokenScores

__all__ = ["ATTACKS", "Privacy", "attack_records", "auc_metric", "membership_requests"]

#: Attack name -> the per-item record field holding its statistic.
ATTACKS: dict[str, str] = {
    "loss": "loss",
    "zlib": "zlib",
    "min_k": "min_k",
    "min_k_plus_plus": "min_k_plus_plus",
    "reference": "reference",
}
# Bootstrap replicates of every AUC interval (as the tofu view's intervals).
_N_RESAMPLES = 2000


def membership_requests(items: Sequence[Item]) -> list[ScoreRequest]:
    """The gold answer after the original question, end-of-turn counted, with vocabulary stats.

    The same prompt and continuation as TOFU's forget probability (``tofu`` view), so one
    cached forward pass serves both views.
    """
    return [
        ScoreRequest(Prompt.question(it.question), it.answer, add_eot=True, vocab_stats=True)
        for it in items
    ]


def attack_records(
    split: str, items: Sequence[Item], scores: Sequence[TokenScores], k: float = MIN_K_FRACTION
) -> list[dict[str, Any]]:
    """Per-item attack statistics (no reference yet) from the engine's answers.

    Args:
        split: ``forget`` or ``holdout``.
        items: the items scored.
        scores: their :func:`membership_requests` answers, in order.
        k: Min-K%'s fraction.

    Returns:
        One record per item: identifying fields, ``split``, ``n_tokens`` and the loss-signed
        statistics ``loss``, ``zlib``, ``min_k``, ``min_k_plus_plus`` (``None`` when the
        answer has no token besides the end-of-turn token).
    """
    records = []
    for it, ts in zip(items, scores, strict=True):
        # Min-K% and Min-K%++ drop the end-of-turn token (open-unlearning's tokenwise_logprobs).
        body = slice(0, max(ts.n_tokens - 1, 0))
        lp = np.asarray(ts.logprobs, dtype=np.float64)
        records.append({
            **item_fields(it),
            "split": split,
            "question": it.question,
            "gold": it.answer,
            "n_tokens": ts.n_tokens,
            "loss": _num(loss_statistic(lp)),
            "zlib": _num(zlib_statistic(lp, it.answer)),
            "min_k": _num(min_k_statistic(lp[body], k)),
            "min_k_plus_plus": _num(min_k_plus_plus_statistic(
                lp[body], ts.vocab_mean[body], ts.vocab_std[body], k)),
        })
    return records


def auc_metric(name: str, records: Sequence[Mapping[str, Any]], field: str, *, seed: int = 0,
               reason: str = "", skip: Skip = Skip.NOT_APPLICABLE) -> Metric:
    """The membership AUC of one attack, its bootstrap interval and its AUC per family.

    Definition: :func:`~unlearn_audit.scoring.membership.mia_auc` of the forget records'
    ``field`` against the holdout records'; interval
    :func:`~unlearn_audit.scoring.membership.auc_bootstrap_ci`; ``by_family`` the same AUC
    within each family. Records whose value is ``None`` are
    ``excluded``. Families with fewer than two items on a side get no AUC of their own.
    """
    side = {s: [r for r in records if r["split"] == s and r.get(field) is not None]
            for s in ("forget", "holdout")}
    excluded = sum(1 for r in records if r.get(field) is None)
    f = [r[field] for r in side["forget"]]
    h = [r[field] for r in side["holdout"]]
    if not f or not h:
        return Metric(name, None, n=len(f) + len(h), excluded=excluded,
                      reason=reason or "no scored item on one side (forget or holdout)", skip=skip)
    # A family's AUC needs at least two items on each side to be more than one comparison.
    counts = {s: Counter(r["family"] for r in side[s]) for s in side}
    fams = sorted(f for f, n in counts["forget"].items() if n >= 2 and counts["holdout"].get(f, 0) >= 2)
    by_family = {fam: mia_auc([r[field] for r in side["forget"] if r["family"] == fam],
                              [r[field] for r in side["holdout"] if r["family"] == fam])
                 for fam in fams}
    extra: dict[str, Any] = {
        "n_forget": len(f), "n_holdout": len(h),
        "ci_method": f"stratified percentile bootstrap over items, {_N_RESAMPLES} resamples",
        "mean_forget": float(np.mean(f)), "mean_holdout": float(np.mean(h)),
    }
    fa = [r.get("author") for r in side["forget"]]
    ha = [r.get("author") for r in side["holdout"]]
    if None not in fa and None not in ha:
        # An author's items are not independent: the author-cluster interval is wider and
        # the honest one when each side has only a few authors.
        extra["ci_by_author"] = auc_bootstrap_ci(f, h, n_resamples=_N_RESAMPLES, seed=seed,
                                                 forget_groups=fa, holdout_groups=ha)
    return Metric(
        name, mia_auc(f, h),
        ci=auc_bootstrap_ci(f, h, n_resamples=_N_RESAMPLES, seed=seed),
        n=len(f) + len(h), excluded=excluded, by_family=by_family,
        reason=reason if excluded else "", extra=extra,
    )


@register_view
class Privacy(View):
    """Membership inference of the forget set against a holdout set, and privleak."""

    name = "privacy"
    title = "Privacy: does the model still give away that it saw the forget set?"
    metrics = tuple(f"privacy.auc_{a}" for a in ATTACKS) + ("privacy.privleak",)

    def requires(self, ctx: AuditContext, label: str) -> list[tuple[str, str]]:
        """privleak and the plot compare with the retain model's Min-K% AUC."""
        retain = ctx.reference("retain")
        return [(self.name, retain)] if retain is not None and retain != label else []

    def run(self, ctx: AuditContext, label: str) -> ViewResult:
        split = ctx.config.holdout_split
        try:
            holdout = ctx.items(split)
        except DatasetError as e:
            return self.skipped(label, (
                f"no holdout split to tell members from: {e} Fix: pass --holdout-split with a "
                f"split no model trained on (TOFU's holdout10 for forget10, holdout05 for "
                f"forget05), or a --dataset directory that holds {split}.json."))
        forget = ctx.forget_items()
        if not forget:
            return self.skipped(label, "the forget split has no items")
        records = self.records(ctx, label, forget, holdout)
        seed = ctx.config.seed
        ref_label = self.reference_model(ctx, label)
        metrics = []
        for attack, field in ATTACKS.items():
            why = ("the reference attack needs a retain or base model (--retain-model, "
                   "--base-model) other than the audited one" if attack == "reference" and ref_label is None
                   else "an answer with no token to score")
            no_ref = attack == "reference" and ref_label is None
            m = auc_metric(f"privacy.auc_{attack}", records, field, seed=seed, reason=why,
                           skip=Skip.MISSING_REFERENCE if no_ref else Skip.NOT_APPLICABLE)
            if attack == "reference" and ref_label is not None:
                m.extra["reference_model"] = ref_label
            metrics.append(m)
        metrics.append(self._privleak(ctx, label, metrics[2]))
        plots = self._plot(ctx, label, records, metrics[2])
        return ViewResult(self.name, label, metrics, records, plots=plots)

    # --- per-item scores ------------------------------------------------------------------
    def records(self, ctx: AuditContext, label: str, forget: Sequence[Item],
                holdout: Sequence[Item]) -> list[dict[str, Any]]:
        """Per-item statistics of ``label`` on both sets, the reference attack included."""
        items = [*forget, *holdout]
        scores = ctx.engine(label).score(membership_requests(items))
        records = (attack_records("forget", forget, scores[: len(forget)])
                   + attack_records("holdout", holdout, scores[len(forget):]))
        ref_label = self.reference_model(ctx, label)
        ref_nll: list[float | None] = [None] * len(items)
        if ref_label is not None:
            # The reference model's NLLs straight from its backend, not its privacy result:
            # retain's reference is base and base's is retain, a cycle the runner refuses.
            ref_scores = ctx.engine(ref_label).score(membership_requests(items))
            ref_nll = [_num(loss_statistic(s.logprobs)) for s in ref_scores]
        for r, ref in zip(records, ref_nll, strict=True):
            r["reference_model"] = ref_label
            r["reference"] = (None if ref is None or r["loss"] is None
                              else reference_statistic(r["loss"], ref))
        return records

    @staticmethod
    def reference_model(ctx: AuditContext, label: str) -> str | None:
        """The reference attack's calibrating model: retain, else base, never ``label`` itself."""
        for role in ("retain", "base"):
            ref = ctx.reference(role)
            if ref is not None and ref != label:
                return ref
        return None

    # --- privleak ---------------------------------------------------------------------------
    def _privleak(self, ctx: AuditContext, label: str, min_k: Metric) -> Metric:
        name = "privacy.privleak"
        if min_k.value is None:
            return Metric(name, None, reason=min_k.reason, skip=min_k.skip)
        retain = ctx.reference("retain")
        if retain is None:
            ref_auc, source = PRIVLEAK_DEFAULT_REFERENCE_AUC, "fixed"
            reason = (f"no retain model given (--retain-model): privleak is taken against "
                      f"open-unlearning's fixed reference AUC {PRIVLEAK_DEFAULT_REFERENCE_AUC}")
        else:
            # The retain model compares with itself (a result cannot need itself).
            ref_auc = (min_k.value if retain == label
                       else ctx.result(self.name, retain).metric("privacy.auc_min_k").value)
            source, reason = retain, ""
            if ref_auc is None:
                return Metric(name, None, reason=f"the retain model {retain!r} has no Min-K% AUC")
        return Metric(name, privleak(min_k.value, ref_auc), n=min_k.n, reason=reason,
                      extra={"attack": "min_k", "auc": min_k.value, "reference_auc": ref_auc,
                             "reference": source})

    # --- plot ---------------------------------------------------------------------------------
    def _plot(self, ctx: AuditContext, label: str, records: Sequence[Mapping[str, Any]],
              min_k: Metric) -> list[Plot]:
        """Forget against holdout Min-K% scores, this model beside the retain model."""
        if min_k.value is None:
            return []
        panels = [_panel(f"{label} (AUC {min_k.value:.2f})", records)]
        retain = ctx.reference("retain")
        if retain is not None and retain != label:
            other = ctx.result(self.name, retain)
            auc = other.metric("privacy.auc_min_k").value
            if auc is not None:
                who = retain if retain == "retain" else f"{retain}, retain"
                panels.append(_panel(f"{who} (AUC {auc:.2f})", other.records))
        return [Plot("histograms", f"Forget vs holdout Min-K% scores ({label})", {
            "panels": panels,
            "xlabel": f"Min-K% statistic (k={MIN_K_FRACTION}; lower = looks more familiar)",
            "ylabel": "items",
            "title": f"Membership inference: forget vs {ctx.config.holdout_split}"})]


def _panel(title: str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One histogram panel: the forget and the holdout items' Min-K% statistic."""
    forget, holdout = _sides(records, "min_k")
    return {"title": title, "series": [
        {"label": "forget (members)", "values": [plot_number(v) for v in forget]},
        {"label": "holdout (non-members)", "values": [plot_number(v) for v in holdout]}]}


def _sides(records: Sequence[Mapping[str, Any]], field: str) -> tuple[list[float], list[float]]:
    """The forget and the holdout values of one statistic."""
    def pick(split: str) -> list[float]:
        return [r[field] for r in records if r["split"] == split and r.get(field) is not None]

    return pick("forget"), pick("holdout")


def _num(x: float) -> float | None:
    """JSON-safe: ``nan`` becomes ``None``."""
    return None if x is None or not np.isfinite(x) else float(x)
