"""What moved between two ``results.json`` files, as markdown (``unlearn-audit diff``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn_audit.report._writer import RESULTS_SCHEMA_VERSION, format_delta, format_value

__all__ = ["Change", "Diff", "diff_results", "load_results", "render_diff"]


@dataclass(frozen=True)
class Change:
    """One (model, metric) whose value or outcome differs."""

    model: str
    metric: str
    old: float | None
    new: float | None
    old_outcome: str
    new_outcome: str

    @property
    def delta(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old


@dataclass
class Diff:
    """The comparison of two runs.

    Attributes:
        moved: values that changed by more than the tolerance, or whose outcome changed.
        unchanged: how many (model, metric) pairs are in both and did not move.
        added: ``(model, metric)`` pairs only in the new run.
        removed: ``(model, metric)`` pairs only in the old run.
        tolerance: the absolute tolerance used.
    """

    moved: list[Change] = field(default_factory=list)
    unchanged: int = 0
    added: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    tolerance: float = 0.0


def load_results(path: Path) -> dict[str, Any]:
    """Read a results.json and check it is one (schema version and a ``metrics`` list)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), list):
        raise ValueError(f"{path}: not a results.json (no 'metrics' list)")
    version = data.get("schema_version")
    if version != RESULTS_SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {version!r}; this unlearn-audit reads version {RESULTS_SCHEMA_VERSION}"
        )
    return data


def _index(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(str(r.get("model")), str(r.get("metric"))): r for r in data["metrics"]}


def diff_results(old: dict[str, Any], new: dict[str, Any], tolerance: float = 0.0) -> Diff:
    """Compare two results.json contents.

    Args:
        old: the earlier run.
        new: the later run.
        tolerance: absolute change a value may make and still count as unchanged.
    """
    if tolerance < 0:
        raise ValueError(f"--tolerance must be >= 0, got {tolerance}")
    a, b = _index(old), _index(new)
    diff = Diff(tolerance=tolerance)
    for key in sorted(a.keys() & b.keys()):
        ra, rb = a[key], b[key]
        va, vb = ra.get("value"), rb.get("value")
        oa, ob = ra.get("outcome", ""), rb.get("outcome", "")
        if va is None or vb is None:
            value_moved = (va is None) != (vb is None)
        else:
            value_moved = abs(vb - va) > tolerance
        if value_moved or oa != ob:
            diff.moved.append(Change(key[0], key[1], va, vb, oa, ob))
        else:
            diff.unchanged += 1
    diff.added = sorted(b.keys() - a.keys())
    diff.removed = sorted(a.keys() - b.keys())
    return diff


def render_diff(diff: Diff, old_name: str = "old", new_name: str = "new") -> str:
    """The diff as markdown: a table of what moved, the unchanged count, what was added or removed."""
    from tabulate import tabulate

    lines = [f"## What moved: {old_name} → {new_name}", ""]
    if diff.moved:
        table = [
            [
                c.model,
                c.metric,
                format_value(c.metric, c.old),
                format_value(c.metric, c.new),
                "—" if c.delta is None else format_delta(c.metric, c.delta),
                c.new_outcome if c.old_outcome == c.new_outcome else f"{c.old_outcome} → {c.new_outcome}",
            ]
            for c in diff.moved
        ]
        headers = ["model", "metric", "old", "new", "delta", "outcome"]
        lines += [tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]
    else:
        lines += ["No metric moved.", ""]
    lines.append(f"{diff.unchanged} unchanged (tolerance {diff.tolerance:g}).")
    for title, pairs in (("Added", diff.added), ("Removed", diff.removed)):
        if pairs:
            lines.append(f"{title} ({len(pairs)}): " + ", ".join(f"{m} · `{k}`" for m, k in pairs))
    return "\n".join(lines) + "\n"
