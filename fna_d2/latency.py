"""Measured-latency lookup tables for the search's cost term (``MODEL.FNA.SEARCH.COST:
latency``), and a check of how well such a table predicts whole networks.

:func:`latency_table` times every candidate op of every searchable layer of a
:class:`~fna_d2.arch.SearchSpace` on the current device, at the op's input shape for a
batch-1 image of ``input_size``: eval mode, ``torch.no_grad``, a few warm-up runs, then
``repeats`` timed runs of which the median is kept (milliseconds). Ops are built with normal
BN, i.e. as they run in the derived network at inference.

Allocator. With glibc's default (dynamic) mmap threshold, the multi-MB activation buffers of
batch-1 CNN inference are returned to the kernel when freed and page-faulted in again on every
forward pass of a whole network, while an op timed alone and repeatedly reuses its buffers; the
resulting error is architecture-dependent (docs/benchmarks.md, section 3).
:func:`apply_malloc_tuning` fixes glibc's mmap and trim thresholds at 1 GiB (``mallopt``),
process-wide and irreversibly, as arena/caching allocators of deployment runtimes behave; it is
a logged no-op on other C libraries. Table measurement applies it by default
(``tune_malloc=True``, ``MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC``); :func:`time_module` only
with ``tune_malloc=True``.

Calibration. Ops timed alone run with warm caches; in a network they do not, so the sum of a
table under-predicts whole networks by a near-constant factor. When a table is built, a few
fixed whole networks of the space (:func:`default_calibration_archs`) are timed too and the
median of measured / predicted is stored as ``calibration.scale``; the file keeps the raw
per-op entries (``table``) and :func:`latency_table` returns them times the scale
(``calibrated=False``: raw). The whole-network prediction is ``scale * (fixed_ms + sum of the
raw entries)``. For the search the scale is irrelevant to the direction: its cost loss is
``LAMBDA * log(COST_SCALE * E) / log(TAU)`` with ``E = sum_l softmax(alpha_l) . table_l``
(``fna_d2.engine.search``), so a positive factor adds the constant ``log(scale)`` and leaves
every arch gradient unchanged; it makes the logged costs (``search/expected_cost``,
``searchable_latency_ms``) milliseconds of whole networks.

The table is cached as JSON keyed by the device (CPU model string or CUDA device name, torch
version, number of threads and, on CPU, the allocator setting) and by the per-layer shapes; a
cached table measured on another device, with another thread count or allocator setting or
for other shapes is refused with a message that says what differs, never silently reused. A
table of an older format version is re-measured (the old file kept beside it), with a logged
warning naming the file. Latency depends on the thread count: for numbers close to
single-core mobile inference pass ``threads=1`` (the table records the value used).
"""
from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from .errors import LatencyTableError  # noqa: F401  (defined there; re-exported)
from .arch import Arch, ArchError, SearchSpace

__all__ = ["LatencyTableError", "LatencyTable", "device_signature", "layer_shapes",
           "time_module", "measure_latency_table", "latency_table", "get_latency_table",
           "calibrate_table", "default_calibration_archs", "predict_vs_measured", "spearman",
           "apply_malloc_tuning", "malloc_signature", "LATENCY_FORMAT", "LATENCY_VERSION",
           "MALLOC_THRESHOLD"]

logger = logging.getLogger(__name__)

LATENCY_FORMAT = "fna_d2.latency_table"
#: 1: raw per-op table. 2: + allocator setting in the device key, whole-network calibration.
LATENCY_VERSION = 2
#: glibc mmap / trim threshold set by :func:`apply_malloc_tuning` (bytes)
MALLOC_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (glibc malloc.h)
#: the allocator status once :func:`apply_malloc_tuning` changed it in this process
_MALLOC_STATUS: Optional[Dict[str, Any]] = None
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def _glibc() -> Optional[ctypes.CDLL]:
    """The process's C library if it is glibc (has ``gnu_get_libc_version`` and ``mallopt``)."""
    try:
        lib = ctypes.CDLL(None)
    except (OSError, TypeError):  # e.g. Windows: no global symbol namespace
        return None
    if not (hasattr(lib, "gnu_get_libc_version") and hasattr(lib, "mallopt")):
        return None
    return lib


