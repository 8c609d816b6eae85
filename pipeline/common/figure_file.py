"""Saving matplotlib figures as PNG files, atomically, with the non-interactive backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pipeline.common.atomic import atomic_path


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write `fig` as a PNG at `path` (atomically) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
