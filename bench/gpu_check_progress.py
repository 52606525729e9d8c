"""Progress of ``bench/gpu_check.py`` on stderr: what runs, its step times, the elapsed time
and an ETA extrapolated from the build and step times so far."""
from __future__ import annotations

import statistics
import sys
import time
from typing import List

from fna_d2.utils import fmt_seconds

__all__ = ["Progress"]


class Progress:
    """Progress with an ETA on stderr: build time and step time so far, extrapolated."""

    def __init__(self, builds: int, steps: int) -> None:
        self.builds_left, self.steps_left = builds, steps
        self.build_s: List[float] = []
        self.step_s: List[float] = []
        self.t0 = time.perf_counter()

    def eta(self) -> str:
        if not self.build_s or not self.step_s:
            return "?"
        s = (self.builds_left * statistics.mean(self.build_s)
             + self.steps_left * statistics.mean(self.step_s))
        return fmt_seconds(s)

    def built(self, label: str, s: float) -> None:
        self.builds_left -= 1
        self.build_s.append(s)
        self._say(f"{label}: built in {s:.1f} s")

    def skipped(self, label: str, steps: int, why: str) -> None:
        self.builds_left, self.steps_left = self.builds_left - 1, self.steps_left - steps
        self._say(f"{label}: skipped ({why})")

    def step(self, label: str, phase: str, i: int, n: int, s: float) -> None:
        self.steps_left -= 1
        self.step_s.append(s)
        self._say(f"{label}: {phase} {i}/{n} {s:.3f} s")

    def drop(self, steps: int) -> None:
        """``steps`` planned steps will not run (their run failed)."""
        self.steps_left -= steps

    def _say(self, what: str) -> None:
        el = time.perf_counter() - self.t0
        print(f"[gpu_check] {el:6.0f} s  {what}  (ETA {self.eta()})", file=sys.stderr, flush=True)
