"""Drawing the views' plots: one drawer per plot kind, registered by the kind's name.

A view returns its plots as data (:class:`unlearn_audit.views.Plot`: kind, caption,
plain-JSON ``data``); the report writer calls :func:`draw_plot` for each into the
report's ``plots/`` folder. A new view reuses a kind below, or registers its own drawer
with :func:`register_drawer`; a kind no drawer knows raises :class:`UnknownPlotKind`,
which the writer turns into a note in report.md.

The kinds and the ``data`` each reads (values that are ``None`` or not finite are left
out of the drawing; ``title`` is optional everywhere):

- ``pass_at_k``: ``k`` (ascending ints, drawn on a log-2 axis), ``leak_rate`` (one per
  k), ``ci`` (``[lo, hi]`` for the last point, optional).
- ``bars``: ``labels``, ``values`` (one per label, in [0, 1]), ``line`` (a dashed
  horizontal line, optional) and ``line_label``, ``ylabel``.
- ``layer_curves``: ``curves`` (a list of ``{"label", "values"}``, one value per layer
  0..L), ``ylabel``, ``xlabel``.
- ``histograms``: ``panels`` (a list of ``{"title", "series": [{"label", "values"}]}``,
  side by side on one set of bins), ``xlabel``, ``ylabel``.

Drawn with matplotlib's object API (``matplotlib.figure.Figure`` and the Agg canvas that
``savefig`` picks), never ``pyplot``: no global figure state, no backend switch, safe on
a headless machine. matplotlib and numpy are imported when a plot is drawn, never at
import (the pytest plugin imports the report package).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DRAWERS", "UnknownPlotKind", "draw_plot", "register_drawer"]

#: A drawer: the plot's ``data`` and the PNG to write (its folder exists).
Drawer = Callable[[Mapping[str, Any], Path], None]

#: kind -> drawer.
DRAWERS: dict[str, Drawer] = {}


class UnknownPlotKind(KeyError):
    """A plot whose kind no drawer is registered for."""


def register_drawer(kind: str) -> Callable[[Drawer], Drawer]:
    """Decorator: draw plots of ``kind`` with the decorated function."""

    def deco(fn: Drawer) -> Drawer:
        DRAWERS[kind] = fn
        return fn

    return deco


def draw_plot(kind: str, data: Mapping[str, Any], path: Path) -> Path:
    """Draw one plot of ``kind`` from ``data`` into the PNG ``path`` (folder created).

    Raises:
        UnknownPlotKind: no drawer for ``kind``.
    """
    drawer = DRAWERS.get(kind)
    if drawer is None:
        raise UnknownPlotKind(f"no drawer for plot kind {kind!r} (known: {', '.join(sorted(DRAWERS))})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    drawer(data, path)
    return path


def _finite(v: Any) -> float | None:
    """``v`` as a float, or ``None`` when it is missing, not a number or not finite."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _figure(width: float, height: float, **kw: Any):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained", **kw)


def _save(fig, path: Path, title: str | None) -> None:
    """Title a one-panel figure and write it (no software version in the file, so
    identical runs give identical PNGs)."""
    if title:
        fig.axes[0].set_title(str(title), fontsize=10)
    fig.savefig(path, format="png", metadata={"Software": None})


@register_drawer("pass_at_k")
def pass_at_k(data: Mapping[str, Any], path: Path) -> None:
    """The best-of-N curve: share of prompts with a leaking sample among k, against k."""
    fig = _figure(5.0, 3.4)
    ax = fig.subplots()
    pts = [(k, y) for k, v in zip(data["k"], data["leak_rate"], strict=True) if (y := _finite(v)) is not None]
    if pts:
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o")
        ci = [_finite(c) for c in (data.get("ci") or ())]
        if len(ci) == 2 and None not in ci:
            ax.errorbar([xs[-1]], [ys[-1]], yerr=[[max(0.0, ys[-1] - ci[0])], [max(0.0, ci[1] - ys[-1])]],
                        fmt="none", capsize=4, color="black")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(xs), [str(x) for x in xs])
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("samples per prompt (k)")
    ax.set_ylabel("leak rate (pass@k)")
    ax.grid(alpha=0.3)
    _save(fig, path, data.get("title"))


@register_drawer("bars")
def bars(data: Mapping[str, Any], path: Path) -> None:
    """One bar per label (a missing value is an empty slot); an optional dashed line."""
    fig = _figure(6.0, 3.4)
    ax = fig.subplots()
    names = [str(n) for n in data["labels"]]
    values = [_finite(v) for v in data["values"]]
    if len(values) != len(names):
        raise ValueError(f"{len(names)} labels but {len(values)} values")
    ax.bar(range(len(names)), [0.0 if v is None else v for v in values])
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    line = _finite(data.get("line"))
    if line is not None:
        ax.axhline(line, linestyle="--", color="black", label=f"{data.get('line_label', '')} {line:.2f}".strip())
        ax.legend(loc="upper right")
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel(data.get("ylabel", "rate"))
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path, data.get("title"))


def _series(entries: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[float | None]]]:
    return [(str(e["label"]), [_finite(v) for v in e["values"]]) for e in entries]


@register_drawer("layer_curves")
def layer_curves(data: Mapping[str, Any], path: Path) -> None:
    """One line per curve over layer indices 0..L; missing values leave gaps."""
    fig = _figure(6.0, 3.6)
    ax = fig.subplots()
    for (name, ys), marker in zip(_series(data["curves"]), "osd^v<>", strict=False):
        ax.plot(range(len(ys)), [math.nan if y is None else y for y in ys], marker=marker, markersize=3.5,
                label=name)
    ax.xaxis.get_major_locator().set_params(integer=True)  # layers are whole numbers
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(data.get("xlabel", "layer (0 = embeddings)"))
    ax.set_ylabel(data.get("ylabel", "top-1 accuracy"))
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(loc="best", fontsize=8)
    _save(fig, path, data.get("title"))


@register_drawer("histograms")
def histograms(data: Mapping[str, Any], path: Path) -> None:
    """One panel per entry, each series a histogram over bins shared by every panel.

    The privacy view draws the forget and the holdout items' statistic per model: a model
    that never saw the forget set draws two overlapping histograms.
    """
    import numpy as np

    panels = [(str(p.get("title", "")), _series(p["series"])) for p in data["panels"]]
    fig = _figure(4.2 * max(1, len(panels)), 3.2)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False, sharex=True)[0]
    finite = [v for _, series in panels for _, vs in series for v in vs if v is not None]
    bins = np.histogram_bin_edges(finite, bins=20) if finite else 10
    for ax, (name, series) in zip(axes, panels, strict=False):
        for label, vs in series:
            ax.hist([v for v in vs if v is not None], bins=bins, alpha=0.6, label=label)
        ax.set_title(name)
        ax.set_xlabel(data.get("xlabel", ""))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(data.get("ylabel", "items"))
    if panels and panels[0][1]:
        axes[0].legend(loc="upper right")
    if data.get("title"):
        fig.suptitle(str(data["title"]))
    fig.savefig(path, format="png", metadata={"Software": None})
