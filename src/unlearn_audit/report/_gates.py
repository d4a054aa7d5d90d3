"""Judging measured numbers: release gates, the tiny world's expected verdicts, golden values.

Pure functions on numbers and :class:`Gate`s; the plugin feeds them and asserts on what
they return. A failing gate reads like
``novel_recall.leak_rate 0.41 > 0.3 (reference_results/gates.yaml: <rationale>)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from unlearn_audit.report._reference import Gate, Golden, default_tolerance
from unlearn_audit.report._rows import MetricRow

__all__ = [
    "MISSING_REFERENCE",
    "GateResult",
    "check_expectations",
    "check_golden",
    "evaluate_gate",
]

#: The skip kind (:class:`unlearn_audit.views.Skip`) of a number that needs a reference model
#: this run was not given: expected, it leaves a verdict complete (every other skip makes it
#: INCOMPLETE). The report reads the kind, never the wording of the reason.
MISSING_REFERENCE = "missing_reference"
_NEGATED = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}


def _fmt(x: float) -> str:
    return f"{x:.4g}"


@dataclass(frozen=True)
class GateResult:
    """A gate applied to one number.

    Attributes:
        outcome: ``pass``, ``fail``, ``skipped`` or ``error``.
        threshold: ``{"op", "value", "source"}`` for ``results.json`` (``None`` when the
            threshold could not be resolved).
        reason: the row's reason (the rationale, the resolved relative threshold, why skipped).
        message: the failure message (empty unless ``outcome`` is ``fail`` or ``error``).
        skip: for ``skipped``, its kind (a :class:`unlearn_audit.views.Skip` value), when
            the gate itself knows it (a relative gate without its reference model).
    """

    outcome: str
    threshold: dict | None
    reason: str
    message: str = ""
    skip: str | None = None


def evaluate_gate(
    gate: Gate,
    value: float | None,
    *,
    reference_label: str | None = None,
    reference_value: float | None = None,
    reference_problem: str = "",
    reference_skip: str | None = None,
) -> GateResult:
    """Apply ``gate`` to ``value``.

    Args:
        gate: the gate.
        value: the candidate's number (``None`` when the view skipped it).
        reference_label: for a relative gate, the label of the reference model in this run
            (``None`` when the run has no such model).
        reference_value: that reference's value of the metric.
        reference_problem: why the reference's value is missing although the model is there.
        reference_skip: the skip kind of that missing value, if it was skipped.
    """
    if gate.relative_to is not None and reference_label is None:
        return GateResult(
            "skipped",
            None,
            f"missing reference: the gate is relative to {gate.relative_to} and no "
            f"{gate.relative_to} model is in this run",
            skip=MISSING_REFERENCE,
        )
    if gate.relative_to is not None and reference_value is None:
        why = reference_problem or "not measured"
        outcome = "error" if why.startswith("error") else "skipped"
        reason = f"threshold needs {gate.relative_to} ({reference_label})'s {gate.metric}: {why}"
        skip = reference_skip if outcome == "skipped" else None
        return GateResult(outcome, None, reason, reason if outcome == "error" else "", skip=skip)
    threshold = gate.threshold(reference_value)
    if not math.isfinite(threshold):
        # a NaN reference would FAIL every value (all comparisons false) and an infinite one
        # PASS every value: neither decides anything
        msg = (f"threshold {gate.describe()} is {_fmt(threshold)} because {gate.relative_to} "
               f"({reference_label}) measured {_fmt(reference_value)}, so the gate cannot be decided")
        return GateResult("error", None, msg, msg)
    th = {"op": gate.op, "value": threshold, "source": gate.source}
    basis = ""
    if gate.relative_to is not None:
        basis = f"threshold {gate.describe()} = {_fmt(threshold)} ({reference_label} measured {_fmt(reference_value)}); "
    if value is None:
        return GateResult("skipped", th, basis + "the metric was not measured")
    if math.isnan(value):
        msg = f"{gate.metric} is NaN, so the gate {gate.op} {_fmt(threshold)} cannot be decided"
        return GateResult("error", th, msg, msg)
    if gate.passes(value, threshold):
        return GateResult("pass", th, basis + gate.rationale)
    message = (
        f"{gate.metric} {_fmt(value)} {_NEGATED[gate.op]} {_fmt(threshold)} "
        f"({gate.source}: {basis}{gate.rationale})"
    )
    return GateResult("fail", th, basis + gate.rationale, message)


def check_expectations(
    model: str,
    rows: list[MetricRow],
    expected: Mapping[str, str],
    gates: Mapping[str, Gate],
    source: str,
) -> list[str]:
    """The tiny world's demo: messages for each gate whose verdict differs from the expected one.

    Only decided gates (``pass``/``fail``) are compared; a gate not listed in ``expected``
    is expected to pass.
    """
    problems = []
    for row in rows:
        if row.metric not in gates or row.outcome not in ("pass", "fail"):
            continue
        want = expected.get(row.metric, "pass")
        if row.outcome != want:
            value = "n/a" if row.value is None else _fmt(row.value)
            th = row.threshold or {}
            problems.append(
                f"{model}: gate {row.metric} was expected to {want.upper()} ({source or 'default: pass'}) "
                f"but measured {row.outcome.upper()}: {value} against {th.get('op', '?')} "
                f"{_fmt(th['value']) if 'value' in th else '?'}"
            )
    return problems


def check_golden(
    model: str, rows: list[MetricRow], golden: Golden
) -> tuple[list[str], list[str]]:
    """Compare measured values with golden ones.

    Returns:
        ``(moved, new)``: a message per metric that moved beyond its tolerance, and the
        metrics that have no golden value yet (reported, never a failure, so a new view
        can land before its values are recorded).
    """
    moved, new = [], []
    for row in rows:
        if row.value is None:
            continue
        entry = golden.get(row.metric, model)
        if entry is None:
            new.append(row.metric)
            continue
        gold, tol = entry["value"], entry.get("tol", default_tolerance(entry["value"]))
        if not abs(row.value - gold) <= tol:  # `not <=` so that NaN counts as moved
            moved.append(
                f"{row.metric} on {model} moved from {_fmt(gold)} to {_fmt(row.value)} "
                f"(tolerance {_fmt(tol)}; {golden.shown}; run with --update-golden if intended)"
            )
    return moved, new
