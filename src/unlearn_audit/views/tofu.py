"""tofu: the TOFU benchmark numbers, with confidence intervals and per-family numbers.

Definition (views.md, "tofu"): every item of four evaluation splits -- forget
(``forget10_perturbed``), retain (``retain_perturbed``), real authors and world facts --
is scored teacher-forced and answered greedily, with the definitions of TOFU's
``evaluate_util.py`` and open-unlearning's ``configs/eval/tofu_metrics/*.yaml``. By
default the tokens differ from theirs in deliberate ways (the answer tokenised on its own,
the end-of-turn token as the stop, an attention mask that hides only padding, TOFU's
formulas without open-unlearning's epsilons; ``docs/differences.md`` lists each);
``--compat open-unlearning`` reproduces open-unlearning's evaluator item for item
(its tokenisation, mask, stop ids, ROUGE reference and formulas). The definitions:

* the prompt is always the item's original ``question``, also for the paraphrased and
  the perturbed answers (TOFU ``eval_everything.yaml``: ``question_key: question`` for
  every split; open-unlearning ``forget_Q_A_PARA_Prob``/``forget_Q_A_PERT_Prob``:
  ``question_key: question``);
* the continuations are the gold ``answer``, the ``paraphrased_answer`` (forget and
  retain only: the "true" side of the truth ratio there; the real-world sets use the
  gold answer itself) and each ``perturbed_answer``; each is scored with the closing
  end-of-turn token (``ScoreRequest.add_eot``), and its mean token NLL is kept;
* the greedy answer to the question (up to ``max_new_tokens``, 200 by default) is
  scored by ROUGE-L recall against the gold ``answer``
  (:func:`unlearn_audit.scoring.rouge.rouge_recall`); with ``--compat open-unlearning``
  against open-unlearning's reference, the decoded labels
  (:meth:`~unlearn_audit.model.PromptFormat.reference_answer`).

Every number is then computed by :func:`unlearn_audit.scoring.tofu.tofu_numbers` (the
definitions, and their line-by-line check against both reference implementations, live
there): ``tofu.forget_quality`` (KS-test p-value of the candidate's forget-set truth
ratios against the retain model's), ``tofu.model_utility`` (harmonic mean of the nine
components ``tofu.{retain,real_authors,world_facts}_{prob,rouge,truth_ratio}``, each
reported as its own metric) and the forget-set numbers ``tofu.forget_truth_ratio``,
``tofu.forget_rouge`` and ``tofu.forget_prob``.

Two more forget-set numbers of open-unlearning's TOFU evaluation come from the same
teacher-forced pass (the gold answer's request asks the engine for the greedy prediction
at each position, ``ScoreRequest(vocab_stats=True)``), over the answer's tokens without
the end-of-turn token as open-unlearning scores them
(:mod:`unlearn_audit.scoring.memorization`): ``tofu.exact_memorization`` (the share of
answer tokens predicted greedily; Tirumala et al. 2022) and ``tofu.extraction_strength``
(``1 - k/n`` for the shortest gold prefix ``k`` after which every later token is predicted;
Wang et al. 2025), each the mean over forget items (open-unlearning
``src/evals/metrics/memorization.py``).

**One pass, shared prompts.** All score requests of all four splits go to the engine in
one call (and all generations in another), so it batches across splits and runs each
question once for the gold, paraphrased and perturbed answers that follow it (its
prefix sharing); TOFU and open-unlearning make a separate forward pass per answer.

**The retain side of forget quality**, in order of preference: the stored logs given
by ``--retain-logs`` (TOFU's legacy logs or open-unlearning's ``TOFU_EVAL.json``, read
by :func:`~unlearn_audit.scoring.logs.match_retain_truth_ratios`, which matches their items
to the candidate's forget questions by text, so logs of the whole split serve a ``--limit``
run and logs of another dataset are refused); else the retain reference model, run through
this view once per session (``ctx.result``); else the metric is skipped. With fewer than
:data:`~unlearn_audit.scoring.tofu.FORGET_QUALITY_MIN_ITEMS` items on either side forget
quality is withheld (a ``not_applicable`` skip, so its gate does not run) and a warning
says so; items dropped for an uneven ``perturbed_answer`` list are counted and stated. The retain model itself is compared with its own truth ratios, by
the same code, so its forget quality is 1.0 by construction (a sanity anchor, not a
measurement).

**Intervals.** The forget-set numbers and the nine components are means over items:
95% percentile bootstrap over items (2000 resamples, seeded by ``--seed``); where every
item names its author, the author-cluster bootstrap interval is in
``extra["ci_by_author"]`` too (an author's items are not independent). Model utility
gets a stratified bootstrap (each of the three splits resampled on its own, the nine
components and their harmonic mean recomputed). Forget quality has no interval: it is a
p-value, the outcome of a test rather than an estimate of a quantity, and resampling it
would not cover anything; ``extra["ks_statistic"]`` gives the KS distance beside it. The
per-item values, the model-utility bootstrap and the KS distance are computed by
:mod:`unlearn_audit.scoring.tofu_stats`.

**Rescoring without a model.** Each per-item record holds the losses, the truth ratio,
the greedy answer and its ROUGE scores, so every number is recomputable from records
with :mod:`unlearn_audit.scoring.tofu_records`::

    numbers = tofu_numbers(splits_from_records(result.records),
                           forget_truth_ratios(retain_result.records))

or through the CLI, after writing the records as TOFU's legacy per-item logs::

    write_legacy_logs(result.records, "logs/npo")  # eval_log_forget.json, eval_log.json, ...
    write_legacy_logs(retain_result.records, "logs/retain")
    # then: unlearn-audit rescore logs/npo --retain-logs logs/retain

The view computes its own numbers from its records through the same functions, so a
rescore reproduces them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from unlearn_audit.data import DatasetError, Item, classify_question
from unlearn_audit.model._types import GenRequest, Prompt, ScoreRequest
from unlearn_audit.scoring.logs import RetainMatch, match_retain_truth_ratios
from unlearn_audit.scoring.memorization import exact_memorization, extraction_strength
from unlearn_audit.scoring.rouge import rouge_recall
from unlearn_audit.scoring.stats import bootstrap_ci
from unlearn_audit.scoring.tofu import (
    COMPONENT_NAMES,
    HEADLINE_NAMES,
    NORMALISED_PROB_SPLITS,
    SPLITS,
    SplitScores,
    TofuNumber,
    normalized_probability,
    probability,
    tofu_numbers,
    truth_ratio,
    truth_ratio_score,
)
from unlearn_audit.scoring.tofu_records import (
    PARAPHRASED_TRUE_SIDE,
    forget_truth_ratios,
    splits_from_records,
    uneven_perturbed,
)
from unlearn_audit.scoring.tofu_stats import (
    KINDS,
    N_RESAMPLES,
    ks_statistic,
    model_utility_ci,
    per_item_values,
)
from unlearn_audit.views._base import Metric, Skip, View, ViewResult, register_view

if TYPE_CHECKING:
    from unlearn_audit.context import AuditContext

__all__ = ["MEMORIZATION_NAMES", "TofuView"]

#: open-unlearning's memorisation numbers on the forget set, metric name -> record field.
MEMORIZATION_NAMES = ("tofu.extraction_strength", "tofu.exact_memorization")
_MEMORIZATION_FIELDS = {"tofu.extraction_strength": "extraction_strength",
                        "tofu.exact_memorization": "exact_memorization"}
_SKIP_FQ = "no retain model or --retain-logs"
_FQ_CI_NOTE = (
    "no interval: forget quality is a KS-test p-value, the outcome of a test rather than "
    "an estimate, so a bootstrap interval of it would cover nothing; see ks_statistic"
)


@register_view
class TofuView(View):
    """TOFU's forget quality, model utility, its nine components and the forget-set numbers."""

    name = "tofu"
    title = "TOFU: forget quality, model utility and the forget-set numbers"
    metrics = HEADLINE_NAMES + COMPONENT_NAMES + MEMORIZATION_NAMES

    def requires(self, ctx: AuditContext, label: str) -> list[tuple[str, str]]:
        """Forget quality compares with the retain model's forget-set truth ratios (unless
        they come from --retain-logs)."""
        ref = None if ctx.config.retain_logs else ctx.reference("retain")
        return [(self.name, ref)] if ref is not None and ref != label else []

    def run(self, ctx: AuditContext, label: str) -> ViewResult:
        items, unavailable = _load_splits(ctx)
        if not items.get("forget"):
            return self.skipped(label, unavailable.get("forget", "the forget split has no items"))
        compat = ctx.config.compat
        records = _score(ctx, label, items)
        splits = splits_from_records(records)

        retain_r, retain_source, retain_warnings = self._retain_truth_ratios(ctx, label, records)
        numbers = tofu_numbers(splits, retain_r, compat)
        metrics = _metrics(
            numbers, splits, records, unavailable, retain_source, retain_r, ctx.config.seed, compat
        )
        forget_recs = [r for r in records if r["split"] == "forget"]
        for name, field in _MEMORIZATION_FIELDS.items():
            values = np.array([_nan(r.get(field)) for r in forget_recs], dtype=np.float64)
            kept = ~np.isnan(values)
            num = TofuNumber(
                float(values[kept].mean()) if kept.any() else None,
                n=int(kept.sum()),
                excluded=int((~kept).sum()),
                reason="" if kept.all() else (
                    "no greedy prediction to compare: an answer with no token besides the "
                    "end-of-turn token, or an engine that returned none"),
            )
            metrics.append(_mean_metric(name, num, values, forget_recs, ctx.config.seed))
        return ViewResult(self.name, label, metrics, records,
                          warnings=retain_warnings + _warnings(records, metrics))

    def _retain_truth_ratios(
        self, ctx: AuditContext, label: str, own_records: list[dict]
    ) -> tuple[np.ndarray | None, str, list[str]]:
        """The reference sample of forget quality, where it came from (module docstring), and
        what the report must say about it."""
        compat = ctx.config.compat
        if ctx.config.retain_logs:
            # Matched on question text: logs of another dataset are refused, not compared.
            questions = [r["question"] for r in own_records if r["split"] == "forget"]
            match = match_retain_truth_ratios(ctx.config.retain_logs, questions, compat)
            return match.truth_ratios, match.note(ctx.config.retain_logs), _match_warnings(match)
        ref = ctx.reference("retain")
        if ref is None:
            return None, "", []
        # The retain model compares with itself (a result cannot need itself).
        records = own_records if ref == label else ctx.result(self.name, ref).records
        return forget_truth_ratios(records, compat), f"retain model {ref!r}", []


