"""Timing on this device: what a latency table is valid for (:func:`device_signature`), the
clock (:func:`time_module`: eval mode, ``torch.no_grad``, warm-up runs, then the median of
``repeats`` timed runs, in milliseconds) and the torch thread count while timing
(:func:`num_threads`). Latency depends on the thread count: for numbers close to single-core
mobile inference use ``threads=1``."""
from __future__ import annotations

import platform
import statistics
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

import torch
from torch import nn

from .malloc import apply_malloc_tuning, malloc_signature

__all__ = ["device_signature", "num_threads", "time_module"]


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
    CPU, the C allocator setting (:func:`~.malloc.malloc_signature`)."""
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


@contextmanager
def num_threads(threads: Optional[int]) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (None: as they are), then restore them."""
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
    ``tune_malloc``: first apply :func:`~.malloc.apply_malloc_tuning` (process-wide)."""
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
