"""Section 5 of ``docs/benchmarks.md``: the end-to-end demo pipeline
(``bench/bench_pipeline.py``)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .fmt import checks_by_name, f, img

__all__ = ["section", "summary"]


def section(r: Optional[Dict[str, Any]], doc: str) -> List[str]:
    out = ["## 5. End-to-end demo pipeline (`bench/bench_pipeline.py`)", ""]
    if not r:
        return out + ["Not run.", ""]
    g = r.get("figures")
    for note in r.get("notes", []):
        out.append(f"Note: {note}.")
    out.append("")
    if not g:
        return out
    out += ["| stage | status | wall time (min) | started | finished |", "|---|---|---|---|---|"]
    for s, v in g["stages"].items():
        out.append(f"| {s} | {v['status']} | {float(v['wall_time_s'] or 0) / 60:.1f} | "
                   f"{v.get('started') or ''} | {v.get('finished') or ''} |")
    out += [f"| **total** | | **{g['total_wall_time_s'] / 60:.1f}** | | |", ""]
    m = g.get("metrics") or {}
    if m:
        out.append("Evaluation of that run: " + "; ".join(
            f"{k}: " + ", ".join(f"{kk} {f(vv)}" for kk, vv in (v or {}).items())
            for k, v in m.items()) + ".")
        out.append("")
    if g.get("report"):
        out += [f"Pipeline report: `{g['report']}`.", ""]
    out += [img(doc, r), ""]
    return out


def summary(r: Optional[Dict[str, Any]]) -> List[str]:
    c = checks_by_name(r).get("total_wall_time")
    if not c:
        return []
    done = "" if r["figures"]["complete"] else " (incomplete)"
    return [f"| end-to-end | demo pipeline total wall time | {c['value'] / 60:.1f} min{done} | "
            f"{c['target']} | |"]
