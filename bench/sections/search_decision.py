"""Section 9 of ``docs/benchmarks.md``: does the demo's search decide, and what makes it
(``bench/bench_search_decision.py``): alpha entropy, top-1 probability, churn and the agreement
between search seeds per architecture learning rate, and the trained mIoU of a setting's
architecture beside the claims' networks (section 8)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .fmt import f, pct, status, verdicts

__all__ = ["section", "summary"]


def _ms(v: Optional[Dict[str, Any]], nd: int = 3) -> str:
    if not v or v.get("mean") is None:
        return ""
    return f(v["mean"], nd) + ("" if v.get("std") is None else f" +- {f(v['std'], nd)}")


def section(r: Optional[Dict[str, Any]], doc: str) -> List[str]:
    out = ["## 9. Does the demo's search decide? (`bench/bench_search_decision.py`)", ""]
    if not r or not r.get("settings"):
        return out + ["Not run.", ""]
    out += [f"The {r['demo']} demo's search (`configs/demo/{r['demo']}_search.yaml`) with "
            "the architecture learning rate (`SOLVER.ARCH.BASE_LR`) varied, each with several "
            "search seeds (`MODEL.FNA.SEARCH.SEED`: the init, alphas included, the arch split and "
            "the data order). Entropy: final softmax(alpha) normalised entropy (1 = "
            "uniform); top-1 / margin: the most probable operation's probability and its lead "
            "over the second, mean over layers; churn: fraction of layers whose derived "
            f"operation changed in the last {r['churn_back_iterations']} iterations; agreement: "
            "fraction of layers two search seeds derive alike (chance: two uniform draws). "
            "Trained: the seed-0 architecture adapted with the claims' schedule and training "
            "seeds (section 8).", ""]
    out += ["| setting | overrides | seeds | entropy | top-1 | margin | churn | agreement "
            "(chance) | trained mIoU |", "|---|---|---|---|---|---|---|---|---|"]
    for name, v in r["settings"].items():
        ov = " ".join(str(o) for o in v["overrides"]) or "(the demo's)"
        ag = ("" if v["agreement"] is None
              else f"{pct(v['agreement'], 0)} ({pct(v['chance_agreement'], 0)})")
        t = v.get("trained_mIoU")
        out.append(f"| {name} | `{ov}` | {v['seeds']} | {_ms(v['entropy'])} | {_ms(v['top1'])} "
                   f"| {_ms(v['margin'])} | {_ms(v['churn'], 2)} | {ag} | "
                   f"{_ms(t, 2)}{'' if not t else ' (' + str(t['n']) + ')'} |")
    ref = r.get("claims_networks") or {}
    if ref:
        rnd = [v["mean"] for n, v in ref.items() if n.startswith("random_") and v.get("mean")]
        parts = [f"{n} {_ms(ref[n], 2)}" for n in ("searched", "seed", "shrunk_expansion")
                 if n in ref]
        if rnd:
            parts.append(f"random at the searched cost {min(rnd):.2f}-{max(rnd):.2f} "
                         f"(means of {len(rnd)})")
        out += ["", "Section 8's networks on the same schedule (mIoU, mean +- std over "
                "training seeds): " + "; ".join(parts) + "."]
    return out + [""] + verdicts(doc, r)


def summary(r: Optional[Dict[str, Any]]) -> List[str]:
    if not r:
        return []
    return [f"| search decides | {c['text']} | {f(c['value'], 3)} | {c['target']} | "
            f"{status(c['met'])} |" for c in r.get("checks", [])
            if c["name"] == "default_entropy"]
