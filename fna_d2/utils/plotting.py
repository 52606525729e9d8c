"""Headless matplotlib: the Agg backend and atomic PNG saving."""
from __future__ import annotations

from typing import Any

from .io import atomic_path

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed). A backend the process has
    already chosen is kept."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str, dpi: int = 110, close: bool = True) -> str:
    """Save ``fig`` to ``path`` (format from the extension) atomically, then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    if close:
        pyplot().close(fig)
    return path
