"""The latency table file: building, caching and loading it (:func:`get_latency_table`,
:func:`measure_table`, :func:`read_latency_table`, :func:`latency_table`), format version 2,
and :class:`LatencyTable`.

The table is cached as JSON keyed by the device (:func:`~.timing.device_signature`: CPU model
string or CUDA device name, torch version, the batch the ops were timed at and, on the CPU,
the number of threads and the allocator setting) and by the per-layer shapes. A cached table
measured on another device, at another batch, with another thread count or allocator setting
is refused with a :class:`~fna_d2.errors.LatencyTableError` that says what differs, never
silently reused -- unless the caller says the table comes from another device on purpose
(``foreign=True``, ``MODEL.FNA.SEARCH.LATENCY_TABLE_FOREIGN``: a table built on the deployment
device with ``python -m fna_d2.latency build``). A table for other shapes (search space,
input size, output stride) is refused always. A version-2 table from before the batch was
recorded has batch 1 (the only one there was). A table of an older format version is
re-measured (the old file kept beside it), with a logged warning naming the file. The file
keeps the raw per-op medians (``table``) and the whole-network calibration (``calibration``,
:mod:`.calibration`).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..arch import SearchSpace
from ..errors import LatencyTableError
from ..utils import write_json
from .calibration import calibrate_table, default_calibration_archs
from .malloc import apply_malloc_tuning
from .measure import layer_shapes, measure_latency_table, timed_inputs
from .progress import Progress
from .timing import device_signature

__all__ = ["LATENCY_FORMAT", "LATENCY_VERSION", "FOREIGN_KEY", "LatencyTable",
           "searchable_shapes", "read_latency_table", "measure_table", "get_latency_table",
           "latency_table", "describe_device"]

logger = logging.getLogger(__name__)

LATENCY_FORMAT = "fna_d2.latency_table"
#: 1: raw per-op table. 2: + allocator setting in the device key, whole-network calibration
#: (and, later, the batch in the device key; a version-2 table without it has batch 1).
LATENCY_VERSION = 2
#: the config key that accepts a table measured on another device
FOREIGN_KEY = "MODEL.FNA.SEARCH.LATENCY_TABLE_FOREIGN"


def searchable_shapes(space: SearchSpace, input_size: Sequence[int]) -> List[Dict[str, Any]]:
    """The ``layers`` record of a table file: :func:`~.measure.layer_shapes` of the searchable
    layers."""
    return [r for r in layer_shapes(space, input_size) if len(r["candidates"]) > 1]


@dataclass
class LatencyTable:
    """A latency table with its calibration: ``raw[l][c]`` (ms, op ``c`` of searchable layer
    ``l`` timed alone), ``fixed_ms`` (stem + single-candidate layers), ``scale`` (median of
    measured / predicted over the calibration networks) and the file's ``calibration`` and
    ``device`` records, input size, per-layer shapes (``layers``) and repeats."""

    raw: List[List[float]]
    scale: float
    fixed_ms: float
    device: Dict[str, Any]
    calibration: Dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None
    input_size: List[int] = field(default_factory=list)
    layers: List[Dict[str, Any]] = field(default_factory=list)
    repeats: Optional[int] = None

    @property
    def batch(self) -> int:
        """The batch the ops were timed at (1 for tables from before it was recorded)."""
        return int(self.device.get("batch", 1))

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


def describe_device(device: Dict[str, Any]) -> str:
    """A device record in words: ``cpu 'Intel(R) Xeon(R) ...', batch 1, 1 thread(s), torch
    2.14.1``."""
    parts = [f"{device.get('type', '?')} {device.get('name', '?')!r}",
             f"batch {device.get('batch', 1)}"]
    if "threads" in device:
        parts.append(f"{device['threads']} thread(s)")
    parts.append(f"torch {device.get('torch', '?')}")
    if device.get("cuda"):
        parts.append(f"CUDA {device['cuda']}")
    return ", ".join(parts)


def _differences(a: Dict[str, Any], b: Dict[str, Any]) -> str:
    keys = sorted(set(a) | set(b))
    return "; ".join(f"{k}: table {a.get(k)!r}, now {b.get(k)!r}" for k in keys
                     if a.get(k) != b.get(k))


def _read_json(path: str) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise LatencyTableError(f"{path}: cannot read latency table ({e})") from None


def _from_doc(doc: Any, path: str) -> LatencyTable:
    """A well-formed current-version table document as a :class:`LatencyTable`."""
    if not isinstance(doc, dict) or doc.get("format") != LATENCY_FORMAT:
        raise LatencyTableError(f"{path}: not a latency table ({LATENCY_FORMAT!r} file)")
    if doc.get("version") != LATENCY_VERSION:
        raise LatencyTableError(f"{path}: latency table format version {doc.get('version')!r};"
                                f" this fna_d2 reads version {LATENCY_VERSION}")
    table, layers, device = doc.get("table"), doc.get("layers"), doc.get("device")
    if (not isinstance(table, list) or not isinstance(layers, list) or len(table) != len(layers)
            or not all(isinstance(t, list) and isinstance(r, dict) and "candidates" in r
                       and len(t) == len(r["candidates"]) for t, r in zip(table, layers))):
        raise LatencyTableError(f"{path}: malformed table (rows do not match the layers)")
    if not isinstance(device, dict):
        raise LatencyTableError(f"{path}: malformed table (no device record)")
    cal = doc.get("calibration")
    try:
        scale, fixed = float(cal["scale"]), float(cal["fixed_ms"])
        raw = [[float(v) for v in t] for t in table]
    except (TypeError, KeyError, ValueError):
        raise LatencyTableError(f"{path}: malformed calibration record or table "
                                f"entries") from None
    if not (scale > 0 and math.isfinite(scale) and fixed >= 0):
        raise LatencyTableError(f"{path}: invalid calibration (scale {scale}, fixed {fixed} ms)")
    device = dict(device)
    device.setdefault("batch", 1)  # version-2 tables from before the batch was recorded
    repeats = doc.get("repeats")
    return LatencyTable(raw, scale, fixed, device, dict(cal), path,
                        [int(v) for v in doc.get("input_size") or []], list(layers),
                        int(repeats) if isinstance(repeats, int) else None)


def read_latency_table(path: str) -> LatencyTable:
    """The table file ``path`` (current format version, well formed), whatever device or
    shapes it is for: :class:`~fna_d2.errors.LatencyTableError` otherwise."""
    if not os.path.isfile(path):
        raise LatencyTableError(f"{path}: no such latency table file")
    return _from_doc(_read_json(path), path)


def _check_device(lt: LatencyTable, device: Dict[str, Any]) -> None:
    if lt.device != device:
        raise LatencyTableError(
            f"{lt.path}: this latency table was measured on {lt.device}, but the current "
            f"device is {device} (differs in {_differences(lt.device, device)}). Latency tables "
            f"are only valid on the device, batch (MODEL.FNA.SEARCH.LATENCY_BATCH), torch "
            f"version, thread count and allocator setting (MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC)"
            f" they were measured with: delete the file or set MODEL.FNA.SEARCH.LATENCY_TABLE to "
            f"a new path to measure this device; or, if it was built on purpose on the device "
            f"the network will run on, set {FOREIGN_KEY} True to use it as it is.")


def _check_shapes(lt: LatencyTable, layers: List[Dict[str, Any]],
                  input_size: Sequence[int]) -> None:
    if lt.layers != layers or lt.input_size != list(input_size):
        raise LatencyTableError(
            f"{lt.path}: this latency table is for another search space or input size "
            f"(table: input {lt.input_size}, {len(lt.layers)} searchable layers; wanted: input "
            f"{list(input_size)}, {len(layers)} searchable layers, or the per-layer "
            f"shapes/candidates differ). Delete it or set MODEL.FNA.SEARCH.LATENCY_TABLE to "
            f"another path; a table from another device must be built for the same "
            f"MODEL.FNA.SEARCH_SPACE / SEARCH_DEPTHS / SEED / OUTPUT_STRIDE and "
            f"MODEL.FNA.SEARCH.COST_INPUT_SIZE (python -m fna_d2.latency build --help).")


def _tunes(tune_malloc: bool, device: str) -> bool:
    """Whether to tune the C allocator: only for CPU timing (a CUDA table does not depend on
    it, and a GPU training process is better left as it is)."""
    return bool(tune_malloc) and torch.device(device).type == "cpu"


def measure_table(space: SearchSpace, input_size: Sequence[int], path: Optional[str] = None,
                  repeats: int = 10, device: str = "cpu", threads: Optional[int] = None,
                  tune_malloc: bool = True, *, batch: int = 1,
                  progress: Optional[Progress] = None) -> LatencyTable:
    """Measure the raw table of ``space`` at ``input_size`` on ``batch`` inputs and its
    calibration (:func:`calibrate_table`) on this device, no caching; with ``path``, write the
    table file atomically (replacing one that is there). ``space``: as built (output-stride
    dilations applied)."""
    input_size = [int(v) for v in input_size]
    tune_malloc = _tunes(tune_malloc, device)
    apply_malloc_tuning(tune_malloc)
    dev = device_signature(device, threads, batch)
    layers = searchable_shapes(space, input_size)
    if progress is not None:
        shapes = timed_inputs(space, input_size, batch)
        zeros = [[0.0] * len(r["candidates"]) for r in layers]
        total = (sum(len(r["candidates"]) for r in layers) + len(shapes["fixed"])
                 + len(default_calibration_archs(space, zeros)))
        progress.start(total, f"{len(layers)} searchable layers at {input_size[0]}x"
                              f"{input_size[1]}, {describe_device(dev)}, {repeats} repeats")
    raw = measure_latency_table(space, input_size, repeats, device, threads, tune_malloc,
                                batch=batch, progress=progress)
    cal = calibrate_table(space, input_size, raw, repeats, device, threads, batch=batch,
                          progress=progress)
    logger.info(f"latency: table of {len(raw)} searchable layers measured at "
                f"{input_size[0]}x{input_size[1]} ({describe_device(dev)}); whole-network "
                f"calibration scale {cal['scale']:.3f} (median of {len(cal['archs'])} networks)")
    if path:
        doc = {"format": LATENCY_FORMAT, "version": LATENCY_VERSION, "device": dev,
               "input_size": input_size, "repeats": int(repeats), "unit": "ms",
               "layers": layers, "table": raw, "table_is": "raw per-op medians (uncalibrated)",
               "calibration": cal}
        write_json(path, doc, indent=1)
    return LatencyTable(raw, float(cal["scale"]), float(cal["fixed_ms"]), dev, cal, path,
                        input_size, layers, int(repeats))


def _foreign_table(path: Optional[str], layers: List[Dict[str, Any]],
                   input_size: List[int], device: str, threads: Optional[int],
                   batch: int) -> LatencyTable:
    if not path or not os.path.isfile(path):
        raise LatencyTableError(
            f"{FOREIGN_KEY} is True, but MODEL.FNA.SEARCH.LATENCY_TABLE {path!r} is not a file: "
            f"a table from another device is not measured here; build it on that device with "
            f"python -m fna_d2.latency build ... --out table.json and point "
            f"MODEL.FNA.SEARCH.LATENCY_TABLE at it")
    doc = _read_json(path)
    if isinstance(doc, dict) and doc.get("format") == LATENCY_FORMAT \
            and isinstance(doc.get("version"), int) and doc["version"] < LATENCY_VERSION:
        raise LatencyTableError(
            f"{path}: a version-{doc['version']} latency table, which this fna_d2 would "
            f"re-measure; a table from another device ({FOREIGN_KEY}) cannot be re-measured "
            f"here: rebuild it on its device with python -m fna_d2.latency build")
    lt = _from_doc(doc, path)
    _check_shapes(lt, layers, input_size)
    try:
        here = device_signature(device, threads, batch)
        how = "the same as this machine's" if lt.device == here else \
            f"this machine would measure {describe_device(here)}"
    except (RuntimeError, AssertionError):  # e.g. device "cuda" on a machine without CUDA
        how = f"{device!r} cannot be measured on this machine"
    logger.info(f"latency: using the table {path} measured on {describe_device(lt.device)} "
                f"({FOREIGN_KEY}; {how})")
    if lt.batch != batch:
        logger.warning(f"latency: {path} was timed at batch {lt.batch}; "
                       f"MODEL.FNA.SEARCH.LATENCY_BATCH {batch} does not apply to a table from "
                       f"another device")
    return lt


def get_latency_table(space: SearchSpace, input_size: Sequence[int], path: Optional[str] = None,
                      repeats: int = 10, device: str = "cpu", threads: Optional[int] = None,
                      tune_malloc: bool = True, *, batch: int = 1, foreign: bool = False,
                      progress: Optional[Progress] = None) -> LatencyTable:
    """The :class:`LatencyTable` of ``space`` at ``input_size`` on this device at ``batch``.

    ``tune_malloc``: :func:`apply_malloc_tuning` first (CPU only: the allocator setting is part
    of a CPU table's device key). With ``path``: reuse the cached table if it matches this
    device and these shapes (raise :class:`LatencyTableError` if it exists but does not; re-measure, with a
    warning naming the file, if it is of an older format version), else measure it
    (:func:`measure_table`) and write it atomically. ``foreign=True``: ``path`` must be a table
    (from any device, at any batch), used as it is if its shapes match; nothing is measured.
    ``space`` must be the space as built (output-stride dilations applied)."""
    input_size = [int(v) for v in input_size]
    layers = searchable_shapes(space, input_size)
    if foreign:
        return _foreign_table(path, layers, input_size, device, threads, batch)
    tune_malloc = _tunes(tune_malloc, device)
    status = apply_malloc_tuning(tune_malloc)
    if not tune_malloc and status["tuned"]:
        logger.warning(f"latency: tune_malloc=False, but {status['reason']}; the table is "
                       f"measured (and keyed) with the tuned allocator")
    if path and os.path.isfile(path):
        doc = _read_json(path)
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
            lt = _from_doc(doc, path)
            _check_device(lt, device_signature(device, threads, batch))
            _check_shapes(lt, layers, input_size)
            return lt
    return measure_table(space, input_size, path, repeats, device, threads, tune_malloc,
                         batch=batch, progress=progress)


def latency_table(space: SearchSpace, input_size: Sequence[int], path: Optional[str] = None,
                  repeats: int = 10, device: str = "cpu", threads: Optional[int] = None,
                  tune_malloc: bool = True, calibrated: bool = True, *, batch: int = 1,
                  foreign: bool = False, progress: Optional[Progress] = None
                  ) -> List[List[float]]:
    """Per searchable layer, per candidate: latency (ms) at ``input_size`` (on this device at
    ``batch``, or from a ``foreign`` table), times the table's whole-network calibration scale
    (``calibrated=False``: the raw entries). See :func:`get_latency_table`."""
    return get_latency_table(space, input_size, path, repeats, device, threads, tune_malloc,
                             batch=batch, foreign=foreign, progress=progress
                             ).entries(calibrated)
