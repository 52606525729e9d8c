"""Shared helpers of the fna_d2 benchmarks (not a test module; nothing here is imported by
fna_d2 itself): paths, machine description, the allocator switch, result files and their
verdicts (``checks``), statistics, the command line, configs and subprocesses, figures.

Every benchmark script writes ``<results dir>/<name>.json``::

    {"name": ..., "date": ISO time, "machine": {...}, "quick": bool, "wall_time_s": ...,
     "settings": {...}, "figures": {...}, "targets": {...}, "checks": [...], "notes": [...]}

``checks`` are the benchmark's verdicts (:func:`check`), computed by the script that measured
the figures (its ``checks(doc)`` function, which ``bench/recheck.py`` re-applies to stored
results); ``bench/make_doc.py`` only formats them.

``<results dir>`` is ``bench/results`` (or ``bench/results/quick`` with ``--quick``, so a smoke
run never overwrites the figures of a full run). Figures go to ``docs/img`` (full) or
``bench/results/quick/img`` (quick).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch

from fna_d2.config import get_fna_cfg
from fna_d2.latency import apply_malloc_tuning, device_signature
from fna_d2.utils import pyplot, read_json, save_figure, write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
RESULTS = os.path.join(BENCH, "results")
QUICK_RESULTS = os.path.join(RESULTS, "quick")
DOC_IMG = os.path.join(REPO, "docs", "img")
OUT = os.path.join(REPO, "output", "bench")  # scratch outputs (git-ignored)


def results_dir(quick: bool) -> str:
    return QUICK_RESULTS if quick else RESULTS


def img_dir(quick: bool) -> str:
    return os.path.join(QUICK_RESULTS, "img") if quick else DOC_IMG


def scratch(*parts: str, quick: bool = False) -> str:
    d = os.path.join(OUT, "quick" if quick else "full", *parts)
    os.makedirs(d, exist_ok=True)
    return d


# ----------------------------------------------------------------------------- machine
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except Exception:  # noqa: BLE001
        return "unknown"


def machine_info(threads: Optional[int] = None) -> Dict[str, Any]:
    """CPU model, cores, memory, torch version and thread count, load, date."""
    mem_gb = None
    try:
        with open("/proc/meminfo", "r", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gb = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    info = {
        "cpu": device_signature("cpu")["name"],  # the CPU name latency tables are keyed by
        "logical_cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "torch": torch.__version__,
        "torch_threads": int(threads if threads is not None else torch.get_num_threads()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "git": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return info


# ----------------------------------------------------------------------------- allocator
def apply_malloc(mode: str) -> Dict[str, Any]:
    """``"default"``: leave the C allocator alone. ``"tuned"``: fix glibc malloc's mmap and trim
    thresholds at 1 GiB with the library's helper (:func:`fna_d2.latency.apply_malloc_tuning`,
    = ``MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC``), so freed activation buffers stay in the heap
    instead of being unmapped and page-faulted back in on the next forward pass. Process-wide
    and irreversible; a no-op with a reason on other C libraries. Returns the mode and the
    helper's status (``tuned``, ``signature``, ``reason``)."""
    if mode not in ("default", "tuned"):
        raise ValueError(f"malloc mode must be 'default' or 'tuned', got {mode!r}")
    st = apply_malloc_tuning(mode == "tuned")
    info: Dict[str, Any] = {"mode": mode}
    info.update(st)
    if mode == "tuned":
        info["mallopt_ok"] = bool(st["tuned"])
    return info


def add_malloc_option(ap: argparse.ArgumentParser, name: str) -> None:
    """``--malloc default|tuned`` (see :func:`apply_malloc`) for the benchmark ``name``."""
    ap.add_argument("--malloc", choices=("default", "tuned"), default="default",
                    help="glibc malloc as is, or with fixed mmap/trim thresholds (results go to "
                         f"{malloc_result_name(name, 'tuned')}.json)")


def malloc_result_name(name: str, mode: str) -> str:
    """The result name of benchmark ``name`` run with ``--malloc mode``."""
    return name if mode == "default" else f"{name}_tuned_malloc"


def minor_faults() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


