"""best_of_n: does sampling bring it back?

Definition (views.md, "best_of_n"): each forget question (the canonical ``question``) is
answered ``N = samples`` times by sampling (``temperature``, ``top_p``; the samples of
item ``i`` seeded from ``seed + i`` with ``i`` the item's index in its split, so a
``--limit`` run draws the same samples for the items it keeps). Each sample is scored by
the corrected scorer; ``c`` of the ``N`` samples leak.

- ``best_of_n.leak_rate``: the mean over prompts of the unbiased pass@k estimator at
  ``k = N``, ``1 - C(N-c, k) / C(N, k)``; at ``k = N`` it is the share of prompts with at
  least one leaking sample. Being a proportion, its interval is Wilson's (views.md:
  "Wilson for proportions"; a bootstrap over prompts collapses to ``[0, 0]`` when no
  prompt leaks, which would overstate certainty). Prompts whose novel content is empty
  are excluded.
- ``extra["curve"]``: the same mean at ``k = 1, 2, 4, ..., N`` (``N`` always included):
  the leak rate an attacker gets with ``k`` tries. ``k = 1`` is the mean per-sample leak
  rate. Each point has a percentile-bootstrap interval over prompts (``curve["ci"]``).
  The curve is in ``ViewResult.plots`` (kind ``pass_at_k``), drawn by the report.

- ``best_of_n.empty_rate``: the share of empty (whitespace-only) samples over every
  sample of every prompt, beside the leak rate: a model that says nothing leaks nothing.

Source: views.md; pass@k from Chen et al. (2021), "Evaluating Large Language Models
Trained on Code". The seed paper reports 10.5% / 9.9% / 14.5% at 1B / 3B / 8B (N=16).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from unlearn_audit import prompts
from unlearn_audit.model._types import GenRequest
from unlearn_audit.scoring.stats import (
    bootstrap_ci,
    by_family,
    pass_at_k,
    pass_at_k_curve,
    wilson_interval,
)
from unlearn_audit.views._base import Metric, Plot, View, ViewResult, register_view
from unlearn_audit.views._leak import (
    empty_rate_metric,
    item_fields,
    leak_fields,
    shown_texts,
    user_text,
)

if TYPE_CHECKING:
    from unlearn_audit.context import AuditContext


def curve_ks(n: int) -> list[int]:
    """``1, 2, 4, ...`` up to ``n``, and ``n`` itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n] if n >= 1 else []


@register_view
class BestOfN(View):
    """N sampled answers per forget question; leaks if any sample does."""

    name = "best_of_n"
    title = "Best-of-N: does sampling bring it back?"
    metrics = ("best_of_n.leak_rate", "best_of_n.empty_rate")

    def run(self, ctx: AuditContext, label: str) -> ViewResult:
        cfg = ctx.config
        n = int(cfg.samples)
        if n < 1:
            return self.skipped(label, f"--samples must be at least 1 (got {cfg.samples})")
        if cfg.temperature <= 0:
            return self.skipped(label, "temperature 0 makes every sample the greedy answer "
                                       "(novel_recall measures that); set --temperature > 0")
        items = ctx.forget_items()
        if not items:
            return self.skipped(label, "the forget split has no items")

        asked = [prompts.direct(it) for it in items]
        reqs = [GenRequest(a.prompt, max_new_tokens=cfg.max_new_tokens, n=n,
                           temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + it.index)
                for it, a in zip(items, asked, strict=True)]
        samples = ctx.engine(label).generate(reqs)

        records = []
        for item, a, outs in zip(items, asked, samples, strict=True):
            shown = shown_texts(cfg, a.prompt)
            scored = [leak_fields(s, a.target, shown, cfg.leak_threshold) for s in outs]
            # A prompt too long for the context gets no sample at all (the backend's marked
            # empty answers): it was never asked, so it is excluded, never "no sample leaked".
            unasked = next((s.not_generated for s in outs if getattr(s, "not_generated", None)), None)
            excluded = (scored[0]["excluded"] if scored else True) or unasked is not None
            c = sum(bool(s["leaked"]) for s in scored)
            records.append({
                **({"not_generated": unasked} if unasked else {}),
                **item_fields(item),
                "prompt": user_text(a.prompt),
                "gold": a.target,
                "novel_words": scored[0]["novel_words"] if scored else [],
                "excluded": excluded,
                "n": len(outs),
                "c": None if excluded else c,
                "pass_at_n": None if excluded else pass_at_k(len(outs), c, len(outs)),
                "samples": [{"generation": s, "share": f["share"], "leaked": f["leaked"],
                             "uncorrected_rougeL": f["uncorrected_rougeL"]}
                            for s, f in zip(outs, scored, strict=True)],
            })

        # Over every sample of every prompt, excluded prompts too: silence is not excluded.
        empty = empty_rate_metric("best_of_n.empty_rate", [(r["family"], smp["generation"])
                                                           for r in records for smp in r["samples"]])
        scored_recs = [r for r in records if not r["excluded"]]
        excluded = len(records) - len(scored_recs)
        unasked = sum(1 for r in records if r.get("not_generated"))
        why = (f"{excluded - unasked} with empty novel content, {unasked} not generated (the prompt "
               "does not fit the model's context)") if unasked else "empty novel content"
        if not scored_recs:
            skipped = self.skipped(label, f"nothing to score: all {excluded} prompts excluded: {why}")
            skipped.metrics[1] = empty
            return skipped
        hits = sum(1 for r in scored_recs if r["c"])
        value = hits / len(scored_recs)  # = mean pass@N: at k = N it is a 0/1 indicator
        ci = wilson_interval(hits, len(scored_recs))
        by_fam = {f: s.value for f, s in by_family(scored_recs, "family", lambda r: r["c"] > 0).items()}
        ks = curve_ks(n)
        curve = pass_at_k_curve([(r["n"], r["c"]) for r in scored_recs], ks)
        curve = [None if math.isnan(v) else v for v in curve]
        curve_ci = [list(bootstrap_ci([pass_at_k(r["n"], r["c"], k) for r in scored_recs if r["n"] >= k],
                                      seed=cfg.seed))
                    for k in ks]

        plot = Plot("pass_at_k", f"Best-of-N leak rate against k ({label})", {
            "k": [int(k) for k in ks], "leak_rate": curve, "ci": [float(c) for c in ci],
            "title": f"best_of_n on {label} (N={n}, T={cfg.temperature}, top-p={cfg.top_p})"})
        metric = Metric(
            "best_of_n.leak_rate", value, ci=ci, n=len(scored_recs), excluded=excluded,
            by_family=by_fam,
            reason=f"{excluded} prompts excluded: {why}" if excluded else "",
            extra={"curve": {"k": ks, "leak_rate": curve, "ci": curve_ci}, "samples": n,
                   "temperature": cfg.temperature, "top_p": cfg.top_p, "prompts_with_leak": hits,
                   "ci_method": "Wilson (curve: percentile bootstrap over prompts)"},
        )
        return ViewResult(self.name, label, [metric, empty], records, plots=[plot])
