"""likelihood: is the target signal suppressed?

Definition (views.md, "likelihood"): every forget item's gold ``answer`` is scored
teacher-forced after its question (:func:`unlearn_audit.prompts.direct`), with the closing
end-of-turn token counted as TOFU and open-unlearning do on the chat path
(``ScoreRequest(add_eot=True)``).

- ``likelihood.avg_logprob``: the mean over items of each item's mean per-token
  log-probability of the whole answer (end-of-turn token included), i.e. minus TOFU's
  ``avg_gt_loss`` averaged over the forget set. Bootstrap 95% interval over items.
- ``likelihood.shift_vs_full``: the candidate's ``avg_logprob`` minus TOFU-full's, over
  the same items (the mean of per-item differences). Positive means the candidate finds
  the forgotten answers *more* likely than the model it was unlearned from. Bootstrap
  95% interval over items of the per-item differences.
- ``likelihood.shift_vs_full_novel``: the same on the answer's novel-content tokens only:
  the tokens whose character span overlaps a novel-content word of the answer (views.md,
  "novel content", against the system prompt and the question). The mean is per item over
  its novel tokens, then over items; items without novel tokens are ``excluded``.

Both shifts are ``skipped`` when no TOFU-full reference (role ``full``) is given.

Source: views.md; the seed paper reports ``avg_logprob`` -3.20 at 3B and a shift of
+0.424 (3B), -0.599 (1B), +0.061 (8B). TOFU's per-item loss:
``locuslab/tofu`` ``evaluate_util.py`` (``get_batch_loss``, mean over answer tokens).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from unlearn_audit import prompts
from unlearn_audit.model._types import ScoreRequest
from unlearn_audit.scoring.novel import content_words, match_key, novel_content
from unlearn_audit.scoring.stats import bootstrap_ci
from unlearn_audit.views._base import Metric, Skip, View, ViewResult, register_view
from unlearn_audit.views._leak import item_fields, shown_texts

if TYPE_CHECKING:
    from unlearn_audit.context import AuditContext
    from unlearn_audit.data import Item

__all__ = ["Likelihood", "novel_token_mask", "novel_word_spans", "mean_metric"]

# The word pattern of ``scoring.novel.content_words``, run on the *original* text so the
# match positions are character spans of the answer: thousands-separated numbers, digit
# runs joined by / . : - (dates, decimals), then runs of letters and digits.
_WORD_SPAN = re.compile(r"\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:[./:-]\d+)+|[^\W_]+")


def novel_word_spans(answer: str, shown: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of the answer's words that carry novel content.

    Definition: a word of ``answer`` (a match of the content-word pattern on the raw text)
    is novel when one of its content words (:func:`~unlearn_audit.scoring.novel.content_words`)
    has the match key of a novel-content word (:func:`~unlearn_audit.scoring.novel.novel_content`
    of ``answer`` against ``shown``). Every occurrence of a novel word counts, not only its
    first.

    Args:
        answer: the gold answer.
        shown: every text the model was shown (system prompt, user turns, stem).

    Returns:
        ``(start, end)`` spans into ``answer``, in order.
    """
    keys = {match_key(w) for w in novel_content(answer, list(shown))}
    if not keys:
        return []
    return [
        (m.start(), m.end())
        for m in _WORD_SPAN.finditer(answer)
        if any(match_key(w) in keys for w in content_words(m.group()))
    ]


def novel_token_mask(
    answer: str, shown: Sequence[str], offsets: Sequence[tuple[int, int]]
) -> list[bool]:
    """Which continuation tokens belong to the answer's novel content.

    Definition: token ``t`` with character span ``offsets[t]`` is a novel-content token
    when that span overlaps the span of a novel word (:func:`novel_word_spans`). Empty
    spans (the appended end-of-turn token) never overlap, so it is never novel.

    Args:
        answer: the scored continuation (the gold answer).
        shown: every text the model was shown.
        offsets: ``TokenScores.offsets`` of the continuation.

    Returns:
        One flag per token.
    """
    spans = novel_word_spans(answer, shown)
    return [any(s < we and ws < e for ws, we in spans) for s, e in offsets]


def mean_metric(
    name: str,
    records: Sequence[Mapping[str, Any]],
    key: str,
    *,
    seed: int = 0,
    total: int | None = None,
    reason: str = "",
) -> Metric:
    """Mean of a per-item number with a bootstrap 95% interval over items, and per family.

    Definition: ``value`` is the mean of ``record[key]`` over records where it is not
    ``None``; ``ci`` the percentile bootstrap interval over those items
    (:func:`~unlearn_audit.scoring.stats.bootstrap_ci`, seeded); ``by_family`` the mean per
    ``family``. Records whose value is ``None`` count as ``excluded``.

    Args:
        name: the views.md metric name.
        records: per-item records with ``family`` and ``key``.
        key: which per-item number to average.
        seed: seed of the bootstrap resampling.
        total: number of items considered (defaults to ``len(records)``).
        reason: a note for exclusions; an empty one gets a default.
    """
    vals = [(r["family"], float(r[key])) for r in records if r.get(key) is not None]
    total = len(records) if total is None else total
    excluded = total - len(vals)
    if not vals:
        return Metric(name, None, n=0, excluded=excluded,
                      reason=reason or "nothing to average: no item has a value")
    arr = np.array([v for _, v in vals], dtype=float)
    fams: dict[str, list[float]] = {}
    for fam, v in vals:
        fams.setdefault(fam, []).append(v)
    lo, hi = bootstrap_ci(arr, seed=seed)
    return Metric(
        name,
        float(arr.mean()),
        ci=(lo, hi),
        n=len(vals),
        excluded=excluded,
        by_family={f: float(np.mean(v)) for f, v in sorted(fams.items())},
        reason=reason if excluded else "",
        extra={"by_family_n": {f: len(v) for f, v in sorted(fams.items())}},
    )


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