# ----------------------------------------------------------------------------- results
def clean_json(obj: Any) -> Any:
    """``obj`` with tensors/NumPy scalars as Python numbers, tuples as lists, NaN/inf as None."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except Exception:  # noqa: BLE001
            pass
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    return obj


def result_path(name: str, quick: bool) -> str:
    """``<results dir>/<name>.json``."""
    return os.path.join(results_dir(quick), f"{name}.json")


def write_result(name: str, quick: bool, doc: Dict[str, Any]) -> str:
    """Write ``doc`` (plus name/date/quick) as ``<results dir>/<name>.json``; returns the path."""
    full = {"name": name, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick}
    full.update(doc)
    path = write_json(result_path(name, quick), clean_json(full), indent=1)
    print(f"[bench] wrote {os.path.relpath(path, REPO)}")
    return path


def read_result(name: str, quick: bool) -> Optional[Dict[str, Any]]:
    """The stored result ``name`` (None if missing or unreadable)."""
    return read_json(result_path(name, quick))


# ----------------------------------------------------------------------------- verdicts
def check(name: str, value: Any, target: Optional[str] = None, met: Optional[bool] = None,
          text: Optional[str] = None) -> Dict[str, Any]:
    """One verdict of a benchmark: what was checked (``name``), the measured ``value``, the
    ``target`` as people read it (None: no target), whether it was ``met`` (None: not a
    pass/fail check) and the verdict in words (``text``)."""
    return {"name": name, "value": value, "target": target,
            "met": None if met is None else bool(met), "text": text}


def checks_by_name(res: Optional[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """``{name: check}`` of a stored result (empty for None or a result without checks)."""
    return {c["name"]: c for c in (res or {}).get("checks") or []}


# ----------------------------------------------------------------------------- statistics
def median(v: Sequence[float]) -> float:
    return float(statistics.median(v)) if v else float("nan")


def quartiles(v: Sequence[float]) -> List[float]:
    """[q1, q3] (inclusive method); [x, x] for a single value."""
    if not v:
        return [float("nan")] * 2
    if len(v) == 1:
        return [float(v[0])] * 2
    q = statistics.quantiles(v, n=4, method="inclusive")
    return [float(q[0]), float(q[2])]


def summary(v: Sequence[float]) -> Dict[str, Any]:
    return {"median": median(v), "iqr": quartiles(v), "n": len(v),
            "samples": [round(float(x), 6) for x in v]}


# ----------------------------------------------------------------------------- command line
def arg_parser(doc: str, quick_help: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser every bench script starts with: the first paragraph of its ``doc`` as the
    description, and ``--quick`` (help ``quick_help``)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    return ap


# ----------------------------------------------------------------------------- configs / runs
def demo_cfg(config: str, opts: Iterable[Any] = ()) -> Any:
    """``get_fna_cfg(REPO/config, opts)`` (importing fna_d2 registered the demo datasets)."""
    return get_fna_cfg(os.path.join(REPO, config), [str(o) for o in opts])


def quiet_logs() -> None:
    for n in ("detectron2", "fna_d2", "d2", "fvcore"):
        logging.getLogger(n).setLevel(logging.WARNING)


def run_python(args: Sequence[str], log_path: Optional[str] = None, timeout: Optional[float] = None,
               env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run ``sys.executable args`` from the repo root, output to ``log_path`` (or captured)."""
    e = dict(os.environ)
    e.setdefault("PYTHONUNBUFFERED", "1")
    if env:
        e.update(env)
    cmd = [sys.executable] + list(args)
    if log_path:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "w", encoding="utf-8") as log:
            return subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  env=e, timeout=timeout)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=e, timeout=timeout)


def last_json_line(text: str) -> Dict[str, Any]:
    """The last line of ``text`` that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise ValueError("no JSON line in the output:\n" + text[-2000:])


def save_fig(fig, path: str, dpi: int = 80) -> str:
    """Save a small PNG (keep docs/img files well under 200 KB): atomically with
    :func:`fna_d2.utils.save_figure`, once more at a lower resolution if it came out too big."""
    save_figure(fig, path, dpi=dpi, close=False)
    if os.path.getsize(path) > 200_000:
        save_figure(fig, path, dpi=max(40, dpi * 2 // 3), close=False)
    print(f"[bench] wrote {os.path.relpath(path, REPO)} ({os.path.getsize(path) // 1024} KB)")
    return path


def finish_fig(fig, path: str) -> str:
    """``tight_layout``, :func:`save_fig` to ``path`` and close ``fig``; returns the path."""
    fig.tight_layout()
    out = save_fig(fig, path)
    pyplot().close(fig)
    return out
