"""Plots of per-layer curves (masked_probe), drawn without touching pyplot's global state.

``matplotlib.figure.Figure`` with an Agg canvas needs no backend switch, so drawing here
never changes the plotting backend of a user's session (``matplotlib.use`` would).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_layer_curves(
    path: Path,
    curves: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str = "top-1 accuracy",
    xlabel: str = "layer (0 = embeddings)",
) -> Path:
    """Draw one line per curve over layer indices 0..L and save a PNG.

    Args:
        path: where the PNG goes (its folder must exist).
        curves: legend label -> one value per layer (``nan`` values leave gaps).
        title: the figure title (model label and headline number).
        ylabel: y-axis label; the axis spans [0, 1].
        xlabel: x-axis label.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for (name, ys), marker in zip(curves.items(), "osd^v<>", strict=False):
        ax.plot(range(len(ys)), list(ys), marker=marker, markersize=3.5, label=name)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)
