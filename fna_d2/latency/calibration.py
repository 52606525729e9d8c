"""Whole-network calibration of a latency table.

Ops timed alone run with warm caches; in a network they do not, so the sum of a table
under-predicts whole networks by a near-constant factor. When a table is built, a few fixed
whole networks of the space (:func:`default_calibration_archs`) are timed too and the median of
measured / predicted is stored as ``calibration.scale``; the file keeps the raw per-op entries
(``table``) and :func:`~fna_d2.latency.latency_table` returns them times the scale
(``calibrated=False``: raw). The whole-network prediction is ``scale * (fixed_ms + sum of the
raw entries)``. For the search the scale is irrelevant to the direction: its cost loss is
``LAMBDA * log(COST_SCALE * E) / log(TAU)`` with ``E = sum_l softmax(alpha_l) . table_l``
(``fna_d2.engine.search``), so a positive factor adds the constant ``log(scale)`` and leaves
every arch gradient unchanged; it makes the logged costs (``search/expected_cost``,
``searchable_latency_ms``) milliseconds of whole networks.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Dict, List, Optional, Sequence

from torch import nn

from ..arch import Arch, SearchSpace
from ..errors import LatencyTableError
from .measure import time_fixed_part, time_networks
from .progress import Progress
from .timing import num_threads

__all__ = ["default_calibration_archs", "calibrate_table"]


def default_calibration_archs(space: SearchSpace, raw: Sequence[Sequence[float]]
                              ) -> List[Arch]:
    """Four fixed architectures spanning the table: per searchable layer its fastest, its
    median and its slowest candidate (by ``raw``), and fastest/slowest alternating."""
    def pick(rank: Callable[[List[int], int], int]) -> List[int]:
        out = []
        for l, row in enumerate(raw):
            order = sorted(range(len(row)), key=lambda c: (row[c], c))
            out.append(order[rank(order, l)])
        return out

    picks = {"fastest": pick(lambda o, l: 0), "median": pick(lambda o, l: (len(o) - 1) // 2),
             "slowest": pick(lambda o, l: len(o) - 1),
             "alternating": pick(lambda o, l: 0 if l % 2 == 0 else len(o) - 1)}
    return [space.arch_from_path(path, {"name": f"calibration_{name}"})
            for name, path in picks.items()]


def calibrate_table(space: SearchSpace, input_size: Sequence[int],
                    raw: Sequence[Sequence[float]], repeats: int = 10, device: str = "cpu",
                    threads: Optional[int] = None, archs: Optional[Sequence[Arch]] = None,
                    build: Optional[Callable[[Arch], nn.Module]] = None, *, batch: int = 1,
                    progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Time the fixed part and whole networks (``archs``, default
    :func:`default_calibration_archs`) on ``batch`` images and return the calibration record:
    ``scale`` = median over the networks of measured / (``fixed_ms`` + sum of their raw
    entries)."""
    size = [int(v) for v in input_size]
    archs = list(archs) if archs is not None else default_calibration_archs(space, raw)
    with num_threads(threads):
        fixed = time_fixed_part(space, size, repeats, device, batch, progress)
        measured = time_networks(archs, size, repeats, device, build, batch, progress)
    rows = []
    for k, (arch, m) in enumerate(zip(archs, measured)):
        ch = space.path_of(arch, f"calibration archs[{k}]")
        pred = fixed + sum(float(raw[l][c]) for l, c in enumerate(ch))
        rows.append({"name": arch.meta.get("name", f"arch_{k}"), "choices": ch,
                     "predicted_raw_ms": pred, "measured_ms": m, "ratio": m / pred})
    scale = float(statistics.median(r["ratio"] for r in rows))
    if not (scale > 0 and math.isfinite(scale)):
        raise LatencyTableError(f"latency calibration gave an invalid scale {scale}")
    return {"scale": scale, "statistic": "median of measured / predicted_raw",
            "fixed_ms": fixed, "repeats": int(repeats), "archs": rows}
