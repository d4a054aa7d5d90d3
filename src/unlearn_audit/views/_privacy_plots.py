"""The privacy view's plot: forget against holdout attack scores, candidate beside retain.

Drawn with matplotlib's object API (no ``pyplot`` global state), as in :mod:`._plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["score_distributions"]


def score_distributions(
    panels: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    *,
    statistic: str,
    title: str = "",
) -> Path:
    """One panel per model: histograms of the forget and the holdout items' statistic.

    A model that never saw the forget set draws two overlapping histograms; one that
    memorised it draws the forget histogram to the left (lower loss-signed statistic).

    Args:
        panels: panel title (e.g. ``"npo (AUC 0.91)"``) -> (forget values, holdout values).
        path: the PNG to write (its folder must exist).
        statistic: the x-axis label.
        title: the figure's title.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * max(1, len(panels)), 3.2), dpi=110, layout="constrained")
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False, sharex=True)[0]
    finite = [v for f, h in panels.values() for v in (*f, *h) if np.isfinite(v)]
    bins = np.histogram_bin_edges(finite, bins=20) if finite else 10
    for ax, (name, (forget, holdout)) in zip(axes, panels.items(), strict=False):
        ax.hist([v for v in forget if np.isfinite(v)], bins=bins, alpha=0.6, label="forget (members)")
        ax.hist([v for v in holdout if np.isfinite(v)], bins=bins, alpha=0.6, label="holdout (non-members)")
        ax.set_title(name)
        ax.set_xlabel(statistic)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("items")
    axes[0].legend(loc="upper right")
    if title:
        fig.suptitle(title)
    fig.savefig(path)
    return path
