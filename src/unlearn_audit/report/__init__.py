"""Reference results, judging, and the report: gates, paper numbers, golden values, writer, diff.

The pytest plugin (:mod:`unlearn_audit.plugin`) is a thin layer over this package:
:class:`AuditSession` measures and judges, :func:`write_report` writes report.md,
results.json and items.jsonl, and :func:`diff_results` compares two results.json files.
"""

from unlearn_audit.report._diff import diff_results, render_diff
from unlearn_audit.report._gates import (
    MISSING_REFERENCE,
    GateResult,
    check_expectations,
    check_golden,
    evaluate_gate,
)
from unlearn_audit.report._reference import (
    KNOWN_METRICS,
    KNOWN_VIEWS,
    Gate,
    Golden,
    ReferenceResults,
    ReferenceResultsError,
    declared_metrics,
    is_known_metric,
    load_gates,
    load_golden,
    load_paper,
    load_reference_results,
)
from unlearn_audit.report._rows import MetricRow, ViewOutcome
from unlearn_audit.report._session import AuditSession, Measurement, PlannedModel
from unlearn_audit.report._writer import (
    RunReport,
    Verdict,
    build_results,
    format_value,
    render_markdown,
    verdicts,
    write_report,
)

__all__ = [
    "KNOWN_METRICS",
    "KNOWN_VIEWS",
    "MISSING_REFERENCE",
    "AuditSession",
    "Gate",
    "GateResult",
    "Golden",
    "Measurement",
    "MetricRow",
    "PlannedModel",
    "ReferenceResults",
    "ReferenceResultsError",
    "RunReport",
    "Verdict",
    "ViewOutcome",
    "build_results",
    "check_expectations",
    "check_golden",
    "diff_results",
    "evaluate_gate",
    "format_value",
    "declared_metrics",
    "is_known_metric",
    "load_gates",
    "load_golden",
    "load_paper",
    "load_reference_results",
    "render_diff",
    "render_markdown",
    "verdicts",
    "write_report",
]
