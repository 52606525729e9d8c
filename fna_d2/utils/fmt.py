"""Numbers and durations as people read them in reports and tables."""
from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ["fmt_number", "fmt_seconds"]


def fmt_number(v: Any, digits: int = 2, missing: str = "n/a") -> str:
    """``v`` with ``digits`` decimals; ``missing`` for None and NaN; non-floats as ``str``."""
    if v is None:
        return missing
    if isinstance(v, float):
        return missing if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def fmt_seconds(s: Optional[float], missing: str = "-") -> str:
    """``3725.2 -> "1 h 02 min"``, ``75 -> "1 min 15 s"``, ``None -> missing``."""
    if s is None:
        return missing
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"
