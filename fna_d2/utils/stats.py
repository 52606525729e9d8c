"""Summary statistics of repeated measurements."""
from __future__ import annotations

import statistics
from typing import Dict, Optional, Sequence

__all__ = ["mean_std"]


def mean_std(xs: Sequence[float]) -> Dict[str, Optional[float]]:
    """``{"mean", "std", "n"}`` of ``xs``: the sample standard deviation (n - 1), which is
    undefined (None) for fewer than two values; the mean is None for none."""
    xs = [float(x) for x in xs]
    return {"mean": statistics.fmean(xs) if xs else None,
            "std": statistics.stdev(xs) if len(xs) > 1 else None,
            "n": len(xs)}