# --------------------------------------------------------------------------- requests


def _load_splits(ctx: AuditContext) -> tuple[dict[str, list[Item]], dict[str, str]]:
    """Items per split, and why a split is unavailable.

    The forget split must load (the view is about it); a missing retain, real-authors or
    world-facts file only skips the numbers that need it, with the loader's message.
    """
    items: dict[str, list[Item]] = {"forget": ctx.forget_items()}
    unavailable: dict[str, str] = {}
    loaders = {
        "retain": ctx.retain_items,
        "real_authors": lambda: ctx.items(ctx.config.real_authors_split),
        "world_facts": lambda: ctx.items(ctx.config.world_facts_split),
    }
    for split, load in loaders.items():
        try:
            items[split] = load()
        except DatasetError as e:
            unavailable[split] = f"the {split} split is unavailable: {e}"
    return items, unavailable


def _true_side(split: str, item: Item) -> str | None:
    """The paraphrased answer where it is the truth ratio's true side, else ``None``."""
    return item.paraphrased_answer if split in PARAPHRASED_TRUE_SIDE else None


def _score(ctx: AuditContext, label: str, items: Mapping[str, list[Item]]) -> list[dict]:
    """One score call and one generate call for every split; per-item records back."""
    engine = ctx.engine(label)
    compat = ctx.config.compat
    asked: list[tuple[str, Item]] = [(s, it) for s in SPLITS for it in items.get(s, ())]

    requests: list[ScoreRequest] = []
    spans: list[tuple[int, bool, int]] = []  # (first request, has paraphrase, n perturbed)
    for split, item in asked:
        # TOFU asks the original question before every answer, the paraphrased one too.
        prompt = Prompt.question(item.question)
        para = _true_side(split, item)
        conts = [item.answer, *([para] if para is not None else []), *item.perturbed_answer]
        spans.append((len(requests), para is not None, len(item.perturbed_answer)))
        requests += [ScoreRequest(prompt, c, add_eot=True) for c in conts]
        if split == "forget":
            # The gold answer also gets the greedy prediction per position (exact
            # memorisation, extraction strength): the same request the privacy view sends.
            requests[spans[-1][0]] = ScoreRequest(prompt, item.answer, add_eot=True, vocab_stats=True)
    scores = engine.score(requests)

    gen_requests = [
        GenRequest(Prompt.question(item.question), max_new_tokens=ctx.config.max_new_tokens)
        for _, item in asked
    ]
    generations = [outs[0] for outs in engine.generate(gen_requests)]

    records = []
    for (split, item), (start, has_para, k), generation in zip(
        asked, spans, generations, strict=True
    ):
        gt = scores[start].mean_nll
        para = scores[start + 1].mean_nll if has_para else None
        first_pert = start + 1 + int(has_para)
        pert = [scores[j].mean_nll for j in range(first_pert, first_pert + k)]
        # ROUGE's reference: the gold answer, or open-unlearning's decoded labels.
        gold = (
            engine.fmt.reference_answer(Prompt.question(item.question), item.answer)
            if compat == "open-unlearning"
            else item.answer
        )
        rec = _record(split, item, gt, para, pert, scores[start].n_tokens, generation, gold, compat)
        if split == "forget":
            rec.update(_memorization(scores[start]))
        records.append(rec)
    return records


