"""Chart plumbing shared by the experiments: the headless backend, one look, one save."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed: charts are files

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3})


def figure(
    width: float = 8.0, height: float = 4.8, ncols: int = 1, nrows: int = 1
) -> tuple[Figure, list]:
    """Returns a new figure and its axes, row by row."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save(fig: Figure, path: Path) -> Path:
    """Writes `fig` as PNG to `path`, closes it and returns the path."""
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
