"""What the leak views share: ask, generate, score with the corrected scorer, aggregate.

The leak views (novel_recall, format_shift, best_of_n, chain_of_clues) all follow one
path: build a :class:`Prompt` per item, let the engine answer it, score each answer with
the corrected (novel-content) scorer of :mod:`unlearn_audit.scoring.novel` against what
the model was shown, and turn the per-item records into rates with Wilson intervals and
per-family numbers. This module holds that path once so each view module reads like its
definition.

**Shown text** (views.md, "novel content"): the system prompt (only when the prompt
format renders one, i.e. ``prompt_format == "chat"``), every *user* turn and the
answer stem. Assistant turns are not shown text: in a multi-turn dialogue they are the
model's own words (chain_of_clues), and a model repeating what it said itself still
leaks. The chat template's fixed boilerplate (Llama-3's "Cutting Knowledge Date" lines)
is not counted; it is the same for every prompt and carries no fact of any item.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from unlearn_audit.data import Item, classify_question
from unlearn_audit.model._types import GenRequest, Prompt
from unlearn_audit.scoring.novel import score_generation
from unlearn_audit.scoring.stats import by_family, rate_with_ci
from unlearn_audit.views._base import Metric

if TYPE_CHECKING:
    from unlearn_audit.context import AuditConfig, AuditContext

__all__ = [
    "empty_rate_metric",
    "family_of",
    "generate_greedy",
    "item_fields",
    "leak_fields",
    "rate_metric",
    "shown_texts",
    "user_text",
]


def shown_texts(config: AuditConfig, prompt: Prompt) -> list[str]:
    """Every text the user side put in front of the model (module docstring).

    Args:
        config: the run's configuration (system prompt and prompt format).
        prompt: the prompt as asked.

    Returns:
        The system prompt (chat format only), each user turn, and the stem if any.
    """
    out: list[str] = []
    if config.prompt_format == "chat" and config.system_prompt:
        out.append(config.system_prompt)
    out += [text for role, text in prompt.turns if role == "user"]
    if prompt.stem:
        out.append(prompt.stem)
    return out


def user_text(prompt: Prompt) -> str:
    """The user turns of a prompt, one per line (what records show as ``prompt``)."""
    return "\n".join(text for role, text in prompt.turns if role == "user")


def family_of(item: Item) -> str:
    """The item's fact family; read off the question when the data records none."""
    return item.family or classify_question(item.question)


def item_fields(item: Item) -> dict[str, Any]:
    """The identifying fields every per-item record starts with."""
    return {"uid": item.uid, "author": item.author, "family": family_of(item)}


def generate_greedy(ctx: AuditContext, label: str, prompts: Sequence[Prompt]) -> list[str]:
    """One greedy answer per prompt, up to ``max_new_tokens``, in one batched engine call."""
    reqs = [GenRequest(p, max_new_tokens=ctx.config.max_new_tokens) for p in prompts]
    return [outs[0] for outs in ctx.engine(label).generate(reqs)] if reqs else []


def leak_fields(generation: str, gold: str, shown: Sequence[str], threshold: float) -> dict[str, Any]:
    """The corrected and uncorrected verdicts on one answer, as record fields.

    Definition: :func:`unlearn_audit.scoring.novel.score_generation` (views.md, "leak").

    Returns:
        ``gold``, ``novel_words``, ``matched_words``, ``share``, ``leaked`` (``None`` when
        excluded), ``excluded``, ``uncorrected_rougeL`` and ``uncorrected_leak``; and
        ``not_generated`` (why) only when the backend gave no answer (a prompt too long
        for the context): then both verdicts are ``None``, so the item is excluded.
    """
    rec = score_generation(generation, gold, shown, threshold)
    extra = {} if rec.not_generated is None else {"not_generated": rec.not_generated}
    return {
        "gold": gold,
        "novel_words": list(rec.novel_words),
        "matched_words": list(rec.matched_words),
        "share": rec.share,
        "leaked": rec.leaked,
        "excluded": rec.excluded,
        "uncorrected_rougeL": rec.uncorrected_rougeL,
        "uncorrected_leak": rec.uncorrected_leak,
        **extra,
    }


#: What each ``not_generated`` reason means, for a metric's reason text.
_NOT_GENERATED = {
    "prompt_too_long": "prompt longer than the model's context (nothing was generated; see the "
                       "report's note on inputs longer than the context)",
}


def _exclusion_reason(recs: Sequence[Mapping[str, Any]], flag: str, excluded_reason: str) -> str:
    """``excluded_reason`` for the excluded records, split off those never generated."""
    excluded = [r for r in recs if r.get(flag) is None]
    unasked = [str(r["not_generated"]) for r in excluded if r.get("not_generated")]
    others = len(excluded) - len(unasked)
    parts = [f"{others} {excluded_reason}"] if others else []
    parts += [f"{unasked.count(why)} {_NOT_GENERATED.get(why, why)}" for why in sorted(set(unasked))]
    return "; ".join(parts)


def rate_metric(
    name: str,
    records: Iterable[Mapping[str, Any]],
    flag: str = "leaked",
    *,
    excluded_reason: str = "empty novel content (the prompt shows every content word of the answer)",
) -> Metric:
    """A proportion metric over records: value, Wilson 95% CI, n, excluded, per family.

    Definition: the share of ``True`` among the records' non-``None`` ``flag`` values
    (``None`` = excluded), with the Wilson interval (views.md: "Wilson for proportions");
    the same per ``family``. ``Metric.by_family`` holds the families with at least one
    scored record; ``extra["by_family_detail"]`` has every family's counts and interval.

    Args:
        name: the metric's views.md name.
        records: per-item records with ``family`` and ``flag`` keys.
        flag: the key of the ``bool | None`` verdict.
        excluded_reason: what an excluded record means, for ``Metric.reason``.
    """
    recs = list(records)
    s = rate_with_ci(r[flag] for r in recs)
    fams = by_family(recs, "family", flag)
    reason = ""
    if any(r.get("not_generated") for r in recs):  # say which exclusions are which
        excluded_reason = _exclusion_reason(recs, flag, excluded_reason)
        prefix = "excluded: "
    else:
        prefix = f"{s.excluded} excluded: "
    if s.n == 0:
        reason = "nothing to score: " + (excluded_reason if s.excluded else "no items")
    elif s.excluded:
        reason = prefix + excluded_reason
    return Metric(
        name,
        s.value,
        ci=s.ci,
        n=s.n,
        excluded=s.excluded,
        by_family={f: v.value for f, v in fams.items() if v.value is not None},
        reason=reason,
        extra={"successes": s.successes,
               "by_family_detail": {f: v.to_dict() for f, v in fams.items()}},
    )


def empty_rate_metric(name: str, answers: Iterable[tuple[str, str]]) -> Metric:
    """The share of empty answers, reported beside a view's leak rate.

    Definition: over all ``(family, answer)`` pairs, the share whose answer is empty or
    whitespace only; Wilson 95% interval; per family. Only an answer the backend did
    not generate (``NotGenerated``: the prompt does not fit the context) is excluded:
    the model said nothing because it was never asked.

    Source: unlearn-audit (issue 12). A model that says nothing leaks nothing, so a leak
    rate near zero reads as forgetting only beside an empty rate near zero.
    """
    recs = []
    for family, answer in answers:
        why = getattr(answer, "not_generated", None)
        recs.append({"family": family, "empty": None if why else not answer.strip(),
                     **({"not_generated": why} if why else {})})
    return rate_metric(name, recs, "empty")