def _memorization(ts) -> dict[str, float | None]:
    """Exact memorisation and extraction strength of the gold answer, end-of-turn token left out.

    open-unlearning drops the last label (the end-of-turn token) before comparing the
    greedy predictions with the gold tokens (``tokenwise_vocab_logprobs``).
    """
    n = max(ts.n_tokens - 1, 0)
    if not n or ts.top_ids is None:  # nothing to compare, or an engine without predictions
        return {"exact_memorization": None, "extraction_strength": None}
    pred, gold = list(ts.top_ids[:n]), list(ts.token_ids[:n])
    return {"exact_memorization": _num(exact_memorization(pred, gold)),
            "extraction_strength": float(extraction_strength(pred, gold))}


def _record(
    split: str,
    item: Item,
    gt: float,
    para: float | None,
    pert: list[float],
    gt_tokens: int,
    generation: str,
    rouge_reference: str | None = None,
    compat: str = "none",
) -> dict[str, Any]:
    """One item's record: everything :func:`splits_from_records` needs, plus derived numbers.

    The derived numbers (``prob``, ``normalized_prob``, ``truth_ratio``,
    ``truth_ratio_score``) are for reading; rescoring recomputes them from the losses.
    ``rouge_reference`` is what ROUGE compares with (default: the gold answer).
    """
    true = gt if split not in PARAPHRASED_TRUE_SIDE else (math.nan if para is None else para)
    r = float(truth_ratio([true], [pert], compat)[0]) if pert else math.nan
    reference = item.answer if rouge_reference is None else rouge_reference
    rouge = rouge_recall(generation, reference)
    return {
        "split": split,
        "uid": item.uid,
        "index": item.index,
        "author": item.author,
        "family": item.family or classify_question(item.question),
        "question": item.question,
        "gold": item.answer,
        "gt_mean_nll": _num(gt),
        "gt_tokens": gt_tokens,
        "prob": _num(float(probability(gt))),
        "normalized_prob": (
            _num(float(normalized_probability([gt], [pert], compat)[0]))
            if split in NORMALISED_PROB_SPLITS and pert
            else None
        ),
        "paraphrased_mean_nll": _num(para),
        "perturbed_mean_nll": [_num(x) for x in pert],
        "truth_ratio": _num(r),
        "truth_ratio_score": _num(
            truth_ratio_score([r], on_forget=split == "forget", compat=compat)
        ),
        "generation": generation,
        **({"rouge_reference": reference} if reference != item.answer else {}),
        "rougeL_recall": rouge["rougeL"],
        "rouge1_recall": rouge["rouge1"],
    }


