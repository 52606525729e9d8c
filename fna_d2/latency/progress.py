"""Progress of a table measurement: a table times every candidate of every searchable layer,
the fixed part and a few whole networks, ``repeats`` times each, which takes minutes at the
paper's input sizes. :class:`Progress` counts the timed modules and writes a line with the
elapsed time and an estimate of the time left (the mean time per module so far times the
modules left) at most every ``every_s`` seconds, and always for the first and the last."""
from __future__ import annotations

import time
from typing import Callable, Optional

from ..utils import fmt_seconds

__all__ = ["Progress"]


class Progress:
    """``write(line)`` (e.g. a print to stderr or ``logger.info``) is given a line such as
    ``latency: 37/130 timed (stage 3 layer 1 k5_e6), 12.0 s elapsed, ~31.2 s left``.
    :meth:`start` sets the total; :meth:`step` counts one timed module."""

    def __init__(self, write: Callable[[str], None], every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.every_s, self.clock = write, float(every_s), clock
        self.total, self.done = 0, 0
        self.t0: Optional[float] = None
        self.last: Optional[float] = None

    def start(self, total: int, what: str = "") -> None:
        self.total, self.done = int(total), 0
        self.t0 = self.last = self.clock()
        self.write(f"latency: timing {self.total} modules{f' ({what})' if what else ''}")

    def step(self, what: str = "") -> None:
        if self.t0 is None:
            self.start(0)
        self.done += 1
        now = self.clock()
        final = self.done >= self.total
        if not (final or self.done == 1 or now - self.last >= self.every_s):
            return
        self.last = now
        elapsed = now - self.t0
        left = max(self.total - self.done, 0) * elapsed / self.done
        total = f"/{self.total}" if self.total else ""
        label = f" ({what})" if what else ""
        self.write(f"latency: {self.done}{total} timed{label}, {fmt_seconds(elapsed)} elapsed"
                   + ("" if final else f", ~{fmt_seconds(left)} left"))
