"""Helpers for the slow known-answer tests on the tiny world."""

from __future__ import annotations


def world_value(ctx, view: str, metric: str, label: str, record_property) -> float:
    """One metric of one view on one tiny model, recorded on the test and never skipped."""
    m = ctx.result(view, label).metric(metric)
    record_property(f"{metric}[{label}]", m.value)
    assert m.value is not None, f"{metric} on {label} skipped: {m.reason}"
    return m.value
