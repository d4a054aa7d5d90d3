"""Writing the report: ``report.md``, ``results.json``, ``items.jsonl`` and plots.

Input is what the audit tests measured (:class:`ViewOutcome`s, already judged); output is
deterministic apart from ``created``: rows, models and keys are sorted, so two runs on
the same models give byte-identical numbers and can be diffed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn_audit.report._gates import is_missing_reference
from unlearn_audit.report._reference import KNOWN_VIEWS, Gate, view_of
from unlearn_audit.report._rows import ROLE_ORDER, MetricRow, ViewOutcome

__all__ = [
    "LEAK_METRICS",
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
_OUTCOME_CELL = {"pass": "PASS", "fail": "**FAIL**", "info": "info", "skipped": "skipped", "error": "**ERROR**"}
_OP_CELL = {"<=": "≤", "<": "<", ">=": "≥", ">": ">"}


# --- formatting -----------------------------------------------------------------------------
def is_rate(metric: str) -> bool:
    """Rates (fractions in results.json) end in ``_rate``; report.md shows them as percentages."""
    return metric.endswith("_rate")


def format_value(metric: str, value: float | None) -> str:
    """A metric's value as report.md shows it: rates in %, ``_pp`` deltas signed, else 4 digits."""
    if value is None:
        return "—"
    if is_rate(metric):
        return f"{100 * value:.2f}%"
    if metric.endswith("_pp"):
        return f"{value:+.2f} pp"
    return f"{value:.4g}"


def format_ci(metric: str, ci: list[float] | None) -> str:
    if not ci:
        return "—"
    lo, hi = ci
    if is_rate(metric):
        return f"[{100 * lo:.2f}, {100 * hi:.2f}]%"
    return f"[{lo:.4g}, {hi:.4g}]"


def format_delta(metric: str, delta: float) -> str:
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
    """A model's overall verdict: ``PASS``, ``FAIL`` or ``INCOMPLETE`` (``REFERENCE`` for references)."""

    status: str
    summary: str


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
    """

    created: str
    package_version: str
    config: dict[str, Any]
    models: dict[str, dict[str, Any]]
    outcomes: list[ViewOutcome]
    gates: Mapping[str, Gate] = field(default_factory=dict)
    selected_views: tuple[str, ...] | None = None

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
    not PASS on an audit that did not fully run. PASS otherwise.
    """
    rows = run.rows() if rows is None else rows
    out = {}
    for model in run.model_order():
        mine = [r for r in rows if r.model == model]
        failed = [r.metric for r in mine if r.outcome == "fail"]
        errored = [r for r in mine if r.outcome == "error"]
        skipped = [r for r in mine if r.outcome == "skipped" and not is_missing_reference(r.reason)]
        passed = sum(r.outcome == "pass" for r in mine)
        parts = []
        if failed:
            parts.append(f"{len(failed)} gate(s) failed: {', '.join(failed)}")
        if errored:
            views = sorted({r.view for r in errored}, key=_view_key)
            parts.append(f"errored: {', '.join(views)}")
        if skipped:
            parts.append(f"{len(skipped)} number(s) skipped: {', '.join(sorted({r.metric for r in skipped}))}")
        role = run.models[model].get("role")
        if role != "candidate":
            status = "INCOMPLETE" if (errored or skipped) else "REFERENCE"
            out[model] = Verdict(status, "; ".join(parts) or f"{role} reference; every view ran")
            continue
        status = "FAIL" if failed else "INCOMPLETE" if (errored or skipped) else "PASS"
        if status == "PASS":
            parts.append(f"{passed} gate(s) passed")
        out[model] = Verdict(status, "; ".join(parts))
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


def _copy_plots(run: RunReport, plots_dir: Path) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Copy each view's plots under ``plots/``; return (view, model) -> [(caption, relative path)]."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for o in run.sorted_outcomes():
        for caption, src in sorted(o.plots.items()):
            src_path = Path(src)
            if not src_path.is_file():
                continue
            dest = plots_dir / f"{_slug(o.view)}-{_slug(o.model)}-{_slug(caption)}.png"
            if src_path.resolve() != dest.resolve():
                plots_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src_path, dest)
            out.setdefault((o.view, o.model), []).append((caption, f"plots/{dest.name}"))
    return out


# --- report.md -------------------------------------------------------------------------------------
def _threshold_cell(row: MetricRow) -> str:
    th = row.threshold
    if not th or th.get("value") is None:
        return "—"
    return f"{_OP_CELL.get(th['op'], th['op'])} {format_value(row.metric, th['value'])}"


