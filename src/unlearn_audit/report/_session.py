"""The audit session: measuring one (view, model), judging it, and collecting it for the report.

One :class:`AuditSession` lives per pytest session (on ``config.stash``). Its
:meth:`~AuditSession.measure` runs a view through the :class:`AuditContext`, turns the
result into judged rows, and says what must fail the test; the plugin only records and
asserts. On the controller, :meth:`~AuditSession.collect` gathers the outcomes that
tests recorded (from every xdist worker) and :meth:`~AuditSession.finish` writes the
report and, with ``--update-golden``, the golden values.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearn_audit.report._gates import check_expectations, check_golden, evaluate_gate
from unlearn_audit.report._golden_items import GoldenItems, compare_items, item_outcomes
from unlearn_audit.report._reference import (
    Golden,
    ReferenceResults,
    default_tolerance,
    display_path,
    load_reference_results,
)
from unlearn_audit.report._rows import MetricRow, ViewOutcome, jsonable
from unlearn_audit.report._writer import RunReport, verdicts, write_report

if TYPE_CHECKING:
    from unlearn_audit.context import AuditConfig, AuditContext

__all__ = ["AuditSession", "Measurement", "PlannedModel", "golden_config"]

# Settings that never change a number, so golden values stay comparable across them.
_GOLDEN_IGNORED = ("report_dir", "cache_dir", "progress", "views", "batch_size")
TINY_WORLD_DATASET = "<tiny world fixtures>"


def golden_config(config: AuditConfig, tiny_world: bool) -> dict[str, Any]:
    """The settings golden values are recorded with (and must match to be compared)."""
    d = {k: v for k, v in config.to_dict().items() if k not in _GOLDEN_IGNORED}
    if not d.get("view_options"):  # none set: the same settings as before the field existed
        d.pop("view_options", None)
    if tiny_world:  # an absolute checkout path would make every other checkout "different"
        d["dataset"] = TINY_WORLD_DATASET
    return jsonable(d)


@dataclass(frozen=True)
class PlannedModel:
    """A model the run will audit, known before anything is loaded."""

    label: str
    role: str
    source: str | None = None


@dataclass
class Measurement:
    """What :meth:`AuditSession.measure` found.

    Attributes:
        outcome: the judged rows and records, for the reporter.
        failures: messages that must fail the test (empty: it passes).
        skip_reason: set when every metric of the view was skipped (the test is skipped).
    """

    outcome: ViewOutcome
    failures: list[str] = field(default_factory=list)
    skip_reason: str = ""


class AuditSession:
    """Session state of an audit run: settings, references, the context, collected outcomes.

    Args:
        config: the run's :class:`AuditConfig`.
        tiny_world: True when no model was given: a built-in world is audited, and
            expected verdicts and golden values apply.
        world: which built-in world (``tiny`` or ``smol``): its references live in
            ``<reference_dir>/<world>_world``.
        plan: the models to audit, in order (labels and roles are needed at collection,
            long before any model loads).
        context_factory: builds the :class:`AuditContext` on first use.
        reference_dir: the ``reference_results/`` directory.
        gates_path: the gates file.
        root: the directory paths in reports are shown relative to (pytest's rootdir).
        update_golden: record measured values as the new golden ones at the end.
        package_version: written into results.json.
        allow_incomplete: accept a candidate whose verdict is INCOMPLETE (``--allow-incomplete``);
            otherwise :meth:`incomplete_reasons` says why the run must fail.
        run_dir: the directory through which the processes of one pytest-xdist run share
            finished results (:class:`~unlearn_audit.runner.SharedResults`); ``None`` in a
            single-process run. The controller sets it before the workers start.
    """

    def __init__(
        self,
        config: AuditConfig,
        *,
        tiny_world: bool,
        world: str = "tiny",
        plan: Callable[[], list[PlannedModel]],
        context_factory: Callable[[], AuditContext],
        reference_dir: Path,
        gates_path: Path,
        root: Path | None = None,
        update_golden: bool = False,
        package_version: str = "",
        allow_incomplete: bool = False,
        run_dir: Path | None = None,
    ):
        self.config = config
        self.tiny_world = tiny_world
        self.world = world
        self.reference_dir = Path(reference_dir)
        self.gates_path = Path(gates_path)
        self.root = root
        self.update_golden = update_golden
        self.package_version = package_version
        self.allow_incomplete = allow_incomplete
        self.run_dir = run_dir
        self._plan_factory = plan
        self._plan: list[PlannedModel] | None = None
        self._context_factory = context_factory
        self._ctx: AuditContext | None = None
        self._ctx_error: Exception | None = None
        self._refs: ReferenceResults | None = None
        self.outcomes: dict[tuple[str, str], ViewOutcome] = {}
        self.written: dict[str, Path] = {}
        self.golden_notes: list[str] = []
        self.verdicts: dict = {}
        self.candidates: list[str] = []
        # (view, model) pairs collected for this run, and whether it was interrupted: the
        # report names every pair that did not run instead of reading as complete.
        self.planned: list[tuple[str, str]] = []
        self.interrupted = False
        # (view, model) -> why it has no outcome, where known (its xdist worker died).
        self.not_run_reasons: dict[tuple[str, str], str] = {}

    # --- lazily built state ------------------------------------------------------------------
    def plan(self) -> list[PlannedModel]:
        if self._plan is None:
            self._plan = list(self._plan_factory())
        return self._plan

    @property
    def ctx(self) -> AuditContext:
        """The audit context, built on first use (loading models is the views' business)."""
        if self._ctx is None:
            if self._ctx_error is not None:
                # Building it failed once (e.g. the tiny world could not be built); every
                # test gets that error at once instead of retrying a minutes-long build.
                raise self._ctx_error
            try:
                ctx = self._context_factory()
            except Exception as e:
                self._ctx_error = e
                raise
            if self.run_dir is not None:
                ctx.share(self.run_dir)
            self._ctx = ctx
        return self._ctx

    def computed(self) -> list[dict[str, Any]]:
        """Every (view, model) computation of this run, ``{view, model, worker}``:
        from the shared run directory under pytest-xdist (all workers), else from this
        process's runner."""
        if self.run_dir is not None:
            from unlearn_audit.runner import SharedResults

            return SharedResults(self.run_dir).computed()
        runner = getattr(self._ctx, "runner", None) if self._ctx is not None else None
        return list(getattr(runner, "computed", []))

    def references(self, extra_views: tuple[str, ...] = ()) -> ReferenceResults:
        """The validated reference results (raises ``ReferenceResultsError`` when malformed)."""
        if self._refs is None:
            self._refs = load_reference_results(
                self.reference_dir,
                self.gates_path,
                root=self.root,
                tiny_world=self.tiny_world,
                world=self.world,
                extra_views=extra_views,
            )
        return self._refs

    def golden_config(self) -> dict[str, Any]:
        return golden_config(self.config, self.tiny_world)

    def selected(self, view: str) -> bool:
        return not self.config.views or view in self.config.views

    # --- measuring one (view, model) -----------------------------------------------------------
    def _identity(self, label: str) -> tuple[str | None, str | None, str | None]:
        """(role, source, fingerprint) of a model, without loading it."""
        ctx = self.ctx
        try:
            spec = ctx.spec(label)
        except KeyError:
            planned = {p.label: p for p in self.plan()}.get(label)
            return (planned.role, planned.source, None) if planned else (None, None, None)
        known = getattr(ctx, "known_fingerprint", None)
        fingerprint = known(label) if callable(known) else None
        return spec.role, spec.source, fingerprint

    def error_outcome(self, view: str, label: str, error: BaseException | str) -> ViewOutcome:
        """The outcome of a view that could not run: an ``error`` row per metric it declares."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        try:
            role, source, fingerprint = self._identity(label)
        except Exception:  # the context itself failed to build; the error says why
            planned = {p.label: p for p in self._plan or []}.get(label)
            role, source, fingerprint = (planned.role, planned.source, None) if planned else (None, None, None)
        try:
            from unlearn_audit.views import get_view

            names = list(get_view(view).metrics)
        except Exception:
            names = []
        gates = self._refs.gates if self._refs is not None else {}
        names += [m for m in gates if m.startswith(view + ".") and m not in names]
        rows = [MetricRow(label, view, m, None, outcome="error", reason=message) for m in names]
        if not rows:  # keep the error visible even for a view that declares nothing
            rows = [MetricRow(label, view, view, None, outcome="error", reason=message)]
        return ViewOutcome(view, label, role, source, fingerprint, rows=rows, error=message)

    def _reference_value(self, view: str, metric: str, ref_label: str) -> tuple[float | None, str, str | None]:
        """(value, why it is missing, its skip kind) of a reference model's number."""
        try:
            ref_metric = self.ctx.result(view, ref_label).metric(metric)
        except KeyError:
            return None, "not reported", None
        except Exception as e:  # the reference's own test shows the traceback
            return None, f"error: {type(e).__name__}: {e}", None
        if ref_metric.value is None:
            return None, ref_metric.reason or "skipped", _skip_kind(ref_metric)
        return float(ref_metric.value), "", None

    def measure(self, view: str, label: str) -> Measurement:
        """Run ``view`` on ``label`` and judge every metric.

        Raises whatever the view raises: a view that cannot run is an error, never a pass.
        """
        from unlearn_audit.context import ModelUnusable

        ctx = self.ctx
        try:
            result = ctx.result(view, label)
        except ModelUnusable as e:  # every gate an error with the reason, never a pass
            return Measurement(self.error_outcome(view, label, str(e)), [str(e)])
        refs = self.references()
        role, source, fingerprint = self._identity(label)
        rows: list[MetricRow] = []
        failures: list[str] = []
        for m in result.metrics:
            value = None if m.value is None else float(m.value)
            row = MetricRow(
                model=label,
                view=view,
                metric=m.name,
                value=value,
                ci=[float(m.ci[0]), float(m.ci[1])] if m.ci is not None else None,
                n=m.n,
                excluded=m.excluded or 0,
                by_family={str(k): (None if v is None else float(v)) for k, v in (m.by_family or {}).items()},
                paper=refs.paper_value(source, m.name),
                reason=m.reason or "",
                extra=jsonable(dict(m.extra or {})),
                skip=_skip_kind(m),
            )
            gate = refs.gates.get(m.name) if role == "candidate" else None
            if value is not None and math.isnan(value) and gate is None:
                row.outcome, row.reason = "error", f"{m.name} is NaN"
                failures.append(f"{m.name} on {label} is NaN")
            elif gate is None:
                row.outcome = "skipped" if value is None else "info"
                if value is None and not row.reason:
                    row.reason = "skipped by the view"
            else:
                ref_label = ref_value = ref_skip = None
                problem = ""
                if gate.relative_to is not None:
                    ref_label = ctx.reference(gate.relative_to)
                    if ref_label is not None and value is not None:
                        ref_value, problem, ref_skip = self._reference_value(gate.view, m.name, ref_label)
                judged = evaluate_gate(
                    gate, value, reference_label=ref_label, reference_value=ref_value,
                    reference_problem=problem, reference_skip=ref_skip,
                )
                if value is not None:  # the gate, not the view, decided this row's skip kind
                    row.skip = judged.skip
                row.outcome, row.threshold = judged.outcome, judged.threshold
                row.reason = (m.reason or judged.reason) if value is None else judged.reason
                if value is not None and m.reason and m.reason not in row.reason:
                    # The view's own note on a measured number (e.g. privleak taken against a
                    # fixed reference) stays beside the gate's verdict.
                    row.reason = f"{row.reason}; {m.reason}" if row.reason else m.reason
                if judged.outcome == "error" or (judged.outcome == "fail" and not self.tiny_world):
                    failures.append(judged.message)
            rows.append(row)

        outcome = ViewOutcome(
            view,
            label,
            role,
            source,
            fingerprint,
            rows=rows,
            records=jsonable(list(result.records)),
            # A view's plots as data (views.Plot); anything else becomes a note in report.md.
            plots=jsonable([p.to_json() if hasattr(p, "to_json") else {"kind": f"<{type(p).__name__}>", "caption": str(p)}
                            for p in result.plots or ()]),
            warnings=[str(w) for w in result.warnings],
            engine=dict(ctx.engine_notes(label)),
        )
        if self.tiny_world:
            if role == "candidate":
                failures += check_expectations(
                    label, rows, refs.expected.get(label, {}), refs.gates, refs.expected_source
                )
            golden = refs.golden
            if golden is not None:
                mismatch = golden.config_mismatch(self.golden_config())
                if mismatch:
                    outcome.golden_skipped = "run settings differ from the golden ones: " + "; ".join(mismatch)
                    outcome.golden_new = []
                else:
                    moved, new = check_golden(label, rows, golden)
                    outcome.golden_new = new
                    if not self.update_golden:
                        failures += moved
                        if refs.golden_items is not None:
                            failures += compare_items(view, label, outcome.records, refs.golden_items)
        skip_reason = ""
        if rows and all(r.value is None for r in rows) and not failures:
            skip_reason = "; ".join(dict.fromkeys(r.reason or "skipped" for r in rows))
        return Measurement(outcome, failures, skip_reason)

    # --- the controller: collect and write -----------------------------------------------------
    def collect(self, payload: dict[str, Any]) -> None:
        """Keep one recorded outcome (the last one wins, e.g. after a rerun)."""
        o = ViewOutcome.from_payload(payload)
        self.outcomes[(o.view, o.model)] = o

    def run_report(self) -> RunReport:
        models: dict[str, dict[str, Any]] = {}
        if not self.tiny_world:  # user models are known without loading anything
            for p in self.plan():
                models[p.label] = {"source": p.source, "role": p.role, "fingerprint": None}
        for o in self.outcomes.values():
            entry = models.setdefault(o.model, {"source": o.source, "role": o.role, "fingerprint": None})
            entry["source"] = entry.get("source") or o.source
            entry["role"] = entry.get("role") or o.role
            entry["fingerprint"] = entry.get("fingerprint") or o.fingerprint
        # A planned model that recorded nothing (an interrupted tiny-world run) still gets
        # its verdict line, saying what did not run.
        unseen = sorted({m for _, m in self.planned} - models.keys())
        if unseen:
            by_label = {p.label: p for p in self.plan()}
            for label in unseen:
                p = by_label.get(label)
                models[label] = {"source": p.source if p else None, "role": p.role if p else None,
                                 "fingerprint": None}
        config = jsonable(self.config.to_dict())
        config["gates"] = display_path(self.gates_path, self.root)
        config["mode"] = f"{self.world}_world" if self.tiny_world else "models"
        config["allow_incomplete"] = self.allow_incomplete
        try:
            gates = self.references().gates
        except ValueError:  # already reported as a usage error; still write what we have
            gates = {}
        return RunReport(
            created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            package_version=self.package_version,
            config=config,
            models=models,
            outcomes=list(self.outcomes.values()),
            gates=gates,
            selected_views=tuple(self.config.views) if self.config.views else None,
            planned=tuple(dict.fromkeys(self.planned)),
            interrupted=self.interrupted,
            computed=self.computed(),
            not_run_reasons=dict(self.not_run_reasons),
        )

    def finish(self) -> dict[str, Path]:
        """Write the report (and golden values when asked); no-op when no audit ran. A run
        stopped before its first outcome (interrupted, a worker died) still gets its report,
        listing every pair that did not run."""
        if not self.outcomes and not (self.planned and (self.interrupted or self.not_run_reasons)):
            return {}
        run = self.run_report()
        self.written = write_report(run, self.config.report_dir)
        self.verdicts = verdicts(run)
        self.candidates = run.candidates()
        if self.tiny_world:
            self._golden_summary()
        return self.written

    def incomplete_reasons(self) -> list[str]:
        """Why the run must fail because a candidate's verdict is INCOMPLETE (empty when
        none is, or with ``--allow-incomplete``): lines for the terminal summary."""
        if self.allow_incomplete:
            return []
        lines = []
        for label in self.candidates:
            v = self.verdicts[label]
            if v.status != "INCOMPLETE":
                continue
            lines.append(f"{label}: INCOMPLETE ({v.summary})")
            lines += [f"  gate {g['metric']} did not run ({g['outcome']}): {g['reason']}" for g in v.not_run]
        if lines:
            lines.append(
                "the run fails: an INCOMPLETE audit is not a pass. Fix what kept the gates from "
                "running, or pass --allow-incomplete (ini: audit_allow_incomplete = true) to "
                "accept an incomplete audit."
            )
        return lines

    def _golden_summary(self) -> None:
        """Notes on new/unused golden values; with ``--update-golden``, write them (once)."""
        try:
            golden = self.references().golden
        except ValueError:
            return
        if golden is None:
            return
        measured = {
            (r.metric, o.model): r.value
            for o in self.outcomes.values()
            for r in o.rows
            if r.value is not None
        }
        unused = sorted(
            f"{metric}[{model}]"
            for metric, models in golden.values.items()
            for model in models
            if (metric, model) not in measured
        )
        if self.update_golden:
            self._write_golden(golden, measured)
            self.golden_notes.append(f"golden: wrote {len(measured)} value(s) to {golden.shown}")
            if unused:
                self.golden_notes.append(
                    f"golden: {len(unused)} entr(y/ies) not measured in this run were kept "
                    f"(delete by hand if obsolete): {', '.join(unused[:10])}"
                    + (" ..." if len(unused) > 10 else "")
                )
            return
        skipped = sorted({o.golden_skipped for o in self.outcomes.values() if o.golden_skipped})
        for s in skipped:
            self.golden_notes.append(f"golden: not compared ({s})")
        new = sorted({f"{m}[{o.model}]" for o in self.outcomes.values() for m in o.golden_new})
        if new:
            self.golden_notes.append(
                f"golden: {len(new)} new value(s) without a golden entry (record them with "
                f"--update-golden): {', '.join(new[:10])}" + (" ..." if len(new) > 10 else "")
            )
        if unused and not skipped:
            self.golden_notes.append(
                f"golden: {len(unused)} unused entr(y/ies) (not measured in this run): "
                f"{', '.join(unused[:10])}" + (" ..." if len(unused) > 10 else "")
            )

    def _write_golden(self, golden: Golden, measured: dict[tuple[str, str], float]) -> None:
        # Values recorded under other settings are not comparable with these: start afresh.
        stale = golden.config_mismatch(self.golden_config())
        values = {} if stale else {m: dict(models) for m, models in golden.values.items()}
        for (metric, model), value in measured.items():
            values.setdefault(metric, {})[model] = {"value": value, "tol": default_tolerance(value)}
        updated = Golden(golden.path, golden.shown, values, self.golden_config(), golden.tolerance_note)
        golden.path.parent.mkdir(parents=True, exist_ok=True)
        golden.path.write_text(updated.to_json(), encoding="utf-8")
        items = self.references().golden_items
        if items is not None:
            kept = {} if stale else {v: dict(models) for v, models in items.values.items()}
            for o in self.outcomes.values():
                if o.records and not o.error:
                    kept.setdefault(o.view, {})[o.model] = item_outcomes(o.records)
            new = GoldenItems(items.path, items.shown, kept, self.golden_config())
            items.path.write_text(new.to_json(), encoding="utf-8")


def _skip_kind(m: Any) -> str | None:
    """The :class:`~unlearn_audit.views.Skip` value of a skipped metric (``None`` if measured)."""
    if m.value is not None:
        return None
    skip = getattr(m, "skip", None)
    return getattr(skip, "value", skip) or "not_applicable"
