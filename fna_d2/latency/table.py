"""The latency table file: building, caching and loading it (:func:`get_latency_table`,
:func:`latency_table`), format version 2, and :class:`LatencyTable`.

The table is cached as JSON keyed by the device (CPU model string or CUDA device name, torch
version, number of threads and, on CPU, the allocator setting; :func:`~.timing.
device_signature`) and by the per-layer shapes; a cached table measured on another device, with
another thread count or allocator setting or for other shapes is refused with a
:class:`~fna_d2.errors.LatencyTableError` that says what differs, never silently reused. A
table of an older format version is re-measured (the old file kept beside it), with a logged
warning naming the file. The file keeps the raw per-op medians (``table``) and the
whole-network calibration (``calibration``, :mod:`.calibration`).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ..arch import SearchSpace
from ..errors import LatencyTableError
from ..utils import write_json
from .calibration import calibrate_table
from .malloc import apply_malloc_tuning
from .measure import layer_shapes, measure_latency_table
from .timing import device_signature

__all__ = ["LATENCY_FORMAT", "LATENCY_VERSION", "LatencyTable", "get_latency_table",
           "latency_table"]

logger = logging.getLogger(__name__)

LATENCY_FORMAT = "fna_d2.latency_table"
#: 1: raw per-op table. 2: + allocator setting in the device key, whole-network calibration.
LATENCY_VERSION = 2


def _searchable_shapes(space: SearchSpace, input_size: Sequence[int]) -> List[Dict[str, Any]]:
    """The ``layers`` record of a table file: :func:`~.measure.layer_shapes` of the searchable
    layers."""
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
    layers = _searchable_shapes(space, input_size)
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
        write_json(path, doc, indent=1)
    return LatencyTable(raw, float(cal["scale"]), float(cal["fixed_ms"]), dev, cal, path)


def latency_table(space: SearchSpace, input_size: Sequence[int], path: Optional[str] = None,
                  repeats: int = 10, device: str = "cpu", threads: Optional[int] = None,
                  tune_malloc: bool = True, calibrated: bool = True) -> List[List[float]]:
    """Per searchable layer, per candidate: latency (ms) on this device at ``input_size``,
    times the table's whole-network calibration scale (``calibrated=False``: the raw entries).
    See :func:`get_latency_table` for caching and ``tune_malloc``."""
    return get_latency_table(space, input_size, path, repeats, device, threads,
                             tune_malloc).entries(calibrated)
