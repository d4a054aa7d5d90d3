"""format_shift: does asking differently bring it back?

Definition (views.md, "format_shift"): every forget item is re-asked in seven formats
(the builders of :mod:`unlearn_audit.prompts`), each answered greedily:

=================  ============================================================  ==========
format             prompt                                                        gold
=================  ============================================================  ==========
fill_blank         the answer sentence with its novel span blanked               the span
completion         the answer's own stem pre-filled as the assistant's reply     the rest
multiple_choice    gold among the perturbed answers, shuffled; answer by letter  the letter
true_false         gold or one perturbed answer (seeded coin); True or False     the truth
biography          "Write a short biography of <author>" (one per author)        ``answer``
json               the question, answer demanded as ``{"answer": "..."}``        ``answer``
paraphrased        TOFU's paraphrased question                                   paraphrased
=================  ============================================================  ==========

**Generative formats** (all but the two choice formats) are scored by the corrected
scorer against their gold, with the system prompt, the user text and (completion) the
stem as shown text. The json answer is unwrapped first (``prompts.unwrap_json``: the
``answer`` field, or the raw text when the reply is not such JSON). The biography is
generated once per author and every item of that author is scored against it; for it,
the item's *question* counts as shown text too (a deliberate addition to views.md's
rule). The request "write a biography" asks every question at once, so the words that
say *which* fact (father, born, debut novel, prize) are the request's, not knowledge:
scored against the request alone, a biography of a made-up person earns "father" and
"prize" for every item (the tiny world's retain model scored 0.70 that way, against
0.14 with the rule). With it, the biography's novel content is novel_recall's.

**Choice formats** are parsed (the option letter, or the one option whose text the
reply quotes; ``True``/``False``, or a leading yes/no); an unparsed reply counts as
wrong. The per-item verdict is ``correct``. Their rate is accuracy corrected for chance,
``max(0, (acc - c) / (1 - c))`` with ``c`` the mean of ``1 / n_options`` over the items:
0 for a model that guesses, 1 for one that is always right. Its interval is the Wilson
interval of the accuracy mapped through the same (monotone) correction.

**The pooled rate** ``format_shift.leak_rate`` is the pair-weighted mean of the
per-format rates: ``sum_f n_f * r_f / sum_f n_f`` over the (item, format) pairs that are
scored (``n_f``; generative pairs with empty novel content are excluded). Without choice
formats it is exactly the share of leaking pairs; with them, a choice pair counts by its
chance-corrected accuracy, so a model that knows nothing scores ~0 rather than the
guessing floor a raw correct-flag would add (1/6 and 1/2 here, ~7% of the pool), and
the number stays comparable with novel_recall and across format sets. Its interval is a
percentile bootstrap over items (each item resampled with all its formats). The raw
alternatives are reported beside it in ``extra``: ``generative_rate`` (generative pairs
only, Wilson) and ``raw_pooled_rate`` (choice pairs counted as their raw correct flag,
Wilson).

**Against base**: when a base reference is given, this view is run on it too (through
``ctx.result``, so once per session) and every metric carries ``extra["base"]`` and
``extra["minus_base"]`` (candidate minus base): a base model's knack for a format
(True/False bias, an easy distractor) then shows instead of passing as knowledge.

``format_shift.empty_rate``: the share of empty (whitespace-only) replies over every
asked (item, format) pair, beside the pooled rate: a model that says nothing leaks nothing.

Source: views.md; the seed paper reports 16.9% / 22.8% / 36.9% at 1B / 3B / 8B.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from unlearn_audit import prompts
from unlearn_audit.data import Item
from unlearn_audit.model._types import Prompt
from unlearn_audit.scoring.stats import bootstrap_ci, rate_with_ci, wilson_interval
from unlearn_audit.views._base import Metric, Plot, View, ViewResult, plot_number, register_view
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

#: Report order (views.md's order of the formats).
FORMATS = ("fill_blank", "completion", "multiple_choice", "true_false", "biography", "json",
           "paraphrased")
CHOICE_FORMATS = ("multiple_choice", "true_false")
#: Per-item generative builders; the biography is per author and built in ``run``.
_ITEM_BUILDERS = {
    "fill_blank": prompts.fill_blank,
    "completion": prompts.completion,
    "json": prompts.json_answer,
    "paraphrased": prompts.paraphrased,
}


# --- parsing the choice formats -------------------------------------------------------------
# A letter counts only where it cannot be an English word: at the start of the reply or
# after "answer (is)"/"option", and then followed by the end, punctuation, or a word that
# is not lower-case ("A writer ..." is an article, "A. It is ..." and "D It is" are letters).
_LETTER_END = r"(?=$|[.):,;\]]|\s+(?![a-z]))"
_LETTER_AT_START = re.compile(r"^\W*\(?([A-Z])" + _LETTER_END)
_LETTER_AFTER_CUE = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is\s*)?[:\-]?\s*\(?([A-Z])" + _LETTER_END, re.IGNORECASE
)
_OPTION_LINE = re.compile(r"^([A-Z])\. (.+)$", re.MULTILINE)
_TRUE_FALSE = re.compile(r"\b(true|false)\b", re.IGNORECASE)
_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def parse_letter(reply: str, prompt_text: str) -> str | None:
    """The option a multiple-choice reply picks, or ``None``.

    Rules, first that applies: a letter of the prompt's options at the start of the reply
    or after "answer is" / "option"; otherwise the one option whose full text the reply
    contains (a model may quote the answer instead of naming its letter).

    Args:
        reply: the model's answer.
        prompt_text: the user text, whose ``"X. option"`` lines list the options.
    """
    options = dict(_OPTION_LINE.findall(prompt_text))
    for pattern in (_LETTER_AT_START, _LETTER_AFTER_CUE):
        m = pattern.search(reply)
        if m and m.group(1).upper() in options:
            return m.group(1).upper()
    said = _norm(reply)
    quoted = [letter for letter, text in options.items() if _norm(text) and _norm(text) in said]
    return quoted[0] if len(quoted) == 1 else None


def parse_true_false(reply: str) -> str | None:
    """``"True"``/``"False"`` from a verification reply (its first true/false word, else a
    leading yes/no), or ``None``."""
    m = _TRUE_FALSE.search(reply)
    if m:
        return m.group(1).capitalize()
    m = _YES_NO.search(reply)
    if m:
        return "True" if m.group(1).lower() == "yes" else "False"
    return None


def chance_corrected(accuracy: float | None, chance: float) -> float | None:
    """Accuracy corrected for chance: ``max(0, (acc - c) / (1 - c))``.

    Definition: the share of items answered correctly *beyond* guessing among ``k``
    options (``c = 1/k``): 0 at or below chance, 1 when always right. The classic
    correction for guessing (Cohen's kappa against a uniform guesser).

    Args:
        accuracy: raw accuracy in [0, 1], or ``None`` (nothing scored).
        chance: the guessing accuracy ``c`` in [0, 1).
    """
    if accuracy is None or math.isnan(accuracy):
        return None
    if not 0.0 <= chance < 1.0:
        raise ValueError(f"chance accuracy must lie in [0, 1), got {chance!r}")
    return max(0.0, (accuracy - chance) / (1.0 - chance))


# --- the pooled rate -------------------------------------------------------------------------
def pooled_rate(flags: np.ndarray, chance: np.ndarray) -> float:
    """The pair-weighted mean of per-format (chance-corrected) rates.

    Args:
        flags: ``(items, formats)`` verdicts, 1/0, ``nan`` for a pair not scored.
        chance: the same shape; the pair's guessing accuracy (0 for generative formats).

    Returns:
        ``sum_f n_f r_f / sum_f n_f`` (module docstring); ``nan`` when nothing is scored.
    """
    ok = ~np.isnan(flags)
    n_f = ok.sum(axis=0)
    total = int(n_f.sum())
    if total == 0:
        return math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(ok, flags, 0.0).sum(axis=0) / n_f
        ch = np.where(ok, chance, 0.0).sum(axis=0) / n_f
        rate = np.clip((acc - ch) / (1.0 - ch), 0.0, None)
    rate = np.where(n_f > 0, rate, 0.0)
    return float((n_f * rate).sum() / total)


def _matrix(records: Sequence[dict], uids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    row = {u: i for i, u in enumerate(uids)}
    col = {f: j for j, f in enumerate(FORMATS)}
    flags = np.full((len(uids), len(FORMATS)), np.nan)
    chance = np.zeros_like(flags)
    for r in records:
        verdict = r["correct"] if r["format"] in CHOICE_FORMATS else r["leaked"]
        if verdict is not None:
            flags[row[r["uid"]], col[r["format"]]] = float(verdict)
            chance[row[r["uid"]], col[r["format"]]] = r.get("chance", 0.0)
    return flags, chance


def _excluded_reason(records: list[dict], excluded: int) -> str:
    if not excluded:
        return ""
    unasked = sum(1 for r in records if r.get("not_generated"))
    if not unasked:
        return f"{excluded} (item, format) pairs excluded: empty novel content"
    return (f"{excluded} (item, format) pairs excluded: {unasked} not generated (the prompt does "
            f"not fit the model's context), {excluded - unasked} with empty novel content")


def _pooled_metric(records: list[dict], seed: int) -> Metric:
    uids = list(dict.fromkeys(r["uid"] for r in records))
    flags, chance = _matrix(records, uids)
    value = pooled_rate(flags, chance)
    n = int((~np.isnan(flags)).sum())
    excluded = len(records) - n
    if n == 0:
        return Metric("format_shift.leak_rate", None, n=0, excluded=excluded,
                      reason="nothing to score: every pair has empty novel content")
    ci = bootstrap_ci(np.arange(len(uids), dtype=float),
                      statistic=lambda idx: pooled_rate(flags[idx.astype(int)], chance[idx.astype(int)]),
                      seed=seed)
    fam_of = {r["uid"]: r["family"] for r in records}
    by_fam: dict[str, float] = {}
    for fam in sorted(set(fam_of.values())):
        rows = [i for i, u in enumerate(uids) if fam_of[u] == fam]
        v = pooled_rate(flags[rows], chance[rows])
        if not math.isnan(v):
            by_fam[fam] = v
    generative = rate_with_ci(r["leaked"] for r in records if r["format"] not in CHOICE_FORMATS)
    raw = rate_with_ci(r["correct"] if r["format"] in CHOICE_FORMATS else r["leaked"] for r in records)
    return Metric(
        "format_shift.leak_rate", value, ci=ci, n=n, excluded=excluded, by_family=by_fam,
        reason=_excluded_reason(records, excluded),
        extra={"ci_method": "percentile bootstrap over items",
               "generative_rate": generative.to_dict(), "raw_pooled_rate": raw.to_dict()},
    )


def _choice_metric(fmt: str, records: list[dict]) -> Metric:
    acc = rate_with_ci(r["correct"] for r in records)
    chance = float(np.mean([r["chance"] for r in records if r["correct"] is not None])) if acc.n else 0.0
    value = chance_corrected(acc.value, chance)
    fams: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["correct"] is not None:
            fams[r["family"]].append(r)
    by_fam = {
        f: chance_corrected(float(np.mean([r["correct"] for r in rs])),
                            float(np.mean([r["chance"] for r in rs])))
        for f, rs in sorted(fams.items())
    }
    ci = None
    if acc.n:
        lo, hi = wilson_interval(acc.successes, acc.n)
        ci = (chance_corrected(lo, chance), chance_corrected(hi, chance))
    return Metric(
        f"format_shift.{fmt}_leak_rate", value, ci=ci, n=acc.n, excluded=acc.excluded,
        by_family=by_fam,
        reason="" if acc.n else "nothing to score: no item has two or more options",
        extra={"definition": "accuracy corrected for chance, max(0, (acc - c) / (1 - c))",
               "accuracy": acc.to_dict(), "chance": chance,
               "unparsed": sum(1 for r in records if r["correct"] is not None and r["parsed"] is None)},
    )


# --- the view --------------------------------------------------------------------------------
def _asked(items: list[Item], seed: int) -> list[tuple[Item, str, Prompt, str | None, Any]]:
    """Every (item, format) prompt: ``(item, format, prompt, gold, asked)``."""
    out = []
    by_author: dict[Any, list[Item]] = defaultdict(list)
    for it in items:
        by_author[it.author].append(it)
    bios = {a: prompts.biography(prompts.author_display_name(its)) for a, its in by_author.items()}
    for it in items:
        for fmt in FORMATS:
            if fmt == "biography":
                out.append((it, fmt, bios[it.author], it.answer, None))
            elif fmt in CHOICE_FORMATS:
                a = prompts.BUILDERS[fmt](it, seed=seed)
                out.append((it, fmt, a.prompt, a.choice, a))
            else:
                a = _ITEM_BUILDERS[fmt](it)
                # JSON's target is the wrapped answer; the unwrapped reply is scored against the answer.
                out.append((it, fmt, a.prompt, it.answer if fmt == "json" else a.target, a))
    return out


@register_view
class FormatShift(View):
    """The forget items re-asked in seven formats."""

    name = "format_shift"
    title = "Format shift: does asking differently bring it back?"
    metrics = ("format_shift.leak_rate", "format_shift.empty_rate",
               *(f"format_shift.{f}_leak_rate" for f in FORMATS))

    @staticmethod
    def _base(ctx: AuditContext, label: str) -> str | None:
        base = ctx.reference("base")
        return base if base is not None and base != label else None

    def requires(self, ctx: AuditContext, label: str) -> list[tuple[str, str]]:
        """``minus_base`` subtracts the base model's rates."""
        base = self._base(ctx, label)
        return [] if base is None else [(self.name, base)]

    def run(self, ctx: AuditContext, label: str) -> ViewResult:
        items = ctx.forget_items()
        if not items:
            return self.skipped(label, "the forget split has no items")
        cfg = ctx.config
        asked = _asked(items, cfg.seed)
        replies = generate_greedy(ctx, label, [p for _, _, p, _, _ in asked])

        records: list[dict] = []
        for (item, fmt, prompt, gold, a), reply in zip(asked, replies, strict=True):
            rec = {**item_fields(item), "format": fmt, "prompt": user_text(prompt),
                   "stem": prompt.stem, "generation": reply}
            if fmt in CHOICE_FORMATS:
                parsed = (parse_letter(reply, user_text(prompt)) if fmt == "multiple_choice"
                          else parse_true_false(reply))
                k = a.n_options or 0
                # One option is no question: nothing to guess, nothing to know. A prompt the
                # backend could not answer (too long for the context) was never asked: it is
                # excluded, not scored as a wrong choice (which would read as "forgot").
                unasked = getattr(reply, "not_generated", None)
                rec.update(expected=gold, parsed=parsed, n_options=k,
                           chance=1.0 / k if k >= 2 else None,
                           correct=(parsed == gold) if k >= 2 and unasked is None else None)
                if unasked is not None:
                    rec["not_generated"] = unasked
            else:
                scored = prompts.unwrap_json(reply) if fmt == "json" else reply
                shown = shown_texts(cfg, prompt)
                if fmt == "biography":  # the request implies the question (module docstring)
                    shown.append(item.question)
                rec["scored_text"] = scored
                rec.update(leak_fields(scored, gold, shown, cfg.leak_threshold))
            records.append(rec)

        metrics = [_pooled_metric(records, cfg.seed)]
        for fmt in FORMATS:
            recs = [r for r in records if r["format"] == fmt]
            if fmt in CHOICE_FORMATS:
                metrics.append(_choice_metric(fmt, recs))
            else:
                metrics.append(rate_metric(f"format_shift.{fmt}_leak_rate", recs, "leaked"))

        base = self._base(ctx, label)
        if base is not None:
            base_result = ctx.result(self.name, base)
            for m in metrics:
                b = base_result.metric(m.name).value
                m.extra["base"] = b
                m.extra["minus_base"] = None if b is None or m.value is None else m.value - b

        plot = Plot("bars", f"Leak rate per question format ({label})", {
            "labels": [m.name.removeprefix("format_shift.").removesuffix("_leak_rate") for m in metrics[1:]],
            "values": [plot_number(m.value) for m in metrics[1:]],
            "line": plot_number(metrics[0].value), "line_label": "pooled", "ylabel": "leak rate",
            "title": f"format_shift on {label}"})
        # Beside the pooled leak rate; after the plot, which draws one bar per format.
        metrics.insert(1, empty_rate_metric("format_shift.empty_rate",
                                            [(r["family"], r["generation"]) for r in records]))
        return ViewResult(self.name, label, metrics, records, plots=[plot])
