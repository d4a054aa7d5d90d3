"""Writing the report: ``report.md``, ``results.json``, ``items.jsonl`` and plots.

Input is what the audit tests measured (:class:`ViewOutcome`s, already judged); output is
deterministic apart from ``created``: rows, models and keys are sorted, so two runs on
the same models give byte-identical numbers and can be diffed.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn_audit.report._files import (
    PLOTS_DIR,
    PLOTS_MANIFEST,
    ReportFiles,
    append_no_follow,
    check_report_dir,
)
from unlearn_audit.report._gates import MISSING_REFERENCE
from unlearn_audit.report._markdown import md_code, md_json, md_link_target, md_text
from unlearn_audit.report._reference import KNOWN_VIEWS, Gate, view_of
from unlearn_audit.report._rows import ROLE_ORDER, MetricRow, ViewOutcome

__all__ = [
    "LEAK_METRICS",
    "PLOTS_MANIFEST",
    "RESULTS_SCHEMA_VERSION",
    "RunReport",
    "Verdict",
    "build_results",
    "format_ci",
    "format_value",
    "gate_rows",
    "is_rate",
    "render_markdown",
    "verdicts",
    "write_report",
]

RESULTS_SCHEMA_VERSION = 1
#: The headline leak rates drawn in the leak-by-view-and-family plot.
LEAK_METRICS = (
    "novel_recall.leak_rate",
    "format_shift.leak_rate",
    "best_of_n.leak_rate",
    "chain_of_clues.final_turn_leak_rate",
)
#: The summary plot's file name under ``plots/``.
SUMMARY_PLOT = "leak_by_view_and_family.png"
_OUTCOME_CELL = {"pass": "PASS", "fail": "**FAIL**", "info": "info", "skipped": "skipped", "error": "**ERROR**"}
_OP_CELL = {"<=": "≤", "<": "<", ">=": "≥", ">": ">"}


# --- formatting -----------------------------------------------------------------------------
def is_rate(metric: str) -> bool:
    """Rates (fractions in results.json) end in ``_rate``; report.md shows them as percentages."""
    return metric.endswith("_rate")


def _missing(value: float | None) -> str | None:
    """How report.md shows a number that is not one: ``—`` when absent, ``NaN`` or ``±inf``."""
    if value is None:
        return "—"
    try:
        f = float(value)
    except (TypeError, ValueError):  # a malformed payload must not cost the whole report
        return md_text(value, limit=40)  # nor shape it: this lands in a table cell
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return None


def format_value(metric: str, value: float | None) -> str:
    """A metric's value as report.md shows it: rates in %, ``_pp`` deltas signed, else 4 digits.

    A missing value reads ``—`` and a non-finite one ``NaN``/``inf``: one bad number never
    stops the report from being written.
    """
    shown = _missing(value)
    if shown is not None:
        return shown
    if is_rate(metric):
        return f"{100 * value:.2f}%"
    if metric.endswith("_pp"):
        return f"{value:+.2f} pp"
    return f"{value:.4g}"


def format_ci(metric: str, ci: list[float] | None) -> str:
    """A 95% interval as report.md shows it; ``—`` when there is none, ``NaN`` per missing end."""
    if not ci:
        return "—"
    if len(ci) != 2:
        return "—"
    lo, hi = ci
    if _missing(lo) is not None or _missing(hi) is not None:
        ends = [_missing(x) or (f"{100 * x:.2f}" if is_rate(metric) else f"{x:.4g}") for x in (lo, hi)]
        return f"[{ends[0]}, {ends[1]}]" + ("%" if is_rate(metric) else "")
    if is_rate(metric):
        return f"[{100 * lo:.2f}, {100 * hi:.2f}]%"
    return f"[{lo:.4g}, {hi:.4g}]"


def format_delta(metric: str, delta: float | None) -> str:
    """A change between two values (``diff``): signed, rates in percentage points."""
    shown = _missing(delta)
    if shown is not None:
        return shown
    if is_rate(metric):
        return f"{100 * delta:+.2f} pp"
    return f"{delta:+.4g}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _view_key(view: str) -> tuple[int, str]:
    return (KNOWN_VIEWS.index(view) if view in KNOWN_VIEWS else len(KNOWN_VIEWS), view)


# --- the run ---------------------------------------------------------------------------------
@dataclass
class Verdict:
    """A model's overall verdict: ``PASS``, ``FAIL`` or ``INCOMPLETE`` (``REFERENCE`` for references).

    Attributes:
        status: the verdict.
        summary: one line saying why.
        not_run: for a candidate, each gate that was not decided (``skipped`` or
            ``error``): ``{"metric", "outcome", "reason"}``, so an INCOMPLETE verdict says
            which gates did not run and why.
    """

    status: str
    summary: str
    not_run: list[dict[str, str]] = field(default_factory=list)


@dataclass
class RunReport:
    """Everything a report is made of.

    Attributes:
        created: ISO-8601 timestamp (the only field that changes between identical runs).
        package_version: ``unlearn_audit.__version__``.
        config: the run's configuration (``AuditConfig.to_dict()`` plus the gates file).
        models: label -> ``{"source", "role", "fingerprint"}``.
        outcomes: one per (view, model) that ran or failed to run.
        gates: the release gates, to list the ones no test evaluated.
        selected_views: the views this run was asked for (``None``: all).
        planned: the (view, model) pairs the session collected tests for; a pair without
            an outcome did not run (an interrupted or crashed run).
        interrupted: the run was stopped (Ctrl-C / SIGINT, or SIGTERM) before every test ran.
        not_run_reasons: (view, model) -> why that pair has no outcome, where known
            (a pytest-xdist worker that died while running it).
        computed: each (view, model) computation, ``{view, model, worker}``
            (see :mod:`unlearn_audit.runner`).
    """

    created: str
    package_version: str
    config: dict[str, Any]
    models: dict[str, dict[str, Any]]
    outcomes: list[ViewOutcome]
    gates: Mapping[str, Gate] = field(default_factory=dict)
    selected_views: tuple[str, ...] | None = None
    planned: tuple[tuple[str, str], ...] = ()
    interrupted: bool = False
    computed: list[dict[str, Any]] = field(default_factory=list)
    not_run_reasons: dict[tuple[str, str], str] = field(default_factory=dict)

    def model_order(self) -> list[str]:
        def key(label: str) -> tuple[int, str]:
            role = self.models.get(label, {}).get("role")
            return (ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER), label)

        return sorted(self.models, key=key)

    def sorted_outcomes(self) -> list[ViewOutcome]:
        order = {m: i for i, m in enumerate(self.model_order())}
        return sorted(self.outcomes, key=lambda o: (order.get(o.model, len(order)), _view_key(o.view)))

    def rows(self) -> list[MetricRow]:
        """Every row, sorted by model, view and the view's own metric order; plus a
        ``skipped`` row per gate no test evaluated for a candidate."""
        out: list[MetricRow] = []
        for o in self.sorted_outcomes():
            out.extend(o.rows)
        out.extend(gate_rows(self, out))
        order = {m: i for i, m in enumerate(self.model_order())}
        index = {id(r): i for i, r in enumerate(out)}
        return sorted(out, key=lambda r: (order.get(r.model, len(order)), _view_key(r.view), index[id(r)]))

    def not_run(self) -> list[tuple[str, str]]:
        """Planned (view, model) pairs with no outcome, in report order."""
        have = {(o.view, o.model) for o in self.outcomes}
        order = {m: i for i, m in enumerate(self.model_order())}
        missing = {p for p in self.planned if p not in have}
        return sorted(missing, key=lambda p: (order.get(p[1], len(order)), _view_key(p[0])))

    def engine_notes(self) -> dict[str, dict[str, int]]:
        """model -> the largest of each engine note (``truncated``, ``prompts_too_long``,
        ``answers_capped``, ``max_positions``; see ``AuditContext.engine_notes``), for the
        models that have any, in model order.

        Each outcome carries the engine's running counts, so the largest is the session's.
        """
        out: dict[str, dict[str, int]] = {}
        for o in self.sorted_outcomes():
            for key, value in (o.engine or {}).items():
                if int(value) > out.setdefault(o.model, {}).get(key, 0):
                    out[o.model][key] = int(value)
        return {m: notes for m, notes in out.items() if notes}

    def not_run_reason(self) -> str:
        """Why planned pairs have no outcome, as the report words it."""
        known = [self.not_run_reasons[p] for p in self.not_run() if p in self.not_run_reasons]
        parts = list(dict.fromkeys(known))
        if len(known) < len(self.not_run()) or not parts:
            if self.interrupted:
                parts.append("the run was interrupted (SIGINT or SIGTERM: Ctrl-C, a CI timeout) before they ran")
            elif parts:
                parts.append("the others never reported (the session stopped early)")
            else:
                parts.append("their tests recorded nothing (skipped before measuring, or the session stopped "
                             "early, e.g. -x)")
        return "; ".join(parts)

    def pair_not_run_reason(self, pair: tuple[str, str]) -> str:
        """Why one planned pair has no outcome."""
        if pair in self.not_run_reasons:
            return self.not_run_reasons[pair]
        if self.interrupted:
            return "the run was interrupted (SIGINT or SIGTERM) before it ran"
        return "its test recorded nothing (skipped before measuring, or the session stopped early)"

    def candidates(self) -> list[str]:
        return [m for m in self.model_order() if self.models[m].get("role") == "candidate"]

    def references(self) -> list[str]:
        return [m for m in self.model_order() if self.models[m].get("role") in ("full", "retain", "base")]


def gate_rows(run: RunReport, rows: Iterable[MetricRow]) -> list[MetricRow]:
    """``skipped``/``error`` rows for gates whose metric no test reported for a candidate."""
    have = {(r.model, r.metric) for r in rows}
    by_key = {(o.view, o.model): o for o in run.outcomes}
    extra = []
    for model in run.candidates():
        for metric, gate in sorted(run.gates.items()):
            if (model, metric) in have:
                continue
            o = by_key.get((gate.view, model))
            th = {"op": gate.op, "value": gate.value, "source": gate.source} if gate.relative_to is None else None
            if o is not None and o.error:
                outcome, reason = "error", o.error
            elif o is not None:
                outcome, reason = "skipped", f"the {gate.view} view did not report {metric}"
            elif run.selected_views is not None and gate.view not in run.selected_views:
                outcome, reason = "skipped", f"the {gate.view} view was not selected (--views)"
            else:
                outcome, reason = "skipped", f"the {gate.view} view did not run in this session"
            extra.append(MetricRow(model, gate.view, metric, None, threshold=th, outcome=outcome, reason=reason))
    return extra


def verdicts(run: RunReport, rows: list[MetricRow] | None = None) -> dict[str, Verdict]:
    """PASS / FAIL / INCOMPLETE per candidate; references get ``REFERENCE`` or ``INCOMPLETE``.

    FAIL when any gate failed. INCOMPLETE when nothing failed but some view errored or some
    number was skipped for a reason other than a missing reference model: a release must
    not PASS on an audit that did not fully run. INCOMPLETE too when no gate passed (every
    gate skipped for a missing reference, or none applies): never a PASS on nothing.
    PASS otherwise.
    """
    rows = run.rows() if rows is None else rows
    unrun_views: dict[str, list[str]] = {}
    for view, model in run.not_run():
        unrun_views.setdefault(model, []).append(view)
    out = {}
    for model in run.model_order():
        mine = [r for r in rows if r.model == model]
        missing = unrun_views.get(model, [])
        failed = [r.metric for r in mine if r.outcome == "fail"]
        errored = [r for r in mine if r.outcome == "error"]
        skipped = [r for r in mine if r.outcome == "skipped" and r.skip != MISSING_REFERENCE]
        passed = sum(r.outcome == "pass" for r in mine)
        parts = []
        if failed:
            parts.append(f"{len(failed)} gate(s) failed: {', '.join(failed)}")
        if errored:
            views = sorted({r.view for r in errored}, key=_view_key)
            parts.append(f"errored: {', '.join(views)}")
        if skipped:
            parts.append(f"{len(skipped)} number(s) skipped: {', '.join(sorted({r.metric for r in skipped}))}")
        if missing:
            parts.append(f"did not run: {', '.join(missing)} ({run.not_run_reason()})")
        role = run.models[model].get("role")
        incomplete = bool(errored or skipped or missing)
        if role != "candidate":
            status = "INCOMPLETE" if incomplete else "REFERENCE"
            # "every view ran" only when some did: a reference with no numbers says so.
            fallback = f"{role} reference; every view ran" if mine else f"{role} reference; no view ran on it"
            out[model] = Verdict(status, "; ".join(parts) or fallback)
            continue
        status = "FAIL" if failed else "INCOMPLETE" if incomplete else "PASS"
        if status == "PASS" and not passed:
            # A PASS must rest on a decided gate: gates all skipped for a missing reference
            # (or none at all) are an audit that checked nothing.
            status = "INCOMPLETE"
            why = [f"{r.metric} ({r.reason or r.outcome})" for r in mine if r.metric in run.gates]
            parts.append("no gate could be evaluated: "
                         + (", ".join(why) or "no gate in the gates file applies to what ran"))
        if status == "PASS":
            parts.append(f"{passed} gate(s) passed")
        not_run = [
            {"metric": r.metric, "outcome": r.outcome, "reason": r.reason or r.outcome}
            for r in mine
            if r.metric in run.gates and r.outcome in ("skipped", "error")
        ]
        out[model] = Verdict(status, "; ".join(parts), not_run)
    return out


# --- results.json ------------------------------------------------------------------------------
def build_results(run: RunReport, rows: list[MetricRow] | None = None) -> dict[str, Any]:
    """``results.json`` in contract.md's shape."""
    rows = run.rows() if rows is None else rows
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "package_version": run.package_version,
        "created": run.created,
        "config": run.config,
        "models": {
            m: {
                "source": run.models[m].get("source"),
                "role": run.models[m].get("role"),
                "fingerprint": run.models[m].get("fingerprint"),
            }
            for m in run.model_order()
        },
        "metrics": [r.to_json() for r in rows],
        # Per model, so a machine reading the file sees an INCOMPLETE audit and its cause
        # without re-deriving it from the rows.
        "verdicts": {
            m: {"status": v.status, "summary": v.summary, "not_run": v.not_run}
            for m, v in verdicts(run, rows).items()
        },
        # Each (view, model) the run computed, in order, and by which process: under
        # pytest-xdist every result is computed once across the workers and listed once.
        # (No durations, so two identical runs write identical files, `created` aside.)
        "computed": [dict(c) for c in run.computed],
        # The planned (view, model) pairs with no numbers, each with why (interrupted, a
        # worker that died): a model none of whose pairs ran is still listed here.
        "not_run": [{"view": v, "model": m, "reason": run.pair_not_run_reason((v, m))} for v, m in run.not_run()],
        # Each view's warnings per model (rows dropped, too few items, inputs cut, ...).
        "warnings": [
            {"view": o.view, "model": o.model, "text": w} for o in run.sorted_outcomes() for w in o.warnings
        ],
    }


