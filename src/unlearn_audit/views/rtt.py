"""rtt (retrain-to-test): can a little fine-tuning bring it back?

Definition (views.md, "rtt"): the forget authors, sorted by author id, are split in two
halves: the first ``floor(k / 2)`` are half A, the rest half B (deterministic; with
``--limit`` only the authors of the kept items count, and fewer than two authors skips the
view). A *copy* of the model is fine-tuned on half A's question-answer pairs (the
canonical question, :func:`unlearn_audit.prompts.direct`, answered by the gold answer)
with a fixed small budget, seeded (:meth:`unlearn_audit.model.Engine.finetuned`). Half B's items
are asked before and after exactly as novel_recall asks them (the question and,
separately, the paraphrased question; greedy; the corrected scorer against what was
shown).

- ``rtt.recovery_delta_pp``: ``(leak rate after - leak rate before) * 100`` on half B,
  over the same (item, question kind) pairs; pairs with empty novel content are
  ``excluded``. 95% interval: bootstrap over half-B items (both kinds of an item resampled
  together) of the per-pair change.
- ``rtt.recovery_delta_vs_control_pp``: the candidate's change minus the retain model's
  under the identical procedure (the control: a model that never saw the forget authors
  can only "recover" what the half-A training teaches about answering at all). Skipped
  without a retain reference.

The budget is the view's typed options (:data:`OPTIONS`, ``--view-option rtt.epochs=5``):
``epochs`` (3), ``batch_size`` (4), ``lr``, ``lora`` (``auto``: LoRA r=8 on all linear
layers for models of :data:`LORA_FROM_PARAMS` parameters or more, a full fine-tune below)
and ``lora_from_params``. The default learning rate is :data:`DEFAULT_LR` for the chosen
mode. The fine-tuned copy gets its own engine with the result cache disabled, so neither
the audited weights nor the audited model's cache entries are touched. The view reaches
the model only through the backend contract (:class:`unlearn_audit.model.Backend`).

Source: views.md; the seed paper reports +0.51 pp (3B), +0.84 pp (1B), +7.64 pp (8B)
against the retain control. The relearning attack: Lynch et al., "Eight Methods to
Evaluate Robust Unlearning in LLMs" (2024); Deeb & Roger, "Do Unlearning Methods Remove
Information from Language Model Weights?" (2024), the split-half fine-tune design.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from unlearn_audit import prompts
from unlearn_audit.model._types import FinetuneRequest, GenRequest
from unlearn_audit.scoring.stats import bootstrap_ci
from unlearn_audit.views._base import Metric, Skip, View, ViewResult, register_view
from unlearn_audit.views._leak import item_fields, leak_fields, shown_texts, user_text
from unlearn_audit.views._options import Option, values_of
from unlearn_audit.views.novel_recall import KINDS

if TYPE_CHECKING:
    from unlearn_audit.context import AuditConfig, AuditContext
    from unlearn_audit.data import Item
    from unlearn_audit.model import Backend

__all__ = ["DEFAULT_LR", "LORA_FROM_PARAMS", "Rtt", "RttBudget", "delta_metric",
           "leak_rate_of", "leak_records", "paired_rows", "split_authors"]

#: Models with at least this many parameters are fine-tuned with LoRA under ``lora=auto``:
#: every pretrained checkpoint (the smallest chat models have about 135M). A full fine-tune
#: at 1e-3 suits only the tiny world's from-scratch models (well under 1M parameters): on
#: SmolLM2-135M-Instruct it wrecked the model (full's leak rate on half B fell by 75 points),
#: so RTT could not tell full from retain; it was chosen there while this stood at 500M.
LORA_FROM_PARAMS = 50_000_000
#: Default learning rates. A full fine-tune is only chosen for small models (under
#: :data:`LORA_FROM_PARAMS`), whose own training used rates of 1e-3 and up. LoRA's is high
#: for LoRA because the budget is a handful of steps from a zero-initialised update: on the
#: smol world (3 epochs of 10 pairs, batch 4: 9 steps) 1e-4 changed no answer of any model,
#: so the view could not fail; at 1e-3 the laundered model's refusals came undone (+90 pp on
#: half B), npo recovered 10 pp, and full, retain and base kept every answer (0 pp).
DEFAULT_LR = {"full": 1e-3, "lora": 1e-3}


@dataclass(frozen=True)
class RttBudget:
    """The fixed fine-tuning budget of the retrain-to-test view.

    Attributes:
        epochs: passes over half A's QA pairs.
        lr: AdamW learning rate.
        batch_size: examples per step.
        lora: LoRA (r=8, all linear layers, merged afterwards) instead of a full fine-tune.
        seed: seeds LoRA initialisation and example order.
    """

    epochs: int = 3
    lr: float = DEFAULT_LR["full"]
    batch_size: int = 4
    lora: bool = False
    seed: int = 0

    @classmethod
    def from_config(cls, config: AuditConfig, n_params: int) -> RttBudget:
        """The budget for a model of ``n_params`` parameters: ``--view-option rtt.<name>=VALUE``
        over the defaults (:data:`OPTIONS`).

        Raises:
            ViewOptionError: a value of the wrong type or out of range, naming the option.
        """
        v = values_of(config, "rtt", OPTIONS)
        lora = n_params >= v["lora_from_params"] if v["lora"] == "auto" else v["lora"] == "true"
        lr = v["lr"] if v["lr"] is not None else DEFAULT_LR["lora" if lora else "full"]
        return cls(epochs=v["epochs"], lr=lr, batch_size=v["batch_size"], lora=lora, seed=int(config.seed))


#: The view's options: the fine-tuning budget.
OPTIONS = (
    Option("epochs", int, RttBudget.epochs, "passes over half A's QA pairs",
           check=lambda v: v >= 1, expect="a whole number >= 1"),
    Option("lr", float, None, "AdamW learning rate (default 1e-3, for a full fine-tune and for LoRA)",
           check=lambda v: v > 0, expect="a number > 0"),
    Option("batch_size", int, RttBudget.batch_size, "examples per step",
           check=lambda v: v >= 1, expect="a whole number >= 1"),
    Option("lora", str, "auto", "LoRA instead of a full fine-tune: auto (from lora_from_params "
           "parameters), true or false", choices=("auto", "true", "false")),
    Option("lora_from_params", int, LORA_FROM_PARAMS, "under lora=auto, models with at least this "
           "many parameters are fine-tuned with LoRA", check=lambda v: v >= 1, expect="a whole number >= 1"),
)


# --- shared with the quantization view --------------------------------------------------------


def split_authors(items: Sequence[Item]) -> tuple[list[str], list[str]] | str:
    """Half A and half B of the items' authors (sorted ids, first half A), or why not."""
    if any(it.author is None for it in items):
        return "some forget items have no author, so the authors cannot be split"
    authors = sorted({str(it.author) for it in items})
    if len(authors) < 2:
        return (f"the forget items cover {len(authors)} author(s); splitting into two halves "
                "needs at least 2 (raise --limit)")
    half = len(authors) // 2
    return authors[:half], authors[half:]


