"""Measured-latency lookup tables for the search's cost term (``MODEL.FNA.SEARCH.COST:
latency``), and a check of how well such a table predicts whole networks.

:func:`latency_table` times every candidate op of every searchable layer of a
:class:`~fna_d2.arch.SearchSpace` on the current device, at the op's input shape for a
batch-1 image of ``input_size``: eval mode, ``torch.no_grad``, a few warm-up runs, then
``repeats`` timed runs of which the median is kept (milliseconds). Ops are built with normal
BN, i.e. as they run in the derived network at inference.

The table is cached as JSON keyed by the device (CPU model string or CUDA device name, torch
version, number of threads) and by the per-layer shapes; a cached table measured on another
device, with another thread count or for other shapes is refused with a message that says
what differs, never silently reused. Latency depends on the thread count: for numbers close to
single-core mobile inference pass ``threads=1`` (the table records the value used).
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from .arch import Arch, ArchError, SearchSpace

__all__ = ["LatencyTableError", "device_signature", "layer_shapes", "time_module",
           "measure_latency_table", "latency_table", "predict_vs_measured", "spearman",
           "LATENCY_FORMAT"]

LATENCY_FORMAT = "fna_d2.latency_table"
_VERSION = 1


class LatencyTableError(ValueError):
    """A latency table that does not belong to this device or search space."""


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_signature(device: str = "cpu", threads: Optional[int] = None) -> Dict[str, Any]:
    """What a latency table is only valid for: device type and name, torch, threads."""
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev.index if dev.index is not None else 0)
    else:
        name = _cpu_name()
    return {"type": dev.type, "name": name, "torch": torch.__version__.split("+")[0],
            "threads": int(threads if threads is not None else torch.get_num_threads())}


def _out(size: int, stride: int) -> int:
    return -(-size // stride)  # "same" padding: ceil(size / stride)


def layer_shapes(space: SearchSpace, input_size: Sequence[int]) -> List[Dict[str, Any]]:
    """Every layer of ``space`` (as built, i.e. with its dilations) with its input shape
    ``(C, H, W)`` for an image of ``input_size = (H, W)``, in network order."""
    h, w = _out(int(input_size[0]), 2), _out(int(input_size[1]), 2)  # the stride-2 stem
    rows = []
    for s, st in enumerate(space.stages):
        for i, cands in enumerate(st.candidates):
            cin, cout, stride = st.layer_io(i)
            rows.append({"stage": s, "layer": i, "input": [cin, h, w], "cout": cout,
                         "stride": stride, "dilation": st.dilation, "candidates": list(cands)})
            h, w = _out(h, stride), _out(w, stride)
    return rows


@contextmanager
def _num_threads(threads: Optional[int]) -> Iterator[None]:
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def time_module(module: nn.Module, x: torch.Tensor, repeats: int = 10,
                warmup: int = 3) -> float:
    """Median wall time (ms) of ``module(x)`` over ``repeats`` runs after ``warmup`` runs."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    module.eval()
    cuda = x.device.type == "cuda"
    times = []
    with torch.no_grad():
        for k in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize(x.device)
            t0 = time.perf_counter()
            module(x)
            if cuda:
                torch.cuda.synchronize(x.device)
            if k >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


def _build(name: str, row: Dict[str, Any], norm: str = "BN") -> nn.Module:
    from .modeling.ops import build_op

    return build_op(name, row["input"][0], row["cout"], row["stride"], row["dilation"], norm)


def measure_latency_table(space: SearchSpace, input_size: Sequence[int], repeats: int = 10,
                          device: str = "cpu", threads: Optional[int] = None
                          ) -> List[List[float]]:
    """Time every candidate of every searchable layer (ms), no caching."""
    table = []
    with _num_threads(threads):
        for row in layer_shapes(space, input_size):
            if len(row["candidates"]) < 2:
                continue
            x = torch.randn(1, *row["input"], device=device)
            table.append([time_module(_build(n, row).to(device), x, repeats)
                          for n in row["candidates"]])
    return table


def _signature(space: SearchSpace, input_size: Sequence[int]) -> List[Dict[str, Any]]:
    return [r for r in layer_shapes(space, input_size) if len(r["candidates"]) > 1]


def _check_cached(doc: Dict[str, Any], path: str, device: Dict[str, Any],
                  layers: List[Dict[str, Any]], input_size: Sequence[int]) -> List[List[float]]:
    if not isinstance(doc, dict) or doc.get("format") != LATENCY_FORMAT:
        raise LatencyTableError(f"{path}: not a latency table ({LATENCY_FORMAT!r} file)")
    if doc.get("device") != device:
        raise LatencyTableError(
            f"{path}: this latency table was measured on {doc.get('device')}, but the current "
            f"device is {device}. Latency tables are only valid on the device, torch version "
            f"and thread count they were measured with: delete the file or set "
            f"MODEL.FNA.SEARCH.LATENCY_TABLE to a new path to measure this device.")
    if doc.get("layers") != layers or list(doc.get("input_size", [])) != list(input_size):
        raise LatencyTableError(
            f"{path}: this latency table is for another search space or input size "
            f"(table: input {doc.get('input_size')}, {len(doc.get('layers') or [])} searchable "
            f"layers; wanted: input {list(input_size)}, {len(layers)} searchable layers, or the "
            f"per-layer shapes/candidates differ). Delete it or set "
            f"MODEL.FNA.SEARCH.LATENCY_TABLE to another path.")
    table = doc.get("table")
    if (not isinstance(table, list) or len(table) != len(layers)
            or any(len(t) != len(r["candidates"]) for t, r in zip(table, layers))):
        raise LatencyTableError(f"{path}: malformed table (rows do not match the layers)")
    return [[float(v) for v in t] for t in table]