# --- plots ---------------------------------------------------------------------------------------
def plot_leak_by_view_and_family(run: RunReport, rows: list[MetricRow], path: Path) -> bool:
    """Grouped bars: for each candidate, each view's headline leak rate per fact family.

    Returns False (and writes nothing) when no leak rate has a per-family breakdown.
    """
    models = run.candidates() or run.model_order()
    data: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        if r.metric in LEAK_METRICS and r.model in models and r.by_family:
            fams = {f: v for f, v in r.by_family.items() if v is not None}
            if fams:
                data.setdefault(r.model, {})[r.metric] = fams
    if not data:
        return False
    import matplotlib

    matplotlib.use("Agg")  # headless CI; never opens a window
    import matplotlib.pyplot as plt

    shown = [m for m in models if m in data]
    # One y scale for every model, so a model that leaks more looks taller.
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 3.2 * len(shown)), squeeze=False, sharey=True)
    for ax, model in zip(axes[:, 0], shown, strict=True):
        metrics = [m for m in LEAK_METRICS if m in data[model]]
        families = sorted({f for m in metrics for f in data[model][m]})
        width = 0.8 / max(len(metrics), 1)
        for i, metric in enumerate(metrics):
            xs = [j + i * width for j in range(len(families))]
            ys = [100 * data[model][metric].get(f, 0.0) for f in families]
            ax.bar(xs, ys, width, label=view_of(metric))
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(families))])
        ax.set_xticklabels(families, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("leak rate (%)")
        ax.set_title(model)
        ax.legend(fontsize=7, ncol=len(metrics))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Fixed metadata so the file does not change between identical runs.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return True


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _plot_name(view: str, model: str, index: int) -> str:
    """``<view>_<model>.png`` for a (view, model)'s first plot, ``<view>_<model>_<i>.png``
    for its i-th; the label is made file-name safe (hub ids contain ``/``)."""
    stem = "_".join(_UNSAFE.sub("_", part).strip("_") or "model" for part in (view, model))
    return f"{stem}.png" if index == 1 else f"{stem}_{index}.png"


def _draw_plots(
    run: RunReport, files: ReportFiles
) -> tuple[dict[tuple[str, str], list[tuple[str, str]]], dict[tuple[str, str], list[str]]]:
    """Draw each view's plots (their data, see ``report/_plots.py``), staged for ``plots/``.

    Returns (view, model) -> [(caption, relative path)] of the plots drawn, and
    (view, model) -> notes on the ones that could not be (an unknown kind, bad data, a
    file of the user's at its name): one plot that cannot be drawn never costs the
    others or the report.
    """
    from unlearn_audit.report._plots import UnknownPlotKind, draw_plot

    drawn: dict[tuple[str, str], list[tuple[str, str]]] = {}
    notes: dict[tuple[str, str], list[str]] = {}
    for o in run.sorted_outcomes():
        for i, plot in enumerate(o.plots, 1):
            caption = str(plot.get("caption") or f"{o.view} plot {i}")
            name = _plot_name(o.view, o.model, i)
            problem = files.plot_problem(name)
            if problem:
                notes.setdefault((o.view, o.model), []).append(f"plot \"{caption}\" not drawn: {problem}")
                continue
            try:
                draw_plot(str(plot.get("kind")), plot.get("data") or {}, files.draw_path(name))
                files.add_drawn(name)
            except UnknownPlotKind as e:
                notes.setdefault((o.view, o.model), []).append(f"plot \"{caption}\" not drawn: {e.args[0]}")
            except Exception as e:  # a plot is never worth the report
                notes.setdefault((o.view, o.model), []).append(
                    f"plot \"{caption}\" not drawn ({type(e).__name__}: {e})")
            else:
                drawn.setdefault((o.view, o.model), []).append((caption, f"{PLOTS_DIR}/{name}"))
    return drawn, notes


def planned_plot_names(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """The plot names a run of these (view, model) pairs is sure to claim if it draws:
    each pair's first plot, and the summary plot (checked before the run)."""
    return [SUMMARY_PLOT, *(_plot_name(view, model, 1) for view, model in pairs)]


# --- report.md -------------------------------------------------------------------------------------
def _threshold_cell(row: MetricRow) -> str:
    th = row.threshold
    if not th or th.get("value") is None:
        return "—"
    return f"{_OP_CELL.get(th['op']) or md_text(th['op'])} {format_value(row.metric, th['value'])}"


def _extra_cell(value: Any) -> str:
    """One ``Metric.extra`` value as short markdown: numbers to 4 significant digits, lists
    (per-layer curves) in full, anything nested as compact JSON; text as text, cut short."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return md_text(value, limit=_EXTRA_TEXT_LIMIT)
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    if isinstance(value, list) and all(isinstance(v, (int, float)) or v is None for v in value):
        return "[" + ", ".join(_extra_cell(v) for v in value) + "]"
    try:
        return md_json(json.dumps(_rounded(value), sort_keys=True, separators=(",", ":")))
    except (TypeError, ValueError):  # not JSON: shown as text, never as markup
        return md_text(repr(value), limit=_EXTRA_TEXT_LIMIT)


#: A generation or question in ``extra`` is for a glance; items.jsonl holds it whole.
_EXTRA_TEXT_LIMIT = 200


def _rounded(value: Any) -> Any:
    """Floats to 4 significant digits, at any depth (results.json keeps them exact)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _extra_section(rows: list[MetricRow], models: Iterable[str]) -> list[str]:
    """What each metric's view reported beside the number (``extra``), per model, folded
    away in a ``<details>`` block: it is there for whoever checks a number, and generic,
    so a new view's extras show without an edit here."""
    order = {m: i for i, m in enumerate(models)}
    shown = sorted((r for r in rows if r.extra and r.model in order), key=lambda r: order[r.model])
    if not shown:
        return []
    lines = ["<details><summary>Details (each metric's extra values)</summary>", ""]
    for r in shown:
        parts = [f"{md_text(k)} = {_extra_cell(v)}" for k, v in r.extra.items()]
        lines.append(f"- {md_text(r.model)} · {md_code(r.metric)}: " + "; ".join(parts))
    return [*lines, "", "</details>", ""]


def _view_section(
    run: RunReport,
    view: str,
    rows: list[MetricRow],
    plots: Mapping[tuple[str, str], list[tuple[str, str]]],
    plot_notes: Mapping[tuple[str, str], list[str]] | None = None,
) -> list[str]:
    from tabulate import tabulate

    # Every cell and line below that holds a name or text from a model, a dataset, a view or
    # the command line goes through md_text: it never shapes the markup (a "|" in a label
    # would shift a row's numbers into the wrong column).
    lines = [f"## {md_text(view)}", ""]
    candidates = [m for m in run.candidates() if any(r.model == m for r in rows)]
    references = [m for m in run.references() if any(r.model == m for r in rows)]
    main_models = candidates or references
    ref_cols = references if candidates else []
    value_of = {(r.model, r.metric): r for r in rows}
    main = [r for r in rows if r.model in main_models]
    has_paper = any(r.paper is not None for r in rows)
    headers = ["model", "metric", "value", "95% CI", "n", "excluded", "threshold", "source", "outcome"]
    headers += [
        md_text(m if m == run.models[m].get("role") else f"{m} ({run.models[m].get('role')})") for m in ref_cols
    ]
    if has_paper:
        headers.append("paper")
    table = []
    for r in main:
        cells = [
            md_text(r.model),
            md_text(r.metric),
            format_value(r.metric, r.value),
            format_ci(r.metric, r.ci),
            "—" if r.n is None else md_text(r.n),
            md_text(r.excluded or 0),
            _threshold_cell(r),
            md_text((r.threshold or {}).get("source") or "—"),
            _OUTCOME_CELL.get(r.outcome) or md_text(r.outcome),
        ]
        for ref in ref_cols:
            other = value_of.get((ref, r.metric))
            cell = format_value(r.metric, other.value) if other else "—"
            if other is not None and other.paper is not None:
                cell += f" (paper {format_value(r.metric, other.paper)})"
            cells.append(cell)
        if has_paper:
            cells.append(format_value(r.metric, r.paper))
        table.append(cells)
    lines += [tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]
    notes = [r for r in main if r.reason and r.outcome in ("fail", "skipped", "error")]
    for r in notes:
        lines.append(f"- {md_text(r.model)} · {md_code(r.metric)} — {_OUTCOME_CELL[r.outcome]}: {md_text(r.reason)}")
    if notes:
        lines.append("")
    # Per-family breakdowns: every model that reported one, side by side.
    for metric in dict.fromkeys(r.metric for r in rows if r.by_family):
        models = [m for m in (*candidates, *references) if (m, metric) in value_of and value_of[m, metric].by_family]
        families = sorted({f for m in models for f in value_of[m, metric].by_family})
        fam_table = [
            [md_text(f), *(format_value(metric, value_of[m, metric].by_family.get(f)) for m in models)]
            for f in families
        ]
        headers = ["family", *(md_text(m) for m in models)]
        lines += [f"**{md_text(metric)} by family**", ""]
        lines += [tabulate(fam_table, headers=headers, tablefmt="github", disable_numparse=True), ""]
    warned = [(o.model, w) for o in run.sorted_outcomes() if o.view == view for w in o.warnings]
    if warned:
        lines += ["**Warnings**", ""] + [f"- {md_text(model)}: {md_text(text)}" for model, text in warned] + [""]
    lines += _extra_section(rows, (*candidates, *references))
    for model in (*candidates, *references):
        for caption, rel in plots.get((view, model), []):
            lines += [f"![{md_text(f'{caption} ({model})')}]({md_link_target(rel)})", ""]
        notes = (plot_notes or {}).get((view, model), [])
        lines += [f"- {md_text(model)}: {md_text(note)}" for note in notes] + ([""] if notes else [])
    return lines


def render_markdown(
    run: RunReport,
    rows: list[MetricRow] | None = None,
    plots: Mapping[tuple[str, str], list[tuple[str, str]]] | None = None,
    summary_plot: str | None = None,
    plot_notes: Mapping[tuple[str, str], list[str]] | None = None,
) -> str:
    """report.md: verdicts, one section per view, then configuration and fingerprints."""
    from tabulate import tabulate

    rows = run.rows() if rows is None else rows
    plots = plots or {}
    verdict = verdicts(run, rows)
    lines = ["# Unlearning audit", ""]
    for model in run.candidates():
        v = verdict[model]
        lines.append(f"- **{md_text(model)}**: **{md_text(v.status)}** — {md_text(v.summary)}")
        if v.status == "INCOMPLETE":  # never to be read as a pass: say what is missing
            for g in v.not_run:
                lines.append(
                    f"  - gate {md_code(g['metric'])} did not run ({md_text(g['outcome'])}): {md_text(g['reason'])}"
                )
    for model in run.references():
        v = verdict[model]
        status = "reference" if v.status == "REFERENCE" else f"reference, **{md_text(v.status)}**"
        lines.append(f"- {md_text(model)} ({status}): {md_text(v.summary)}")
    lines.append("")
    lines.append(
        "Rates are percentages; `pp` = percentage points. Thresholds come from the file in "
        "the source column; a gate relative to a reference model is resolved from that "
        "model's value in this run."
    )
    lines.append("")
    lines.append(_compat_line(run.config.get("compat", "none")))
    lines.append("")
    # What the engines did to inputs that did not fit (context.engine_notes): scored
    # sequences cut to the context, generation prompts never run or answers capped by it.
    notes = run.engine_notes()
    cut, unasked, capped = [], [], []
    for model, g in notes.items():
        positions = g.get("max_positions", 0)
        if g.get("truncated"):
            cut.append(
                f"- {md_text(model)}: {g['truncated']} scored sequence(s) of prompt + answer were longer than "
                f"its context ({positions} positions) and were cut to it, as TOFU and open-unlearning "
                "truncate to max_length; the answer tokens past the limit are not scored."
            )
        if g.get("prompts_too_long"):
            unasked.append(
                f"- {md_text(model)}: {g['prompts_too_long']} generation prompt(s) left no room for a new token "
                f"in its context ({positions} positions), so nothing was generated for them; their "
                "items are excluded from the leak rates (counted in excluded), not counted as not leaking."
            )
        if g.get("answers_capped"):
            capped.append(
                f"- {md_text(model)}: {g['answers_capped']} generation prompt(s) left fewer positions in its "
                f"context ({positions}) than max_new_tokens; their answers stop at the context, "
                "so what a longer answer would have said is not scored."
            )
    if cut or unasked or capped:
        lines += ["## Inputs longer than the model's context", ""]
        lines += [*cut, *([""] if cut else []), *unasked, *capped, *([""] if unasked or capped else [])]
    not_run = run.not_run()
    if not_run:
        lines += ["## Not run", "", f"These (view, model) pairs have no numbers: {run.not_run_reason()}.", ""]
        lines += [f"- {md_text(view)} · {md_text(model)}" for view, model in not_run]
        lines.append("")
    if summary_plot:
        lines += ["## Leak by view and family", "", f"![leak rate by view and fact family]({md_link_target(summary_plot)})", ""]
    for view in sorted({r.view for r in rows}, key=_view_key):
        lines += _view_section(run, view, [r for r in rows if r.view == view], plots, plot_notes)
    lines += ["## Run configuration", ""]
    cfg_rows = [
        [md_text(k), md_text(v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str))]
        for k, v in sorted(run.config.items())
    ]
    lines += [tabulate(cfg_rows, headers=["setting", "value"], tablefmt="github", disable_numparse=True), ""]
    lines += ["## Models", ""]
    model_rows = [
        [md_text(m), *(md_text(run.models[m].get(k) or "—") for k in ("role", "source", "fingerprint"))]
        for m in run.model_order()
    ]
    lines += [
        tabulate(model_rows, headers=["model", "role", "source", "fingerprint"], tablefmt="github", disable_numparse=True),
        "",
        f"unlearn-audit {md_text(run.package_version)}, results.json schema {RESULTS_SCHEMA_VERSION}, "
        f"created {md_text(run.created)}.",
        "",
    ]
    return "\n".join(lines)


def write_report(run: RunReport, report_dir: Path) -> dict[str, Path]:
    """Write report.md, results.json, items.jsonl and plots/ under ``report_dir``.

    The views' plots are drawn here from their data (``report/_plots.py``), as
    ``plots/<view>_<model>.png``; a plot that cannot be drawn becomes a note in report.md.
    All or nothing (see :mod:`unlearn_audit.report._files`): every file is staged in full
    first and only then renamed into place, so a failure (full disk, ``ulimit -f``) leaves
    the previous report untouched; symlinks inside ``report_dir`` are never written
    through; under ``plots/`` only unchanged files this package recorded in its manifest
    are ever removed or replaced. Also appends report.md to ``$GITHUB_STEP_SUMMARY`` when
    that is set (GitHub Actions). Returns name -> path of what was written.

    Raises:
        ReportDirError: ``report_dir`` is not a directory one can write a report into.
    """
    report_dir = Path(report_dir)
    check_report_dir(report_dir)
    rows = run.rows()
    paths = {name: report_dir / name for name in ("report.md", "results.json", "items.jsonl")}
    with ReportFiles(report_dir) as files:
        files.add("results.json", json.dumps(build_results(run, rows), indent=2, sort_keys=True) + "\n")
        files.add("items.jsonl", "".join(
            json.dumps({**rec, "model": o.model, "view": o.view}, sort_keys=True) + "\n"
            for o in run.sorted_outcomes() for rec in o.records))
        plots: dict[tuple[str, str], list[tuple[str, str]]] = {}
        plot_notes: dict[tuple[str, str], list[str]] = {}
        summary_plot = None
        plot_problem = ""
        try:
            plots, plot_notes = _draw_plots(run, files)
            blocked = files.plot_problem(SUMMARY_PLOT)
            if blocked:
                if any(r.metric in LEAK_METRICS and r.by_family for r in rows):
                    plot_problem = md_text(f"The leak-by-view-and-family plot was not drawn: {blocked}.")
            elif plot_leak_by_view_and_family(run, rows, files.draw_path(SUMMARY_PLOT)):
                files.add_drawn(SUMMARY_PLOT)
                summary_plot = f"{PLOTS_DIR}/{SUMMARY_PLOT}"
        except Exception as e:  # a plot is never worth the report
            plot_problem = md_text(f"Plots could not be written ({type(e).__name__}: {e}); the numbers above are complete.")
        markdown = render_markdown(run, rows, plots, summary_plot, plot_notes)
        if plot_problem:
            markdown += f"\n{plot_problem}\n"
        files.add("report.md", markdown)
        files.commit()
        files.prune(files.plots)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            append_no_follow(summary, markdown + "\n")
        except OSError as e:
            raise OSError(f"report written to {report_dir}, but not appended to $GITHUB_STEP_SUMMARY "
                          f"({summary}): {e.strerror or e}") from None
    return paths


def _compat_line(compat: str) -> str:
    """The report's statement of whose conventions the numbers follow (``--compat``)."""
    if compat == "open-unlearning":
        return (
            "Compat mode: **open-unlearning** (`--compat open-unlearning`): tokenisation, "
            "attention mask, stop tokens, ROUGE reference and TOFU formulas follow "
            "open-unlearning's evaluator, to reproduce its numbers item for item."
        )
    return (
        f"Compat mode: **{md_text(compat)}** (this package's defaults; docs/differences.md lists where "
        "they differ from open-unlearning and why)."
    )