def leak_records(ctx: AuditContext, engine: Backend, items: Sequence[Item]) -> list[dict[str, Any]]:
    """Greedy answers of ``engine`` to the items, asked and scored as novel_recall does.

    Each item is asked by its question and by its paraphrased question
    (:data:`unlearn_audit.views.novel_recall.KINDS`), answered greedily up to
    ``max_new_tokens``, and scored by the corrected scorer against the gold of what was
    asked with the system prompt and the question as shown text. The requests equal
    novel_recall's, so on the audited model's own engine they are cache hits.

    Returns:
        One record per (item, kind): identifying fields, ``kind``, ``prompt``,
        ``generation`` and the leak fields (``leaked`` is ``None`` when excluded).
    """
    asked = [(item, build(item)) for item in items for build in KINDS.values()]
    reqs = [GenRequest(a.prompt, max_new_tokens=ctx.config.max_new_tokens) for _, a in asked]
    answers = [outs[0] for outs in engine.generate(reqs)] if reqs else []
    return [
        {**item_fields(item), "kind": a.format, "prompt": user_text(a.prompt), "generation": g,
         **leak_fields(g, a.target, shown_texts(ctx.config, a.prompt), ctx.config.leak_threshold)}
        for (item, a), g in zip(asked, answers, strict=True)
    ]


