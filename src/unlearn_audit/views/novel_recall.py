"""novel_recall: does greedy answering still leak?

Definition (views.md, "novel_recall"): every forget item is asked twice, by its
question and, separately, by its paraphrased question, and answered greedily (up to
``max_new_tokens``). Each answer is scored by the corrected scorer against the gold
answer of what was asked (``answer`` for the question, ``paraphrased_answer`` for the
paraphrase, as TOFU pairs them), with the system prompt and the question as shown text.

- ``novel_recall.leak_rate``: the share of leaking answers over all (item, question
  kind) pairs whose novel content is not empty; pairs with empty novel content are
  counted in ``excluded``. Wilson 95% interval; per family; per kind in
  ``extra["by_kind"]``.
- ``novel_recall.empty_rate``: the share of empty (whitespace-only) answers over all
  pairs, beside the leak rate, so "leaks nothing because it says nothing" is visible.
- ``novel_recall.uncorrected_rate``: the share of answers whose ROUGE-L recall of the
  gold answer reaches the same threshold, over *all* pairs (the plain scorer excludes
  nothing, so its bias stays visible), as ``unlearn-audit rescore`` reports it.

Source: the seed paper's novel-recall metric (views.md); the base model should leak
near zero (0.3% at 3B), TOFU-full is the ceiling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn_audit import prompts
from unlearn_audit.scoring.stats import rate_with_ci
from unlearn_audit.views._base import View, ViewResult, register_view
from unlearn_audit.views._leak import (
    empty_rate_metric,
    generate_greedy,
    item_fields,
    leak_fields,
    rate_metric,
    shown_texts,
    user_text,
)

if TYPE_CHECKING:
    from unlearn_audit.context import AuditContext

#: The two ways the item is asked, each scored against its own gold answer.
KINDS = {"direct": prompts.direct, "paraphrased": prompts.paraphrased}


@register_view
class NovelRecall(View):
    """Greedy answers to the forget questions, scored on novel content."""

    name = "novel_recall"
    title = "Novel recall: does greedy answering still leak?"
    metrics = ("novel_recall.leak_rate", "novel_recall.empty_rate", "novel_recall.uncorrected_rate")

    def run(self, ctx: AuditContext, label: str) -> ViewResult:
        items = ctx.forget_items()
        if not items:
            return self.skipped(label, "the forget split has no items")
        asked = [(item, build(item)) for item in items for build in KINDS.values()]
        answers = generate_greedy(ctx, label, [a.prompt for _, a in asked])
        threshold = ctx.config.leak_threshold
        fmt = ctx.engine(label).fmt

        records = []
        for (item, a), answer in zip(asked, answers, strict=True):
            records.append({
                **item_fields(item),
                "kind": a.format,
                "prompt": user_text(a.prompt),
                # The exact text the model was shown (chat template, system prompt, date), so
                # a reader can check the tokenisation path a number came from.
                "rendered_prompt": fmt.render(a.prompt),
                "generation": answer,
                **leak_fields(answer, a.target, shown_texts(ctx.config, a.prompt), threshold),
            })

        leak = rate_metric("novel_recall.leak_rate", records, "leaked")
        uncorrected = rate_metric("novel_recall.uncorrected_rate", records, "uncorrected_leak")
        for metric, flag in ((leak, "leaked"), (uncorrected, "uncorrected_leak")):
            per_kind = {k: rate_with_ci(r[flag] for r in records if r["kind"] == k) for k in KINDS}
            metric.extra["by_kind"] = {k: s.value for k, s in per_kind.items()}
            metric.extra["by_kind_detail"] = {k: s.to_dict() for k, s in per_kind.items()}
            metric.extra["threshold"] = threshold
        empty = empty_rate_metric("novel_recall.empty_rate", [(r["family"], r["generation"]) for r in records])
        return ViewResult(self.name, label, [leak, empty, uncorrected], records)
