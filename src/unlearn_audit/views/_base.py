"""What a view is: items in, requests to the engine, records and metrics out.

A view never applies gates and never writes files; the plugin and the reporter do.
Adding a view = one module under ``views/`` decorated with :func:`register_view`,
plus one test module under ``audits/``. Nothing in the engine or the plugin changes.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from unlearn_audit.context import AuditContext


@dataclass
class Metric:
    """One measured number.

    Attributes:
        name: the views.md name, e.g. ``novel_recall.leak_rate``.
        value: the number (fractions for rates), or ``None`` when skipped.
        ci: 95% confidence interval ``(lo, hi)`` or ``None`` when it has no meaning.
        n: the count the number is over (items, pairs, prompts).
        excluded: items left out (e.g. empty novel content), with the reason in ``reason``.
        by_family: the same number per fact family.
        reason: why it was skipped, or a note on exclusions.
        extra: anything else worth reporting (curves, per-layer lists); JSON-serialisable.
    """

    name: str
    value: float | None
    ci: tuple[float, float] | None = None
    n: int | None = None
    excluded: int = 0
    by_family: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.value is None


@dataclass
class ViewResult:
    """Everything one view measured on one model."""

    view: str
    model: str
    metrics: list[Metric]
    records: list[dict] = field(default_factory=list)  # per-item, JSON-serialisable
    plots: dict[str, Path] = field(default_factory=dict)  # caption -> PNG path

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"{self.view} on {self.model} has no metric {name!r}")


class View:
    """Base class of every audit view."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()

    def run(self, ctx: AuditContext, model: str) -> ViewResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def skipped(self, model: str, reason: str) -> ViewResult:
        """Every metric of this view as skipped, with the reason (never a made-up number)."""
        return ViewResult(self.name, model, [Metric(m, None, reason=reason) for m in self.metrics])


_REGISTRY: dict[str, type[View]] = {}


def register_view(cls: type[View]) -> type[View]:
    if cls.name in _REGISTRY:
        raise ValueError(f"view {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available_views() -> list[str]:
    return sorted(_REGISTRY)


def get_view(name: str) -> View:
    """The view registered under ``name``; a readable error with suggestions otherwise."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"Unknown view '{name}'.{hint} Available: {', '.join(available_views())}.")
    return _REGISTRY[name]()