def malloc_signature() -> str:
    """This process's C allocator setting, as recorded in a CPU latency table's device key."""
    if _MALLOC_STATUS is not None:
        return str(_MALLOC_STATUS["signature"])
    if _glibc() is None:
        return f"not glibc ({platform.system() or 'unknown'})"
    env = [f"{k}={os.environ[k]}" for k in _MALLOC_ENV if os.environ.get(k)]
    tun = os.environ.get("GLIBC_TUNABLES", "")
    if "malloc" in tun:
        env.append(f"GLIBC_TUNABLES={tun}")
    return "glibc, " + (("environment " + " ".join(env)) if env else "dynamic thresholds")


def apply_malloc_tuning(enabled: bool = True) -> Dict[str, Any]:
    """Fix glibc malloc's mmap and trim thresholds at :data:`MALLOC_THRESHOLD` (``mallopt``),
    so freed activation buffers stay in the heap instead of being unmapped and page-faulted
    back in on the next forward pass. Process-wide and irreversible (glibc cannot restore its
    dynamic thresholds); idempotent. ``enabled=False`` changes nothing. On a C library other
    than glibc it is a no-op with a logged reason.

    Returns the status: ``requested``, ``tuned`` (the process's allocator is tuned now),
    ``signature`` (:func:`malloc_signature`) and ``reason``."""
    global _MALLOC_STATUS
    if _MALLOC_STATUS is not None:
        st = dict(_MALLOC_STATUS, requested=bool(enabled))
        if not enabled and st["tuned"]:
            st["reason"] = ("not requested, but this process was tuned earlier and glibc cannot "
                            "restore its dynamic thresholds: the setting stays")
        return st
    if not enabled:
        return {"requested": False, "tuned": False, "signature": malloc_signature(),
                "reason": "not requested: the C allocator is left as it is"}
    lib = _glibc()
    if lib is None:
        st = {"requested": True, "tuned": False, "signature": malloc_signature(),
              "reason": f"the C library is not glibc ({platform.system() or 'unknown'}): "
                        "mallopt thresholds do not apply; latencies are measured with the "
                        "platform's allocator"}
        logger.info(f"latency: allocator tuning skipped: {st['reason']}")
        return st
    ok_mmap = lib.mallopt(_M_MMAP_THRESHOLD, MALLOC_THRESHOLD) == 1
    ok_trim = lib.mallopt(_M_TRIM_THRESHOLD, MALLOC_THRESHOLD) == 1
    if ok_mmap and ok_trim:
        _MALLOC_STATUS = {"tuned": True, "mmap_threshold": MALLOC_THRESHOLD,
                          "trim_threshold": MALLOC_THRESHOLD,
                          "signature": f"glibc, mmap/trim thresholds {MALLOC_THRESHOLD}",
                          "reason": "glibc mallopt applied"}
        logger.info(f"latency: glibc malloc mmap/trim thresholds fixed at {MALLOC_THRESHOLD} "
                    f"bytes for this process (activation buffers are reused, not page-faulted "
                    f"in again on every forward pass)")
    else:
        _MALLOC_STATUS = {"tuned": False,
                          "signature": f"glibc, mallopt failed (mmap {ok_mmap}, trim {ok_trim})",
                          "reason": f"glibc mallopt refused the thresholds (mmap ok: {ok_mmap}, "
                                    f"trim ok: {ok_trim})"}
        logger.warning(f"latency: {_MALLOC_STATUS['reason']}")
    return dict(_MALLOC_STATUS, requested=True)


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
    """What a latency table is only valid for: device type and name, torch, threads and, on
    CPU, the C allocator setting (:func:`malloc_signature`)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev.index if dev.index is not None else 0)
    else:
        name = _cpu_name()
    sig = {"type": dev.type, "name": name, "torch": torch.__version__.split("+")[0],
           "threads": int(threads if threads is not None else torch.get_num_threads())}
    if dev.type == "cpu":
        sig["malloc"] = malloc_signature()
    return sig


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
                warmup: int = 3, tune_malloc: bool = False) -> float:
    """Median wall time (ms) of ``module(x)`` over ``repeats`` runs after ``warmup`` runs.
    ``tune_malloc``: first apply :func:`apply_malloc_tuning` (process-wide)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if tune_malloc:
        apply_malloc_tuning(True)
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
                          device: str = "cpu", threads: Optional[int] = None,
                          tune_malloc: bool = True) -> List[List[float]]:
    """Time every candidate of every searchable layer (ms, raw: no calibration), no caching.
    ``tune_malloc``: :func:`apply_malloc_tuning` first."""
    apply_malloc_tuning(tune_malloc)
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