def _view_section(
    run: RunReport,
    view: str,
    rows: list[MetricRow],
    plots: Mapping[tuple[str, str], list[tuple[str, str]]],
) -> list[str]:
    from tabulate import tabulate

    lines = [f"## {view}", ""]
    candidates = [m for m in run.candidates() if any(r.model == m for r in rows)]
    references = [m for m in run.references() if any(r.model == m for r in rows)]
    main_models = candidates or references
    ref_cols = references if candidates else []
    value_of = {(r.model, r.metric): r for r in rows}
    main = [r for r in rows if r.model in main_models]
    has_paper = any(r.paper is not None for r in rows)
    headers = ["model", "metric", "value", "95% CI", "n", "excluded", "threshold", "source", "outcome"]
    headers += [m if m == run.models[m].get("role") else f"{m} ({run.models[m].get('role')})" for m in ref_cols]
    if has_paper:
        headers.append("paper")
    table = []
    for r in main:
        cells = [
            r.model,
            r.metric,
            format_value(r.metric, r.value),
            format_ci(r.metric, r.ci),
            "—" if r.n is None else r.n,
            r.excluded or 0,
            _threshold_cell(r),
            (r.threshold or {}).get("source") or "—",
            _OUTCOME_CELL.get(r.outcome, r.outcome),
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
        lines.append(f"- {r.model} · `{r.metric}` — {_OUTCOME_CELL[r.outcome]}: {r.reason}")
    if notes:
        lines.append("")
    # Per-family breakdowns: every model that reported one, side by side.
    for metric in dict.fromkeys(r.metric for r in rows if r.by_family):
        models = [m for m in (*candidates, *references) if (m, metric) in value_of and value_of[m, metric].by_family]
        families = sorted({f for m in models for f in value_of[m, metric].by_family})
        fam_table = [
            [f, *(format_value(metric, value_of[m, metric].by_family.get(f)) for m in models)] for f in families
        ]
        lines += [f"**{metric} by family**", ""]
        lines += [tabulate(fam_table, headers=["family", *models], tablefmt="github", disable_numparse=True), ""]
    for model in (*candidates, *references):
        for caption, rel in plots.get((view, model), []):
            lines += [f"![{caption} ({model})]({rel})", ""]
    return lines


def render_markdown(
    run: RunReport,
    rows: list[MetricRow] | None = None,
    plots: Mapping[tuple[str, str], list[tuple[str, str]]] | None = None,
    summary_plot: str | None = None,
) -> str:
    """report.md: verdicts, one section per view, then configuration and fingerprints."""
    from tabulate import tabulate

    rows = run.rows() if rows is None else rows
    plots = plots or {}
    verdict = verdicts(run, rows)
    lines = ["# Unlearning audit", ""]
    for model in run.candidates():
        v = verdict[model]
        lines.append(f"- **{model}**: **{v.status}** — {v.summary}")
    for model in run.references():
        v = verdict[model]
        status = "reference" if v.status == "REFERENCE" else f"reference, **{v.status}**"
        lines.append(f"- {model} ({status}): {v.summary}")
    lines.append("")
    lines.append(
        "Rates are percentages; `pp` = percentage points. Thresholds come from the file in "
        "the source column; a gate relative to a reference model is resolved from that "
        "model's value in this run."
    )
    lines.append("")
    lines.append(_compat_line(run.config.get("compat", "none")))
    lines.append("")
    if summary_plot:
        lines += ["## Leak by view and family", "", f"![leak rate by view and fact family]({summary_plot})", ""]
    for view in sorted({r.view for r in rows}, key=_view_key):
        lines += _view_section(run, view, [r for r in rows if r.view == view], plots)
    lines += ["## Run configuration", ""]
    cfg_rows = [[k, json.dumps(v, sort_keys=True) if not isinstance(v, str) else v] for k, v in sorted(run.config.items())]
    lines += [tabulate(cfg_rows, headers=["setting", "value"], tablefmt="github", disable_numparse=True), ""]
    lines += ["## Models", ""]
    model_rows = [
        [m, run.models[m].get("role") or "—", run.models[m].get("source") or "—", run.models[m].get("fingerprint") or "—"]
        for m in run.model_order()
    ]
    lines += [
        tabulate(model_rows, headers=["model", "role", "source", "fingerprint"], tablefmt="github", disable_numparse=True),
        "",
        f"unlearn-audit {run.package_version}, results.json schema {RESULTS_SCHEMA_VERSION}, created {run.created}.",
        "",
    ]
    return "\n".join(lines)


def write_report(run: RunReport, report_dir: Path) -> dict[str, Path]:
    """Write report.md, results.json, items.jsonl and plots/ under ``report_dir``.

    Also appends report.md to ``$GITHUB_STEP_SUMMARY`` when that is set (GitHub Actions).
    Returns name -> path of what was written.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    plots_dir = report_dir / "plots"
    if plots_dir.is_dir():  # stale plots from an earlier run would be linked from nowhere
        for old in plots_dir.glob("*.png"):
            old.unlink()
    rows = run.rows()
    plots = _copy_plots(run, plots_dir)
    summary_plot = None
    if plot_leak_by_view_and_family(run, rows, plots_dir / "leak_by_view_and_family.png"):
        summary_plot = "plots/leak_by_view_and_family.png"
    markdown = render_markdown(run, rows, plots, summary_plot)
    paths = {
        "report.md": report_dir / "report.md",
        "results.json": report_dir / "results.json",
        "items.jsonl": report_dir / "items.jsonl",
    }
    paths["report.md"].write_text(markdown, encoding="utf-8")
    paths["results.json"].write_text(
        json.dumps(build_results(run, rows), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    with paths["items.jsonl"].open("w", encoding="utf-8") as fh:
        for o in run.sorted_outcomes():
            for rec in o.records:
                fh.write(json.dumps({**rec, "model": o.model, "view": o.view}, sort_keys=True) + "\n")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(markdown + "\n")
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
        f"Compat mode: **{compat}** (this package's defaults; docs/differences.md lists where "
        "they differ from open-unlearning and why)."
    )
