"""The C allocator setting latency is measured with, and glibc malloc tuning.

With glibc's default (dynamic) mmap threshold, the multi-MB activation buffers of batch-1 CNN
inference are returned to the kernel when freed and page-faulted in again on every forward
pass of a whole network, while an op timed alone and repeatedly reuses its buffers; the
resulting error is architecture-dependent (docs/benchmarks.md, section 3).
:func:`apply_malloc_tuning` fixes glibc's mmap and trim thresholds at 1 GiB (``mallopt``),
process-wide and irreversibly, as arena/caching allocators of deployment runtimes behave; it is
a logged no-op on other C libraries. Table measurement applies it by default
(``tune_malloc=True``, ``MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC``); :func:`~.timing.time_module`
only with ``tune_malloc=True``.

The process's state is one :class:`MallocTuning` object, :data:`ALLOCATOR`;
:func:`apply_malloc_tuning` and :func:`malloc_signature` act on it.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
from typing import Any, Callable, Dict, Optional

__all__ = ["MALLOC_THRESHOLD", "MallocTuning", "ALLOCATOR", "find_glibc", "malloc_signature",
           "apply_malloc_tuning"]

logger = logging.getLogger(__name__)

#: glibc mmap / trim threshold set by :func:`apply_malloc_tuning` (bytes)
MALLOC_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (glibc malloc.h)
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def find_glibc() -> Optional[ctypes.CDLL]:
    """The process's C library if it is glibc (has ``gnu_get_libc_version`` and ``mallopt``)."""
    try:
        lib = ctypes.CDLL(None)
    except (OSError, TypeError):  # e.g. Windows: no global symbol namespace
        return None
    if not (hasattr(lib, "gnu_get_libc_version") and hasattr(lib, "mallopt")):
        return None
    return lib


class MallocTuning:
    """The C allocator setting of a process as latency measurement sees and changes it.

    ``find_libc()`` returns the C library if it is glibc, else None (default
    :func:`find_glibc`). ``status`` is None until :meth:`apply` changed (or failed to change)
    the allocator, then the record :meth:`apply` returns."""

    def __init__(self, find_libc: Callable[[], Optional[ctypes.CDLL]] = find_glibc) -> None:
        self.find_libc = find_libc
        self.status: Optional[Dict[str, Any]] = None

    def signature(self) -> str:
        """The allocator setting, as recorded in a CPU latency table's device key."""
        if self.status is not None:
            return str(self.status["signature"])
        if self.find_libc() is None:
            return f"not glibc ({platform.system() or 'unknown'})"
        env = [f"{k}={os.environ[k]}" for k in _MALLOC_ENV if os.environ.get(k)]
        tun = os.environ.get("GLIBC_TUNABLES", "")
        if "malloc" in tun:
            env.append(f"GLIBC_TUNABLES={tun}")
        return "glibc, " + (("environment " + " ".join(env)) if env else "dynamic thresholds")

    def apply(self, enabled: bool = True) -> Dict[str, Any]:
        """See :func:`apply_malloc_tuning`."""
        if self.status is not None:
            st = dict(self.status, requested=bool(enabled))
            if not enabled and st["tuned"]:
                st["reason"] = ("not requested, but this process was tuned earlier and glibc "
                                "cannot restore its dynamic thresholds: the setting stays")
            return st
        if not enabled:
            return {"requested": False, "tuned": False, "signature": self.signature(),
                    "reason": "not requested: the C allocator is left as it is"}
        lib = self.find_libc()
        if lib is None:
            st = {"requested": True, "tuned": False, "signature": self.signature(),
                  "reason": f"the C library is not glibc ({platform.system() or 'unknown'}): "
                            "mallopt thresholds do not apply; latencies are measured with the "
                            "platform's allocator"}
            logger.info(f"latency: allocator tuning skipped: {st['reason']}")
            return st
        ok_mmap = lib.mallopt(_M_MMAP_THRESHOLD, MALLOC_THRESHOLD) == 1
        ok_trim = lib.mallopt(_M_TRIM_THRESHOLD, MALLOC_THRESHOLD) == 1
        if ok_mmap and ok_trim:
            self.status = {"tuned": True, "mmap_threshold": MALLOC_THRESHOLD,
                           "trim_threshold": MALLOC_THRESHOLD,
                           "signature": f"glibc, mmap/trim thresholds {MALLOC_THRESHOLD}",
                           "reason": "glibc mallopt applied"}
            logger.info(f"latency: glibc malloc mmap/trim thresholds fixed at "
                        f"{MALLOC_THRESHOLD} bytes for this process (activation buffers are "
                        f"reused, not page-faulted in again on every forward pass)")
        else:
            self.status = {"tuned": False,
                           "signature": f"glibc, mallopt failed (mmap {ok_mmap}, trim {ok_trim})",
                           "reason": f"glibc mallopt refused the thresholds (mmap ok: {ok_mmap}, "
                                     f"trim ok: {ok_trim})"}
            logger.warning(f"latency: {self.status['reason']}")
        return dict(self.status, requested=True)


#: this process's allocator (:func:`apply_malloc_tuning` and :func:`malloc_signature` use it)
ALLOCATOR = MallocTuning()


def malloc_signature() -> str:
    """This process's C allocator setting, as recorded in a CPU latency table's device key."""
    return ALLOCATOR.signature()


def apply_malloc_tuning(enabled: bool = True) -> Dict[str, Any]:
    """Fix glibc malloc's mmap and trim thresholds at :data:`MALLOC_THRESHOLD` (``mallopt``),
    so freed activation buffers stay in the heap instead of being unmapped and page-faulted
    back in on the next forward pass. Process-wide and irreversible (glibc cannot restore its
    dynamic thresholds); idempotent. ``enabled=False`` changes nothing. On a C library other
    than glibc it is a no-op with a logged reason.

    Returns the status: ``requested``, ``tuned`` (the process's allocator is tuned now),
    ``signature`` (:func:`malloc_signature`) and ``reason``."""
    return ALLOCATOR.apply(enabled)