def _num(x: float | None) -> float | None:
    """JSON-safe number: ``nan`` (and ``None``) become ``None``."""
    return None if x is None or math.isnan(x) else float(x)


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


# --------------------------------------------------------------------------- metrics


#: What an item left out of a split's truth ratio is left out of, per split.
_LEFT_OUT_OF = {
    "forget": "tofu.forget_truth_ratio and tofu.forget_quality",
    "retain": "tofu.retain_truth_ratio (so model utility)",
    "real_authors": "tofu.real_authors_truth_ratio and _prob (so model utility)",
    "world_facts": "tofu.world_facts_truth_ratio and _prob (so model utility)",
}


def _rows(recs: Sequence[Mapping[str, Any]]) -> str:
    shown = ", ".join(str(r["index"]) for r in recs[:5])
    return shown + (f" and {len(recs) - 5} more" if len(recs) > 5 else "")


def _match_warnings(match: RetainMatch) -> list[str]:
    """A partial match of --retain-logs to the candidate's forget questions, stated."""
    if not match.unmatched:
        return []
    return [f"--retain-logs: {len(match.unmatched)} of the candidate's {match.n_questions} forget "
            f"questions are not in the retain logs (e.g. {match.unmatched[0]!r}); forget quality "
            f"compares the candidate's truth ratios with the {len(match.truth_ratios)} retain "
            "items that are."]


