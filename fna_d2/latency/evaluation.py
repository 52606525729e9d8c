"""How well a latency table predicts whole networks: :func:`predict_vs_measured` (predicted
vs measured latency of derived backbones, relative errors) and :func:`spearman` (rank
correlation)."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from torch import nn

from ..arch import Arch, SearchSpace
from ..errors import LatencyTableError
from .malloc import apply_malloc_tuning
from .measure import time_fixed_part, time_networks
from .table import LatencyTable
from .timing import device_signature, num_threads

__all__ = ["spearman", "predict_vs_measured"]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan for fewer than 2 points or a
    constant input."""
    if len(a) != len(b):
        raise ValueError("spearman: inputs differ in length")
    if len(a) < 2:
        return float("nan")

    def ranks(v: Sequence[float]) -> List[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return float("nan") if va == 0 or vb == 0 else cov / (va * vb)


def _errors(predicted: Sequence[float], measured: Sequence[float]) -> Dict[str, float]:
    rel = [(p - m) / m for p, m in zip(predicted, measured) if m > 0]
    if not rel:
        return {"mean_rel_error": float("nan"), "mean_signed_rel_error": float("nan"),
                "max_abs_rel_error": float("nan")}
    return {"mean_rel_error": sum(abs(r) for r in rel) / len(rel),
            "mean_signed_rel_error": sum(rel) / len(rel),
            "max_abs_rel_error": max(abs(r) for r in rel)}


def predict_vs_measured(archs: Sequence[Arch],
                        table: Union[LatencyTable, Sequence[Sequence[float]]],
                        space: SearchSpace, input_size: Sequence[int], repeats: int = 10,
                        device: str = "cpu", threads: Optional[int] = None,
                        build: Optional[Callable[[Arch], nn.Module]] = None,
                        tune_malloc: bool = True, batch: Optional[int] = None
                        ) -> Dict[str, Any]:
    """How well ``table`` predicts the latency of whole derived backbones.

    With a :class:`LatencyTable`: predicted = ``scale * (fixed_ms + sum of the raw entries of
    the arch's ops)`` (``predicted_raw_ms``: the same without the scale), all from the table;
    the table must have been measured with this process's allocator setting. With a plain
    per-op table (raw entries): scale 1 and the fixed stem/first block timed now. measured =
    median latency of ``build(arch)`` (default :func:`~.measure.default_build`: a
    :class:`~.measure.InferenceNet`) on ``batch`` ``input_size`` images (default: the table's
    batch; 1 for a plain table), after :func:`~.malloc.apply_malloc_tuning`
    (``tune_malloc``). Returns per-arch lists, ``mean_rel_error`` (mean |pred - meas| /
    meas), ``mean_signed_rel_error``, their ``*_raw`` counterparts and ``spearman`` (rank
    correlation, the same for both; nan for fewer than 2 archs)."""
    apply_malloc_tuning(tune_malloc)
    lt = table if isinstance(table, LatencyTable) else None
    raw = lt.raw if lt is not None else table
    if len(raw) != space.num_searchable:
        raise LatencyTableError(f"table has {len(raw)} rows, space {space.name!r} has "
                                f"{space.num_searchable} searchable layers")
    batch = int(batch if batch is not None else (lt.batch if lt is not None else 1))
    dev = device_signature(device, threads, batch)
    if lt is not None and lt.device.get("malloc") != dev.get("malloc"):
        raise LatencyTableError(
            f"{lt.path or 'latency table'}: measured with allocator "
            f"{lt.device.get('malloc')!r}, but networks would now be timed with "
            f"{dev.get('malloc')!r}")
    x_size = [int(v) for v in input_size]
    with num_threads(threads):
        base = lt.fixed_ms if lt is not None else time_fixed_part(space, x_size, repeats,
                                                                  device, batch)
        scale = lt.scale if lt is not None else 1.0
        raw_pred = []
        for k, arch in enumerate(archs):
            ch = space.path_of(arch, f"archs[{k}]")
            raw_pred.append(base + sum(float(raw[l][c]) for l, c in enumerate(ch)))
        measured = time_networks(archs, x_size, repeats, device, build, batch)
    predicted = [p * scale for p in raw_pred]
    out: Dict[str, Any] = {"predicted_ms": predicted, "predicted_raw_ms": raw_pred,
                           "measured_ms": measured, "fixed_ms": base, "scale": scale}
    out.update(_errors(predicted, measured))
    out.update({f"{k}_raw": v for k, v in _errors(raw_pred, measured).items()})
    out.update({"spearman": spearman(predicted, measured), "num_archs": len(archs),
                "device": dev})
    return out
