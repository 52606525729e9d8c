"""Section 8 of ``docs/benchmarks.md``: what the search buys (``bench/bench_fna_claims.py``):
the searched architecture against random ones at its cost, MobileNetV2 shrunk by hand, the
published FNA COCO architecture and the seed, per demo."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .fmt import f, status, verdicts

__all__ = ["section", "summary"]

_ORDER = ("searched", "searched_target_seed", "seed", "fna_coco", "shrunk_depth",
          "shrunk_expansion")


def _names(nets: Dict[str, Any]) -> List[str]:
    first = [n for n in _ORDER if n in nets]
    return first + sorted(n for n in nets if n not in first)


def _ms(v: Dict[str, Any]) -> str:
    return f(v["mean"]) + ("" if v.get("std") is None else f" +- {f(v['std'])}")


def _paired(p: Optional[Dict[str, Any]]) -> str:
    if not p or p.get("mean") is None:
        return ""
    half = p.get("ci95_half")
    return f"{p['mean']:+.2f}" + ("" if half is None else f" +- {half:.2f}") + f" ({p['n']})"


def section(r: Optional[Dict[str, Any]], doc: str) -> List[str]:
    out = ["## 8. What the search buys (`bench/bench_fna_claims.py`)", ""]
    if not r:
        return out + ["Not run.", ""]
    out += ["Every network is remapped from the same seed and trained with the demo's adaptation "
            "config (`configs/demo/*_adapt.yaml`), except `seed` (the ImageNet-trained "
            "MobileNetV2, the baseline config). `searched`: the demo search's architecture; "
            "`searched_target_seed`: the search with `MODEL.FNA.SEARCH.TARGET_COST seed`; "
            "`random_*`: drawn uniformly from the search space within 3% of the searched "
            "backbone's MAdds; `shrunk_*`: MobileNetV2 shrunk by hand to that cost (`depth`: "
            "layers removed; `expansion`: e6 -> e3); `fna_coco`: the published FNA COCO "
            "architecture. Paired = searched - network, same training seed: mean +- 95% t "
            "half-interval (pairs).", ""]
    for demo, g in r["figures"].items():
        nets = g["networks"]
        done = r["complete"].get(demo)
        missing = r["missing"].get(demo) or []
        if not nets:
            out += [f"### {demo} ({g['metric']}) - not started", "", "No run finished yet.", ""]
            continue
        out += [f"### {demo} ({g['metric']})" + ("" if done else
                                                  f" - incomplete: {len(missing)} runs to go"),
                ""]
        out += [f"| network | backbone GMAdds | {g['metric']} (mean +- std) | seeds | "
                "paired vs searched |", "|---|---|---|---|---|"]
        for n in _names(nets):
            v = nets[n]
            out.append(f"| {n} | {f(v.get('gmadds'), 3)} | {_ms(v)} | {v['n']} | "
                       f"{_paired(g['paired'].get(n))} |")
        out.append("")
        rank = g.get("rank_among_random")
        if rank:
            out.append(f"The searched architecture ranks {rank['rank']} of {rank['of']} among "
                       "the random architectures of its cost (a tie counts against it).")
        for rid, s in g.get("searches", {}).items():
            out.append(f"Search `{rid}`: final alpha entropy {f(s.get('alpha_entropy'), 3)} "
                       f"(1 = uniform), skip ratio {f(s.get('skip_ratio'), 2)}, backbone "
                       f"{f(s.get('backbone_gmadds'), 3)} GMAdds.")
        out.append("")
    return out + verdicts(doc, r)


def summary(r: Optional[Dict[str, Any]]) -> List[str]:
    if not r:
        return []
    rows = []
    for c in r.get("checks", []):
        if c["name"].endswith("_searched_vs_random") or c["name"].endswith("_searched_vs_seed"):
            rows.append(f"| what the search buys | {c['text']} | {f(c['value'])} | "
                        f"{c['target']} | {status(c['met'])} |")
    return rows