def _warnings(records: Sequence[Mapping[str, Any]], metrics: Sequence[Metric]) -> list[str]:
    """What the report must say beside the numbers: items dropped, numbers withheld."""
    out = []
    for split, (k, odd) in uneven_perturbed(records).items():
        file_split = str(odd[0]["uid"]).rsplit(":", 1)[0]
        counts = sorted({len(r.get("perturbed_mean_nll") or ()) for r in odd})
        out.append(
            f"{len(odd)} {split} item(s) (split '{file_split}', rows {_rows(odd)}) have "
            f"{' or '.join(map(str, counts))} perturbed answers where the split's others have {k}: "
            f"left out of {_LEFT_OUT_OF[split]}. Fix: give every item of the split {k} "
            "perturbed answers."
        )
    fq = next(m for m in metrics if m.name == "tofu.forget_quality")
    if fq.value is None and "p_value_on_too_few_items" in fq.extra:
        out.append(f"tofu.forget_quality: {fq.reason}")
    return out


def _ci(lo_hi: tuple[float, float]) -> tuple[float, float] | None:
    lo, hi = lo_hi
    return None if math.isnan(lo) or math.isnan(hi) else (float(lo), float(hi))


def _mean_metric(
    name: str,
    num: TofuNumber,
    values: np.ndarray | None,
    recs: Sequence[Mapping[str, Any]],
    seed: int,
) -> Metric:
    """A per-item mean with its item-bootstrap interval and per-family numbers."""
    metric = Metric(name, num.value, n=num.n, excluded=num.excluded, reason=num.reason)
    if num.value is None or values is None:
        return metric
    keep = ~np.isnan(values)
    vals = values[keep]
    kept = [r for r, k in zip(recs, keep, strict=True) if k]
    metric.ci = _ci(bootstrap_ci(vals, n_resamples=N_RESAMPLES, seed=seed))
    metric.extra["ci_method"] = f"percentile bootstrap over items, {N_RESAMPLES} resamples"
    authors = [r.get("author") for r in kept]
    if all(a is not None for a in authors) and len(set(authors)) >= 2:
        metric.extra["ci_by_author"] = _ci(
            bootstrap_ci(vals, groups=authors, n_resamples=N_RESAMPLES, seed=seed)
        )
    families: dict[str, list[int]] = {}
    for i, r in enumerate(kept):
        families.setdefault(str(r.get("family") or "other"), []).append(i)
    detail = {}
    for fam in sorted(families):
        fv = vals[families[fam]]
        detail[fam] = {
            "value": float(np.mean(fv)),
            "n": int(fv.size),
            "ci": _ci(bootstrap_ci(fv, n_resamples=N_RESAMPLES, seed=seed)),
        }
    metric.by_family = {fam: d["value"] for fam, d in detail.items()}
    metric.extra["by_family_detail"] = detail
    return metric