def leak_rate_of(flags: Sequence[bool | None]) -> float | None:
    vals = [bool(f) for f in flags if f is not None]
    return float(np.mean(vals)) if vals else None


def delta_metric(name: str, rows: Sequence[Mapping[str, Any]], *, seed: int, reason: str = "") -> Metric:
    """A change in leak rate, in percentage points, from paired per-(item, kind) changes.

    Definition: each row carries ``d`` (the change of one pair's leak verdict: -1, 0, +1,
    or a difference of such changes; ``None`` when the pair is excluded). The value is
    ``100 * mean(d)`` over non-excluded rows, which equals the difference of the two leak
    rates because both sides score the same pairs. The 95% interval is a cluster bootstrap
    over items (``uid``): the kinds of one item are resampled together. Per family and per
    kind the same mean is reported.

    Args:
        name: the views.md metric name.
        rows: ``{"uid", "family", "kind", "d"}`` per pair.
        seed: seed of the bootstrap.
        reason: note on exclusions.
    """
    kept = [r for r in rows if r["d"] is not None]
    excluded = len(rows) - len(kept)
    if not kept:
        return Metric(name, None, n=0, excluded=excluded,
                      reason=reason or "nothing to score: every pair has empty novel content")
    d = np.array([float(r["d"]) for r in kept]) * 100.0
    lo, hi = bootstrap_ci(d, groups=[r["uid"] for r in kept], seed=seed)
    fams: dict[str, list[float]] = {}
    kinds: dict[str, list[float]] = {}
    for r, v in zip(kept, d, strict=True):
        fams.setdefault(r["family"], []).append(v)
        kinds.setdefault(r["kind"], []).append(v)
    return Metric(
        name, float(d.mean()), ci=(lo, hi), n=len(kept), excluded=excluded,
        by_family={f: float(np.mean(v)) for f, v in sorted(fams.items())},
        reason=(reason or "pairs with empty novel content") if excluded else "",
        extra={"unit": "percentage points; n counts (item, question kind) pairs",
               "n_items": len({r["uid"] for r in kept}),
               "by_kind": {k: float(np.mean(v)) for k, v in sorted(kinds.items())}},
    )


