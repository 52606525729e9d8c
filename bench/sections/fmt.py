"""Formatting shared by the sections of ``docs/benchmarks.md``: ratios, percentages, verdict
status, figure links, the machine line."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import _common as C  # bench/ is on sys.path (bench/make_doc.py puts it there)
from fna_d2.utils import fmt_number

__all__ = ["f", "x", "pct", "status", "img", "verdicts", "machine", "checks_by_name"]

f = fmt_number
checks_by_name = C.checks_by_name


def x(v: Optional[float], nd: int = 2) -> str:
    """A ratio: ``1.23x``."""
    return "n/a" if v is None else f"{v:.{nd}f}x"


def pct(v: Optional[float], nd: int = 1) -> str:
    """A fraction as a percentage: ``0.04 -> 4.0%``."""
    return "n/a" if v is None else f"{v * 100:.{nd}f}%"


def status(ok: Optional[bool]) -> str:
    """A check's ``met``: **met** / **not met** / n/a."""
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def img(doc_path: str, res: Optional[Dict[str, Any]]) -> str:
    """The markdown image of a result's plot, relative to the page (empty without one)."""
    if not res or not res.get("plot"):
        return ""
    rel = os.path.relpath(os.path.join(C.REPO, res["plot"]), os.path.dirname(doc_path))
    return f"![{res['name']}]({rel})\n"


def verdicts(doc_path: str, res: Dict[str, Any]) -> List[str]:
    """A result's checks as a verdict table, then its plot."""
    return (["| verdict | status |", "|---|---|"]
            + [f"| {c['text']} | {status(c['met'])} |" for c in res.get("checks", [])]
            + ["", img(doc_path, res), ""])


def machine(m: Dict[str, Any]) -> str:
    """One line describing the machine of a result."""
    return (f"{m.get('cpu')}, {m.get('logical_cores')} logical cores, {m.get('memory_gb')} GB, "
            f"torch {m.get('torch')}, Python {m.get('python')}"
            + (f", GPU {m['cuda']}" if m.get("cuda") else ", no GPU"))