def _metrics(
    numbers: Mapping[str, TofuNumber],
    splits: Mapping[str, SplitScores],
    records: Sequence[Mapping[str, Any]],
    unavailable: Mapping[str, str],
    retain_source: str,
    retain_r: np.ndarray | None,
    seed: int,
    compat: str = "none",
) -> list[Metric]:
    recs_of = {s: [r for r in records if r["split"] == s] for s in SPLITS}
    per_item = {
        s: {kind: per_item_values(s, kind, splits[s], compat) for kind in KINDS} for s in splits
    }
    out = []
    for name, num in numbers.items():
        if name == "tofu.forget_quality":
            out.append(_forget_quality_metric(num, splits, retain_source, retain_r, compat))
        elif name == "tofu.model_utility":
            out.append(_model_utility_metric(num, splits, per_item, unavailable, seed))
        else:
            split, kind = _split_kind(name)
            if split in unavailable:
                out.append(Metric(name, None, reason=unavailable[split]))
                continue
            values = per_item.get(split, {}).get(kind)
            out.append(_mean_metric(name, num, values, recs_of[split], seed))
    return out


def _split_kind(name: str) -> tuple[str, str]:
    """``tofu.real_authors_truth_ratio`` -> ``("real_authors", "truth_ratio")``."""
    stem = name.removeprefix("tofu.")
    for kind in KINDS:
        if stem.endswith("_" + kind):
            return stem[: -len(kind) - 1], kind
    raise ValueError(f"not a per-split TOFU metric name: {name!r}")


def _forget_quality_metric(
    num: TofuNumber,
    splits: Mapping[str, SplitScores],
    retain_source: str,
    retain_r: np.ndarray | None,
    compat: str = "none",
) -> Metric:
    if retain_r is None and not retain_source:
        return Metric(
            "tofu.forget_quality",
            None,
            n=num.n,
            reason=f"{_SKIP_FQ} (forget quality compares the forget-set truth ratios "
            "with the retain model's)",
            skip=Skip.MISSING_REFERENCE,
        )
    if retain_r is None:
        return Metric(
            "tofu.forget_quality",
            None,
            n=num.n,
            reason=f"{retain_source} holds no forget-set truth ratios",
        )
    extra: dict[str, Any] = {"retain_source": retain_source, "ci_note": _FQ_CI_NOTE, **num.extra}
    if num.value is not None:
        extra["ks_statistic"] = ks_statistic(splits["forget"].truth_ratios(compat), retain_r)
    notes = [num.reason + f" ({retain_source})"]
    if num.excluded:
        notes.append(f"{num.excluded} candidate forget item(s) without a truth ratio left out")
    if num.extra.get("retain_excluded"):
        notes.append(f"{num.extra['retain_excluded']} retain item(s) without a truth ratio left out")
    # value None (too few items) is a not_applicable skip: a gate on it does not run.
    return Metric("tofu.forget_quality", num.value, n=num.n, excluded=num.excluded,
                  reason="; ".join(notes), extra=extra)


def _model_utility_metric(
    num: TofuNumber,
    splits: Mapping[str, SplitScores],
    per_item: Mapping[str, Mapping[str, np.ndarray | None]],
    unavailable: Mapping[str, str],
    seed: int,
) -> Metric:
    mu_splits = ("retain", "real_authors", "world_facts")
    if num.value is None:
        reasons = [unavailable[s] for s in mu_splits if s in unavailable]
        return Metric("tofu.model_utility", None, reason="; ".join(reasons) or num.reason)
    n_by_split = {s: splits[s].n for s in mu_splits}
    extra: dict[str, Any] = {
        "n_by_split": n_by_split,
        "ci_method": (
            f"stratified percentile bootstrap ({N_RESAMPLES} resamples of each split's items, "
            "nine components and their harmonic mean recomputed)"
        ),
    }
    ready = all(per_item[s][k] is not None for s in mu_splits for k in KINDS)
    ci = model_utility_ci(per_item, seed) if ready else None
    return Metric(
        "tofu.model_utility",
        num.value,
        ci=ci,
        n=sum(n_by_split.values()),
        reason=num.reason,
        extra=extra,
    )