@dataclass
class LatencyTable:
    """A latency table with its calibration: ``raw[l][c]`` (ms, op ``c`` of searchable layer
    ``l`` timed alone), ``fixed_ms`` (stem + single-candidate layers), ``scale`` (median of
    measured / predicted over the calibration networks) and the file's ``calibration`` and
    ``device`` records."""

    raw: List[List[float]]
    scale: float
    fixed_ms: float
    device: Dict[str, Any]
    calibration: Dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None

    def entries(self, calibrated: bool = True) -> List[List[float]]:
        """The per-op table, times ``scale`` unless ``calibrated=False``."""
        k = self.scale if calibrated else 1.0
        return [[v * k for v in row] for row in self.raw]

    def predict(self, choices: Sequence[int], calibrated: bool = True) -> float:
        """Whole-network latency (ms) of one candidate index per searchable layer."""
        if len(choices) != len(self.raw):
            raise LatencyTableError(f"{len(choices)} choices for a table of {len(self.raw)} "
                                    f"searchable layers")
        total = self.fixed_ms + sum(self.raw[l][c] for l, c in enumerate(choices))
        return total * (self.scale if calibrated else 1.0)


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
    archs = []
    for name, ch in picks.items():
        it = iter(ch)
        choices = [[next(it) if len(c) > 1 else 0 for c in st.candidates] for st in space.stages]
        archs.append(space.arch_from_choices(choices, {"name": f"calibration_{name}"}))
    return archs


def _default_build(arch: Arch) -> nn.Module:
    from .modeling.backbones import DerivedNet

    return DerivedNet(arch, out_features=["c5"])


def _time_nets(archs: Sequence[Arch], input_size: Sequence[int], repeats: int, device: str,
               build: Callable[[Arch], nn.Module]) -> List[float]:
    x = torch.randn(1, 3, *input_size, device=device)
    return [time_module(build(a).to(device), x, repeats) for a in archs]


def calibrate_table(space: SearchSpace, input_size: Sequence[int],
                    raw: Sequence[Sequence[float]], repeats: int = 10, device: str = "cpu",
                    threads: Optional[int] = None, archs: Optional[Sequence[Arch]] = None,
                    build: Optional[Callable[[Arch], nn.Module]] = None) -> Dict[str, Any]:
    """Time the fixed part and whole networks (``archs``, default
    :func:`default_calibration_archs`) and return the calibration record: ``scale`` = median
    over the networks of measured / (``fixed_ms`` + sum of their raw entries)."""
    size = [int(v) for v in input_size]
    archs = list(archs) if archs is not None else default_calibration_archs(space, raw)
    with _num_threads(threads):
        fixed = _time_fixed(space, size, repeats, device)
        measured = _time_nets(archs, size, repeats, device, build or _default_build)
    rows = []
    for k, (arch, m) in enumerate(zip(archs, measured)):
        ch = _choices(space, arch, f"calibration archs[{k}]")
        pred = fixed + sum(float(raw[l][c]) for l, c in enumerate(ch))
        rows.append({"name": arch.meta.get("name", f"arch_{k}"), "choices": ch,
                     "predicted_raw_ms": pred, "measured_ms": m, "ratio": m / pred})
    scale = float(statistics.median(r["ratio"] for r in rows))
    if not (scale > 0 and math.isfinite(scale)):
        raise LatencyTableError(f"latency calibration gave an invalid scale {scale}")
    return {"scale": scale, "statistic": "median of measured / predicted_raw",
            "fixed_ms": fixed, "repeats": int(repeats), "archs": rows}


