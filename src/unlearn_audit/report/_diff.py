"""What moved between two ``results.json`` files, as markdown (``unlearn-audit diff``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn_audit.report._golden_items import DuplicateKeyError, loads_strict
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
        moved: values that changed by more than the tolerance, or whose outcome changed. A
            number on one side and NaN on the other has moved.
        unchanged: how many (model, metric) pairs are in both and did not move.
        added: ``(model, metric)`` pairs only in the new run.
        removed: ``(model, metric)`` pairs only in the old run.
        tolerance: the absolute tolerance used.
        unmeasured: pairs NaN on both sides: not a move (the same state in both runs), but
            not shown as unchanged either, since no number was compared.
    """

    moved: list[Change] = field(default_factory=list)
    unchanged: int = 0
    added: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    tolerance: float = 0.0
    unmeasured: list[tuple[str, str]] = field(default_factory=list)


_FIX = "regenerate it with `pytest audits` or restore it"


def load_results(path: Path) -> dict[str, Any]:
    """Read a results.json and check it is one: schema version and a ``metrics`` list of
    ``{model, metric, value, outcome}`` objects, each (model, metric) once.

    Raises:
        FileNotFoundError: no such file.
        ValueError: anything else wrong, in one line naming the file and the entry.
    """
    path = Path(path)
    try:
        data = loads_strict(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text, so not a results.json") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    except DuplicateKeyError as e:
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), list):
        raise ValueError(f"{path}: not a results.json (no 'metrics' list)")
    version = data.get("schema_version")
    if version != RESULTS_SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {version!r}; this unlearn-audit reads version {RESULTS_SCHEMA_VERSION}"
        )
    first: dict[tuple[str, str], int] = {}
    for i, row in enumerate(data["metrics"]):
        where = f"{path}: metrics[{i}]"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object {{model, metric, value, outcome}}, got "
                             f"{type(row).__name__}; {_FIX}")
        for key in ("model", "metric"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ValueError(f"{where}.{key}: expected a non-empty string, got {row.get(key)!r}; {_FIX}")
        where = f"{where} ({row['model']} · {row['metric']})"
        if "value" not in row:
            raise ValueError(f"{where}: 'value' missing (null when not measured); {_FIX}")
        value = row["value"]
        # bool is an int subclass: `true` is no measurement
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{where}: value: expected a number or null, got {value!r}; {_FIX}")
        if not isinstance(row.get("outcome", ""), str):
            raise ValueError(f"{where}: outcome: expected a string, got {row['outcome']!r}; {_FIX}")
        key = (row["model"], row["metric"])
        if key in first:  # a second row would hide the first from the comparison
            raise ValueError(f"{where}: the same model and metric as metrics[{first[key]}]; keep one")
        first[key] = i
    return data


def _index(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(str(r.get("model")), str(r.get("metric"))): r for r in data["metrics"]}


def _is_nan(v: float | None) -> bool:
    return v is not None and math.isnan(v)


def diff_results(old: dict[str, Any], new: dict[str, Any], tolerance: float = 0.0) -> Diff:
    """Compare two results.json contents (as :func:`load_results` returns them).

    Args:
        old: the earlier run.
        new: the later run.
        tolerance: absolute change a value may make and still count as unchanged.
    """
    # `not >= 0` so that NaN is refused too: every comparison with it is false, so a NaN
    # tolerance would call anything unchanged
    if not tolerance >= 0 or math.isinf(tolerance):
        raise ValueError(f"--tolerance must be a finite number >= 0, got {tolerance}")
    a, b = _index(old), _index(new)
    diff = Diff(tolerance=tolerance)
    for key in sorted(a.keys() & b.keys()):
        ra, rb = a[key], b[key]
        va, vb = ra.get("value"), rb.get("value")
        oa, ob = ra.get("outcome", ""), rb.get("outcome", "")
        if va is None or vb is None:
            value_moved = (va is None) != (vb is None)
        elif _is_nan(va) or _is_nan(vb):
            value_moved = not (_is_nan(va) and _is_nan(vb))  # a number <-> NaN is a change
        else:
            value_moved = va != vb and not abs(vb - va) <= tolerance  # equal infinities have not moved
        if value_moved or oa != ob:
            diff.moved.append(Change(key[0], key[1], va, vb, oa, ob))
        elif _is_nan(va):
            diff.unmeasured.append(key)
        else:
            diff.unchanged += 1
    diff.added = sorted(b.keys() - a.keys())
    diff.removed = sorted(a.keys() - b.keys())
    return diff


def render_diff(diff: Diff, old_name: str = "old", new_name: str = "new") -> str:
    """The diff as markdown: a table of what moved, the unchanged count, what was added or removed."""
    from tabulate import tabulate

    from unlearn_audit.report._markdown import md_code, md_text

    # Labels, metric names and outcomes come from the files compared: text, never markup.
    lines = [f"## What moved: {md_text(old_name)} → {md_text(new_name)}", ""]
    if diff.moved:
        table = [
            [
                md_text(c.model),
                md_text(c.metric),
                format_value(c.metric, c.old),
                format_value(c.metric, c.new),
                "—" if c.delta is None else format_delta(c.metric, c.delta),
                md_text(c.new_outcome if c.old_outcome == c.new_outcome else f"{c.old_outcome} → {c.new_outcome}"),
            ]
            for c in diff.moved
        ]
        headers = ["model", "metric", "old", "new", "delta", "outcome"]
        lines += [tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]
    else:
        lines += ["No metric moved.", ""]
    lines.append(f"{diff.unchanged} unchanged (tolerance {diff.tolerance:g}).")
    if diff.unmeasured:
        lines.append(f"NaN in both runs, so not compared ({len(diff.unmeasured)}): "
                     + ", ".join(f"{md_text(m)} · {md_code(k)}" for m, k in diff.unmeasured))
    for title, pairs in (("Added", diff.added), ("Removed", diff.removed)):
        if pairs:
            lines.append(f"{title} ({len(pairs)}): " + ", ".join(f"{md_text(m)} · {md_code(k)}" for m, k in pairs))
    return "\n".join(lines) + "\n"
