"""Timing on a device: which devices latency can be measured on (:func:`latency_device`), what a
latency table is valid for (:func:`device_signature`), the clock (:func:`time_module`: eval
mode, ``torch.no_grad``, warm-up runs, then the median of ``repeats`` timed runs, in
milliseconds) and the torch thread count while timing (:func:`num_threads`).

The clock depends on the device (:func:`timer_for`): on the CPU :func:`cpu_times` reads
``time.perf_counter`` around each run; on CUDA, where kernels run asynchronously,
:func:`cuda_times` uses ``torch.utils.benchmark.Timer``, which synchronises the device before
it reads the clock, so a run's time includes its kernels and not only their launch. Latency on
the CPU depends on the thread count (for numbers close to single-core mobile inference use
``threads=1``); on CUDA the thread count is not part of the key."""
from __future__ import annotations

import platform
import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import torch
from torch import nn

from ..errors import ConfigError
from .malloc import apply_malloc_tuning, malloc_signature

__all__ = ["LATENCY_DEVICE_TYPES", "latency_device", "device_signature", "num_threads",
           "cpu_times", "cuda_times", "timer_for", "time_module"]

#: device types a latency table can be measured on
LATENCY_DEVICE_TYPES = ("cpu", "cuda")

DeviceLike = Union[str, torch.device]
#: ``times(fn, repeats, warmup, device) -> [ms, ...]``: one entry per timed run of ``fn()``
Timer = Callable[[Callable[[], Any], int, int, torch.device], List[float]]


def latency_device(device: DeviceLike, where: str = "latency device") -> torch.device:
    """``device`` as a ``torch.device`` latency can be measured on here: ``cpu``, ``cuda`` or
    ``cuda:N`` with CUDA available and ``N`` a device of this machine. Otherwise a
    :class:`~fna_d2.errors.ConfigError` whose message starts with ``where`` (a config key or
    a command-line option)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{where}: {device!r} is not a device; use one of "
                          f"{', '.join(LATENCY_DEVICE_TYPES)} (or cuda:N)") from None
    if dev.type not in LATENCY_DEVICE_TYPES:
        raise ConfigError(f"{where}: latency cannot be measured on {dev.type!r}; use one of "
                          f"{', '.join(LATENCY_DEVICE_TYPES)} (or cuda:N)")
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise ConfigError(f"{where}: {str(device)!r}: the CPU has no device index; use 'cpu'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: {str(device)!r} asks for CUDA, but CUDA is not "
                              f"available here (torch {torch.__version__}, "
                              f"{torch.cuda.device_count()} CUDA devices); measure on 'cpu', or "
                              f"build the table on the GPU machine (python -m fna_d2.latency "
                              f"build --device cuda) and use it there")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{where}: {str(device)!r}: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_signature(device: DeviceLike = "cpu", threads: Optional[int] = None,
                     batch: int = 1) -> Dict[str, Any]:
    """What a latency table is only valid for: device type and name, torch, the batch the ops
    were timed at and, on the CPU, the thread count and the C allocator setting
    (:func:`~.malloc.malloc_signature`), on CUDA the CUDA version torch was built with."""
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev.index if dev.index is not None else None)
    else:
        name = _cpu_name()
    sig: Dict[str, Any] = {"type": dev.type, "name": name,
                           "torch": torch.__version__.split("+")[0], "batch": int(batch)}
    if dev.type == "cpu":
        sig["threads"] = int(threads if threads is not None else torch.get_num_threads())
        sig["malloc"] = malloc_signature()
    elif dev.type == "cuda":
        sig["cuda"] = torch.version.cuda
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


def cpu_times(fn: Callable[[], Any], repeats: int, warmup: int,
              device: Optional[torch.device] = None) -> List[float]:
    """Wall time (ms, ``time.perf_counter``) of each of ``repeats`` runs of ``fn()`` after
    ``warmup`` untimed runs. For work that is done when ``fn`` returns (the CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def cuda_times(fn: Callable[[], Any], repeats: int, warmup: int,
               device: Optional[torch.device] = None) -> List[float]:
    """Time (ms) of each of ``repeats`` runs of ``fn()`` after ``warmup`` untimed runs, by
    ``torch.utils.benchmark.Timer``: it synchronises the accelerator before reading the clock,
    so asynchronous CUDA kernels are waited for (``device`` is made the current device while
    timing). Each timed run is one ``Timer.timeit(1)``, which runs ``fn`` twice untimed first."""
    from torch.utils.benchmark import Timer as BenchmarkTimer

    ctx = (torch.cuda.device(device) if device is not None and device.type == "cuda"
           else _no_context())
    with ctx:
        for _ in range(warmup):
            fn()
        timer = BenchmarkTimer(stmt="fn()", globals={"fn": fn},
                               num_threads=torch.get_num_threads())
        return [float(timer.timeit(1).median) * 1e3 for _ in range(repeats)]


@contextmanager
def _no_context() -> Iterator[None]:
    yield


def timer_for(device: DeviceLike) -> Timer:
    """The clock of ``device``: :func:`cuda_times` (synchronising) for CUDA, :func:`cpu_times`
    for the CPU."""
    return cuda_times if torch.device(device).type == "cuda" else cpu_times


def time_module(module: nn.Module, x: torch.Tensor, repeats: int = 10,
                warmup: int = 3, tune_malloc: bool = False) -> float:
    """Median time (ms) of ``module(x)`` over ``repeats`` runs after ``warmup`` runs, by the
    clock of ``x``'s device (:func:`timer_for`). ``tune_malloc``: first apply
    :func:`~.malloc.apply_malloc_tuning` (process-wide)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if tune_malloc:
        apply_malloc_tuning(True)
    module.eval()
    with torch.no_grad():
        times = timer_for(x.device)(lambda: module(x), repeats, warmup, x.device)
    return float(statistics.median(times))