@register_view
class Likelihood(View):
    """Teacher-forced log-probability of the gold forget answers, against TOFU-full."""

    name = "likelihood"
    title = "Likelihood: is the target signal suppressed?"
    metrics = ("likelihood.avg_logprob", "likelihood.shift_vs_full", "likelihood.shift_vs_full_novel")

    def item_records(self, ctx: AuditContext, label: str, items: Sequence[Item]) -> list[dict[str, Any]]:
        """Per-item teacher-forced scores of the gold answers (one engine call).

        Returns:
            One record per item: identifying fields, ``n_tokens``, ``mean_logprob`` (whole
            answer, end-of-turn included), ``n_novel_tokens``, ``novel_mean_logprob``
            (``None`` without novel tokens), ``novel_tokens`` (their text).
        """
        asked = [prompts.direct(item) for item in items]
        scores = ctx.engine(label).score(
            [ScoreRequest(a.prompt, item.answer, add_eot=True) for a, item in zip(asked, items, strict=True)]
        )
        records = []
        for item, a, ts in zip(items, asked, scores, strict=True):
            lp = np.asarray(ts.logprobs, dtype=float)
            mask = np.array(novel_token_mask(item.answer, shown_texts(ctx.config, a.prompt),
                                             ts.offsets), dtype=bool)
            records.append({
                **item_fields(item),
                "n_tokens": int(len(lp)),
                "mean_logprob": _mean_or_none(lp),
                "n_novel_tokens": int(mask.sum()),
                "novel_mean_logprob": _mean_or_none(lp[mask]) if mask.size else None,
                "novel_tokens": [item.answer[s:e] for (s, e), m in zip(ts.offsets, mask, strict=True) if m],
            })
        return records

    def run(self, ctx: AuditContext, label: str) -> ViewResult:
        items = ctx.forget_items()
        if not items:
            return self.skipped(label, "the forget split has no items")
        records = self.item_records(ctx, label, items)
        seed = ctx.config.seed
        avg = mean_metric("likelihood.avg_logprob", records, "mean_logprob", seed=seed,
                          reason="empty answer (no tokens to score)")
        novel = [r["novel_mean_logprob"] for r in records if r["novel_mean_logprob"] is not None]
        avg.extra["novel_avg_logprob"] = float(np.mean(novel)) if novel else None
        metrics = [avg, *self._shifts(ctx, label, records)]
        return ViewResult(self.name, label, metrics, records)

    def requires(self, ctx: AuditContext, label: str) -> list[tuple[str, str]]:
        """The shifts compare with the TOFU-full model's per-item log-probabilities."""
        full = ctx.reference("full")
        return [(self.name, full)] if full is not None and full != label else []

    def _shifts(self, ctx: AuditContext, label: str, records: list[dict[str, Any]]) -> list[Metric]:
        names = ("likelihood.shift_vs_full", "likelihood.shift_vs_full_novel")
        full = ctx.reference("full")
        if full is None:
            reason = "no TOFU-full reference (a model with role 'full') was given"
            return [Metric(n, None, reason=reason, skip=Skip.MISSING_REFERENCE) for n in names]
        # The full model's shift against itself is its own records minus themselves (a
        # result cannot need itself: the runner would refuse the cycle).
        ref = records if full == label else ctx.result(self.name, full).records
        ref_by_uid = {r["uid"]: r for r in ref}
        out = []
        for name, key, why in (
            (names[0], "mean_logprob", "item not scored on both models"),
            (names[1], "novel_mean_logprob",
             "no novel-content token (the question shows every content word of the answer)"),
        ):
            diffs = []
            for r in records:
                f = ref_by_uid.get(r["uid"])
                ok = f is not None and r[key] is not None and f[key] is not None
                diffs.append({"family": r["family"], "d": r[key] - f[key] if ok else None})
            m = mean_metric(name, diffs, "d", seed=ctx.config.seed, reason=why)
            full_vals = [f[key] for f in ref if f[key] is not None]
            m.extra.update({"full_model": full,
                            "full_avg_logprob": float(np.mean(full_vals)) if full_vals else None})
            out.append(m)
        # Per-item differences go into the records so a reader can find the big movers.
        for r in records:
            f = ref_by_uid.get(r["uid"])
            for key, out_key in (("mean_logprob", "shift_vs_full"), ("novel_mean_logprob", "shift_vs_full_novel")):
                ok = f is not None and r[key] is not None and f[key] is not None
                r[out_key] = r[key] - f[key] if ok else None
        return out