def paired_rows(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Join two record lists on (uid, kind) into rows with ``d = after - before``."""
    by_key = {(r["uid"], r["kind"]): r for r in after}
    rows = []
    for b in before:
        a = by_key[(b["uid"], b["kind"])]
        ok = b["leaked"] is not None and a["leaked"] is not None
        rows.append({"uid": b["uid"], "family": b["family"], "kind": b["kind"],
                     "d": int(a["leaked"]) - int(b["leaked"]) if ok else None})
    return rows


# --- the view ---------------------------------------------------------------------------------


@register_view
class Rtt(View):
    """Fine-tune a copy on half the forget authors; does the other half come back?"""

    name = "rtt"
    title = "Retrain-to-test: can a little fine-tuning bring it back?"
    metrics = ("rtt.recovery_delta_pp", "rtt.recovery_delta_vs_control_pp")
    options = OPTIONS

    def requires(self, ctx: AuditContext, label: str) -> list[tuple[str, str]]:
        """The control is the retain model's recovery under the same budget."""
        control = ctx.reference("retain")
        return [(self.name, control)] if control is not None and control != label else []

    def run(self, ctx: AuditContext, label: str) -> ViewResult:
        items = ctx.forget_items()
        if not items:
            return self.skipped(label, "the forget split has no items")
        split = split_authors(items)
        if isinstance(split, str):
            return self.skipped(label, split)
        if ctx.spec(label).quantization is not None:
            return self.skipped(label, f"the model is loaded quantized ({ctx.spec(label).quantization}), "
                                       "which cannot be fine-tuned; audit it at full precision")
        half_a, half_b = split
        train = [it for it in items if it.author in set(half_a)]
        test = [it for it in items if it.author in set(half_b)]
        records, info = self._procedure(ctx, label, train, test, half_a, half_b)

        own_rows = [{"uid": r["uid"], "family": r["family"], "kind": r["kind"], "d": r["d"]}
                    for r in records]
        seed = ctx.config.seed
        delta = delta_metric("rtt.recovery_delta_pp", own_rows, seed=seed)
        delta.extra.update(info)
        control = self._control(ctx, label, records, seed)
        return ViewResult(self.name, label, [delta, control], records)

    def _procedure(self, ctx: AuditContext, label: str, train: Sequence[Item], test: Sequence[Item],
                   half_a: list[str], half_b: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Leak on half B before and after fine-tuning a copy on half A; per-pair records."""
        engine = ctx.engine(label)
        n_params = engine.n_params
        budget = RttBudget.from_config(ctx.config, n_params)
        before = leak_records(ctx, engine, test)

        t0 = time.time()
        examples = tuple((prompts.direct(it).prompt, it.answer) for it in train)
        # A fingerprint of its own (never the original's: sha256 of it, "rtt", the budget
        # and half A), though the copy's engine caches nothing anyway: training is not
        # bit-reproducible across machines.
        request = FinetuneRequest(examples, epochs=budget.epochs, lr=budget.lr,
                                  batch_size=budget.batch_size, lora=budget.lora, seed=budget.seed,
                                  purpose="rtt", tag=tuple(half_a))
        tuned = engine.finetuned(request, cache=False)
        train_s = time.time() - t0
        try:
            after = leak_records(ctx, tuned, test)
        finally:
            del tuned
            engine.release_memory()

        rows = paired_rows(before, after)
        records = []
        for b, a, row in zip(before, after, rows, strict=True):
            records.append({
                **{k: b[k] for k in ("uid", "author", "family", "kind", "prompt", "gold", "novel_words",
                                     "excluded")},
                "generation_before": b["generation"], "generation_after": a["generation"],
                "share_before": b["share"], "share_after": a["share"],
                "leaked_before": b["leaked"], "leaked_after": a["leaked"], "d": row["d"],
            })
        info = {
            "half_a": half_a, "half_b": half_b, "n_train_pairs": len(examples),
            "budget": asdict(budget), "n_params": int(n_params), "train_seconds": round(train_s, 2),
            "leak_rate_before": leak_rate_of([r["leaked_before"] for r in records]),
            "leak_rate_after": leak_rate_of([r["leaked_after"] for r in records]),
        }
        return records, info

    def _control(self, ctx: AuditContext, label: str, records: list[dict[str, Any]], seed: int) -> Metric:
        name = "rtt.recovery_delta_vs_control_pp"
        control = ctx.reference("retain")
        if control is None:
            return Metric(name, None, reason="no retain reference (a model with role 'retain') was given",
                          skip=Skip.MISSING_REFERENCE)
        # The retain model's own control is itself (a result cannot need itself).
        ctrl_result = None if control == label else ctx.result(self.name, control)
        if ctrl_result is not None and ctrl_result.metric("rtt.recovery_delta_pp").skipped:
            return Metric(name, None, reason=f"the control ({control}) was skipped: "
                          f"{ctrl_result.metric('rtt.recovery_delta_pp').reason}")
        ctrl = {(r["uid"], r["kind"]): r for r in (records if ctrl_result is None else ctrl_result.records)}
        rows = []
        for r in records:
            c = ctrl.get((r["uid"], r["kind"]))
            ok = c is not None and r["d"] is not None and c["d"] is not None
            rows.append({"uid": r["uid"], "family": r["family"], "kind": r["kind"],
                         "d": r["d"] - c["d"] if ok else None})
        m = delta_metric(name, rows, seed=seed)
        ctrl_d = [c["d"] for c in ctrl.values() if c["d"] is not None]
        m.extra.update({"control_model": control,
                        "control_delta_pp": float(np.mean(ctrl_d)) * 100 if ctrl_d else None})
        return m