def _differences(a: Dict[str, Any], b: Dict[str, Any]) -> str:
    keys = sorted(set(a) | set(b))
    return "; ".join(f"{k}: table {a.get(k)!r}, now {b.get(k)!r}" for k in keys
                     if a.get(k) != b.get(k))


def _check_cached(doc: Dict[str, Any], path: str, device: Dict[str, Any],
                  layers: List[Dict[str, Any]], input_size: Sequence[int]) -> LatencyTable:
    if not isinstance(doc, dict) or doc.get("format") != LATENCY_FORMAT:
        raise LatencyTableError(f"{path}: not a latency table ({LATENCY_FORMAT!r} file)")
    if doc.get("version") != LATENCY_VERSION:
        raise LatencyTableError(f"{path}: latency table format version {doc.get('version')!r};"
                                f" this fna_d2 reads version {LATENCY_VERSION}")
    if doc.get("device") != device:
        diff = _differences(doc.get("device") or {}, device)
        raise LatencyTableError(
            f"{path}: this latency table was measured on {doc.get('device')}, but the current "
            f"device is {device} (differs in {diff}). Latency tables are only valid on the "
            f"device, torch version, thread count and allocator setting "
            f"(MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC) they were measured with: delete the file "
            f"or set MODEL.FNA.SEARCH.LATENCY_TABLE to a new path to measure this device.")
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
    cal = doc.get("calibration")
    try:
        scale, fixed = float(cal["scale"]), float(cal["fixed_ms"])
    except (TypeError, KeyError, ValueError):
        raise LatencyTableError(f"{path}: malformed calibration record") from None
    if not (scale > 0 and math.isfinite(scale) and fixed >= 0):
        raise LatencyTableError(f"{path}: invalid calibration (scale {scale}, fixed {fixed} ms)")
    return LatencyTable([[float(v) for v in t] for t in table], scale, fixed,
                        dict(doc["device"]), dict(cal), path)


def _read(path: str) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise LatencyTableError(f"{path}: cannot read latency table ({e})") from None


def get_latency_table(space: SearchSpace, input_size: Sequence[int], path: Optional[str] = None,
                      repeats: int = 10, device: str = "cpu", threads: Optional[int] = None,
                      tune_malloc: bool = True) -> LatencyTable:
    """The :class:`LatencyTable` of ``space`` at ``input_size`` on this device.

    ``tune_malloc``: :func:`apply_malloc_tuning` first (the allocator setting is part of the
    device key). With ``path``: reuse the cached table if it matches this device and these
    shapes (raise :class:`LatencyTableError` if it exists but does not; re-measure, with a
    warning naming the file, if it is of an older format version), else measure the raw table
    and its calibration (:func:`calibrate_table`) and write both atomically. ``space`` must be
    the space as built (output-stride dilations applied)."""
    input_size = [int(v) for v in input_size]
    status = apply_malloc_tuning(tune_malloc)
    if not tune_malloc and status["tuned"]:
        logger.warning(f"latency: tune_malloc=False, but {status['reason']}; the table is "
                       f"measured (and keyed) with the tuned allocator")
    dev = device_signature(device, threads)
    layers = _signature(space, input_size)
    if path and os.path.isfile(path):
        doc = _read(path)
        old = doc.get("version") if isinstance(doc, dict) else None
        if (isinstance(doc, dict) and doc.get("format") == LATENCY_FORMAT
                and isinstance(old, int) and old < LATENCY_VERSION):
            kept = f"{path}.v{old}"
            os.replace(path, kept)
            logger.warning(
                f"latency: {path} is a version-{old} latency table; this fna_d2 writes version "
                f"{LATENCY_VERSION} (allocator setting in the device key, whole-network "
                f"calibration), so it is re-measured now (old file moved to {kept}).")
        else:
            return _check_cached(doc, path, dev, layers, input_size)
    raw = measure_latency_table(space, input_size, repeats, device, threads, tune_malloc)
    cal = calibrate_table(space, input_size, raw, repeats, device, threads)
    logger.info(f"latency: table of {len(raw)} searchable layers measured at "
                f"{input_size[0]}x{input_size[1]}; whole-network calibration scale "
                f"{cal['scale']:.3f} (median of {len(cal['archs'])} networks)")
    if path:
        doc = {"format": LATENCY_FORMAT, "version": LATENCY_VERSION, "device": dev,
               "input_size": input_size, "repeats": int(repeats), "unit": "ms",
               "layers": layers, "table": raw, "table_is": "raw per-op medians (uncalibrated)",
               "calibration": cal}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)
    return LatencyTable(raw, float(cal["scale"]), float(cal["fixed_ms"]), dev, cal, path)


