"""Small PNG plots for the leak views.

Drawn with matplotlib's object API (``matplotlib.figure.Figure`` + the Agg canvas that
``savefig`` picks), never ``pyplot``: no global figure state, no GUI backend, safe in a
pytest run on a headless machine or inside another process's plotting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["format_bars", "pass_at_k_curve"]


def _figure(width: float = 5.0, height: float = 3.4):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def pass_at_k_curve(ks: Sequence[int], values: Sequence[float], path: Path, *,
                    title: str = "", ci: tuple[float, float] | None = None) -> Path:
    """The best-of-N curve: share of prompts with a leaking sample among k, against k.

    Args:
        ks: the numbers of tries, ascending (drawn on a log-2 axis).
        values: mean pass@k for each ``k`` (``nan`` points are skipped).
        path: the PNG to write (its folder must exist).
        title: the plot's title.
        ci: an interval for the last point (k = N), drawn as an error bar.

    Returns:
        ``path``.
    """
    fig = _figure()
    ax = fig.subplots()
    pts = [(k, v) for k, v in zip(ks, values, strict=True) if v is not None and not math.isnan(v)]
    if pts:
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o")
        if ci is not None and not any(math.isnan(c) for c in ci):
            ax.errorbar([xs[-1]], [ys[-1]], yerr=[[ys[-1] - ci[0]], [ci[1] - ys[-1]]],
                        fmt="none", capsize=4, color="black")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(xs), [str(x) for x in xs])
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("samples per prompt (k)")
    ax.set_ylabel("leak rate (pass@k)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.savefig(path)
    return path


def format_bars(rates: Mapping[str, float | None], path: Path, *, title: str = "",
                pooled: float | None = None) -> Path:
    """One bar per question format; a dashed line at the pooled rate.

    Args:
        rates: format -> rate in [0, 1] (``None`` drawn as an empty slot).
        path: the PNG to write (its folder must exist).
        title: the plot's title.
        pooled: the pooled rate over all formats, if any.

    Returns:
        ``path``.
    """
    fig = _figure(6.0, 3.4)
    ax = fig.subplots()
    names = list(rates)
    ax.bar(range(len(names)), [0.0 if rates[n] is None else rates[n] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    if pooled is not None and not math.isnan(pooled):
        ax.axhline(pooled, linestyle="--", color="black", label=f"pooled {pooled:.2f}")
        ax.legend(loc="upper right")
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("leak rate")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.savefig(path)
    return path
