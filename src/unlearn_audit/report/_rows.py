"""The report's data: one :class:`MetricRow` per (model, metric), one :class:`ViewOutcome` per test.

A :class:`ViewOutcome` is what one audit test hands to the reporter. It travels as a
``record_property`` value, so it converts to and from builtin types only (under
pytest-xdist it crosses a process boundary; anything else breaks the transport).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OUTCOMES", "ROLE_ORDER", "MetricRow", "ViewOutcome", "jsonable"]

OUTCOMES = ("pass", "fail", "info", "skipped", "error")
ROLE_ORDER = ("candidate", "full", "retain", "base")


def jsonable(obj: Any) -> Any:
    """``obj`` as JSON builtins: numpy scalars and arrays to numbers and lists, NaN to ``None``,
    paths and anything else to ``str`` (records must survive ``json.dumps`` and xdist)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else float(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        seq = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [jsonable(v) for v in seq]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return str(obj)


def _number(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) or math.isinf(f) else f


@dataclass
class MetricRow:
    """One line of ``results.json``'s ``metrics`` list (contract.md's shape).

    ``threshold`` is ``{"op", "value", "source"}`` or ``None``; ``outcome`` is one of
    :data:`OUTCOMES`. ``extra`` is the view's :attr:`Metric.extra
    <unlearn_audit.views.Metric.extra>` (curves, per-layer lists, values beside the
    headline number such as format_shift's ``minus_base``), JSON builtins with NaN as
    ``None``: everything a view measures reaches results.json.
    """

    model: str
    view: str
    metric: str
    value: float | None
    ci: list[float] | None = None
    n: int | None = None
    excluded: int = 0
    by_family: dict[str, float | None] = field(default_factory=dict)
    threshold: dict[str, Any] | None = None
    paper: float | None = None
    outcome: str = "info"
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: For a ``skipped`` row, the kind of skip (``missing_reference``,
    #: ``backend_unavailable``, ``not_applicable``; :class:`unlearn_audit.views.Skip`).
    skip: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "view": self.view,
            "metric": self.metric,
            "value": _number(self.value),
            "ci": [_number(x) for x in self.ci] if self.ci is not None else None,  # NaN ends -> null
            "n": int(self.n) if self.n is not None else None,
            "excluded": int(self.excluded or 0),
            "by_family": {str(k): _number(v) for k, v in sorted(self.by_family.items())},
            "threshold": dict(self.threshold) if self.threshold is not None else None,
            "paper": _number(self.paper),
            "outcome": self.outcome,
            "reason": self.reason or "",
            "extra": jsonable(dict(self.extra or {})),
            "skip": self.skip if self.outcome == "skipped" else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MetricRow:
        row = cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})
        row.extra = dict(row.extra or {})  # results.json of older versions had no `extra`
        return row


@dataclass
class ViewOutcome:
    """What one audit test measured and decided for one (view, model).

    Attributes:
        view: the view's name.
        model: the model's label.
        role: ``candidate``, ``full``, ``retain`` or ``base`` (``None`` if unknown).
        source: where the model came from (hub id or path).
        fingerprint: the loaded model's fingerprint, ``None`` when it was never loaded.
        rows: one row per metric the view reported.
        records: the view's per-item records (``items.jsonl``).
        plots: the view's plots as data (``Plot.to_json()``: kind, caption, data), drawn
            by the report writer.
        error: why the view could not run (then ``rows`` hold ``error`` outcomes).
        golden_new: metrics that had no golden value (tiny world).
        golden_skipped: why golden values were not compared, if they were not.
        warnings: the view's plain-text warnings (``ViewResult.warnings``), shown in
            report.md under the view's table and in results.json.
        engine: what the model's engine did to inputs so far (``{"truncated": n,
            "max_positions": m}`` when sequences were cut to the context), for the report.
    """

    view: str
    model: str
    role: str | None = None
    source: str | None = None
    fingerprint: str | None = None
    rows: list[MetricRow] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    plots: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    golden_new: list[str] = field(default_factory=list)
    golden_skipped: str = ""
    engine: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_payload(self) -> dict[str, Any]:
        return jsonable(
            {
                "view": self.view,
                "model": self.model,
                "role": self.role,
                "source": self.source,
                "fingerprint": self.fingerprint,
                "rows": [r.to_json() for r in self.rows],
                "records": self.records,
                "plots": list(self.plots),
                "error": self.error,
                "golden_new": list(self.golden_new),
                "golden_skipped": self.golden_skipped,
                "engine": dict(self.engine),
                "warnings": list(self.warnings),
            }
        )

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> ViewOutcome:
        d = json.loads(json.dumps(d))  # a private copy: the caller's report keeps its own
        rows = [MetricRow.from_json(r) for r in d.pop("rows", [])]
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(rows=rows, **known)