def latency_table(space: SearchSpace, input_size: Sequence[int], path: Optional[str] = None,
                  repeats: int = 10, device: str = "cpu", threads: Optional[int] = None,
                  tune_malloc: bool = True, calibrated: bool = True) -> List[List[float]]:
    """Per searchable layer, per candidate: latency (ms) on this device at ``input_size``,
    times the table's whole-network calibration scale (``calibrated=False``: the raw entries).
    See :func:`get_latency_table` for caching and ``tune_malloc``."""
    return get_latency_table(space, input_size, path, repeats, device, threads,
                             tune_malloc).entries(calibrated)


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
                        tune_malloc: bool = True) -> Dict[str, Any]:
    """How well ``table`` predicts the latency of whole derived backbones.

    With a :class:`LatencyTable`: predicted = ``scale * (fixed_ms + sum of the raw entries of
    the arch's ops)`` (``predicted_raw_ms``: the same without the scale), all from the table;
    the table must have been measured with this process's allocator setting. With a plain
    per-op table (raw entries): scale 1 and the fixed stem/first block timed now. measured =
    median latency of ``build(arch)`` (default: a :class:`~fna_d2.modeling.DerivedNet` with
    output ``c5``) on a batch-1 ``input_size`` image, after :func:`apply_malloc_tuning`
    (``tune_malloc``). Returns per-arch lists, ``mean_rel_error`` (mean |pred - meas| / meas),
    ``mean_signed_rel_error``, their ``*_raw`` counterparts and ``spearman`` (rank
    correlation, the same for both; nan for fewer than 2 archs)."""
    apply_malloc_tuning(tune_malloc)
    lt = table if isinstance(table, LatencyTable) else None
    raw = lt.raw if lt is not None else table
    if len(raw) != space.num_searchable:
        raise LatencyTableError(f"table has {len(raw)} rows, space {space.name!r} has "
                                f"{space.num_searchable} searchable layers")
    dev = device_signature(device, threads)
    if lt is not None and lt.device.get("malloc") != dev.get("malloc"):
        raise LatencyTableError(
            f"{lt.path or 'latency table'}: measured with allocator "
            f"{lt.device.get('malloc')!r}, but networks would now be timed with "
            f"{dev.get('malloc')!r}")
    x_size = [int(v) for v in input_size]
    with _num_threads(threads):
        base = lt.fixed_ms if lt is not None else _time_fixed(space, x_size, repeats, device)
        scale = lt.scale if lt is not None else 1.0
        raw_pred = []
        for k, arch in enumerate(archs):
            ch = _choices(space, arch, f"archs[{k}]")
            raw_pred.append(base + sum(float(raw[l][c]) for l, c in enumerate(ch)))
        measured = _time_nets(archs, x_size, repeats, device, build or _default_build)
    predicted = [p * scale for p in raw_pred]
    out: Dict[str, Any] = {"predicted_ms": predicted, "predicted_raw_ms": raw_pred,
                           "measured_ms": measured, "fixed_ms": base, "scale": scale}
    out.update(_errors(predicted, measured))
    out.update({f"{k}_raw": v for k, v in _errors(raw_pred, measured).items()})
    out.update({"spearman": spearman(predicted, measured), "num_archs": len(archs),
                "device": dev})
    return out