def latency_table(space: SearchSpace, input_size: Sequence[int], path: Optional[str] = None,
                  repeats: int = 10, device: str = "cpu", threads: Optional[int] = None
                  ) -> List[List[float]]:
    """Per searchable layer, per candidate: latency (ms) on this device at ``input_size``.

    With ``path``: reuse the cached table if it matches this device and these shapes (raise
    :class:`LatencyTableError` if it exists but does not), else measure and write it
    atomically. ``space`` must be the space as built (output-stride dilations applied)."""
    input_size = [int(v) for v in input_size]
    dev = device_signature(device, threads)
    layers = _signature(space, input_size)
    if path and os.path.isfile(path):
        try:
            with open(path, "r", encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise LatencyTableError(f"{path}: cannot read latency table ({e})") from None
        return _check_cached(doc, path, dev, layers, input_size)
    table = measure_latency_table(space, input_size, repeats, device, threads)
    if path:
        doc = {"format": LATENCY_FORMAT, "version": _VERSION, "device": dev,
               "input_size": input_size, "repeats": int(repeats), "unit": "ms",
               "layers": layers, "table": table}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)
    return table


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


def _choices(space: SearchSpace, arch: Arch, where: str) -> List[int]:
    if not space.contains(arch):
        raise ArchError(f"{where}: architecture is not a path of search space {space.name!r}")
    return [space.stages[s].candidates[i].index(arch.stages[s].ops[i])
            for s, i in space.searchable_layers()]


def _fixed_part(space: SearchSpace) -> nn.Module:
    from .modeling.ops import ConvBN

    layers: List[nn.Module] = [ConvBN(3, space.stem_channels, 3, 2)]
    for st in space.stages:
        for i, cands in enumerate(st.candidates):
            if len(cands) == 1:
                cin, cout, stride = st.layer_io(i)
                layers.append(_build(cands[0], {"input": [cin], "cout": cout, "stride": stride,
                                                "dilation": st.dilation}))
    return nn.ModuleList(layers)


def _time_fixed(space: SearchSpace, input_size: Sequence[int], repeats: int, device: str
                ) -> float:
    """Latency of the layers the table leaves out (stem + single-candidate layers)."""
    part = _fixed_part(space).to(device)
    total = time_module(part[0], torch.randn(1, 3, *input_size, device=device), repeats)
    rows = [r for r in layer_shapes(space, input_size) if len(r["candidates"]) == 1]
    for m, row in zip(list(part)[1:], rows):
        total += time_module(m, torch.randn(1, *row["input"], device=device), repeats)
    return total


def predict_vs_measured(archs: Sequence[Arch], table: Sequence[Sequence[float]],
                        space: SearchSpace, input_size: Sequence[int], repeats: int = 10,
                        device: str = "cpu", threads: Optional[int] = None,
                        build: Optional[Callable[[Arch], nn.Module]] = None) -> Dict[str, Any]:
    """How well ``table`` predicts the latency of whole derived backbones.

    predicted = (measured latency of the fixed stem/first block) + sum of the table entries of
    the arch's ops; measured = median latency of ``build(arch)`` (default: a
    :class:`~fna_d2.modeling.DerivedNet` with output ``c5``) on a batch-1 ``input_size``
    image. Returns per-arch lists and ``mean_rel_error`` (mean |pred - meas| / meas) and
    ``spearman`` (rank correlation; nan for fewer than 2 archs)."""
    if len(table) != space.num_searchable:
        raise LatencyTableError(f"table has {len(table)} rows, space {space.name!r} has "
                                f"{space.num_searchable} searchable layers")
    if build is None:
        from .modeling.backbones import DerivedNet

        def build(arch: Arch) -> nn.Module:
            return DerivedNet(arch, out_features=["c5"])

    x_size = [int(v) for v in input_size]
    with _num_threads(threads):
        base = _time_fixed(space, x_size, repeats, device)
        predicted, measured = [], []
        for k, arch in enumerate(archs):
            ch = _choices(space, arch, f"archs[{k}]")
            predicted.append(base + sum(float(table[l][c]) for l, c in enumerate(ch)))
            net = build(arch).to(device)
            measured.append(time_module(net, torch.randn(1, 3, *x_size, device=device),
                                        repeats))
    rel = [abs(p - m) / m for p, m in zip(predicted, measured) if m > 0]
    return {"predicted_ms": predicted, "measured_ms": measured, "fixed_ms": base,
            "mean_rel_error": sum(rel) / len(rel) if rel else float("nan"),
            "spearman": spearman(predicted, measured), "num_archs": len(archs),
            "device": device_signature(device, threads)}
