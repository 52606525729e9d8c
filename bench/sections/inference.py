"""Section 2 of ``docs/benchmarks.md``: inference cost (``bench/bench_inference.py``, default
allocator, and its ``--malloc tuned`` run)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .fmt import checks_by_name, img, x

__all__ = ["section", "summary"]


def section(r: Optional[Dict[str, Any]], rt: Optional[Dict[str, Any]], doc: str) -> List[str]:
    out = ["## 2. Inference cost (`bench/bench_inference.py`)", ""]
    if not r:
        return out + ["Not run.", ""]
    g, s = r["figures"], r["settings"]
    cost, lat, ratios = g["cost"], g["latency"], g["ratios"]
    names = list(cost)
    out += [f"Batch 1, {s['threads']} thread(s), eval mode, after warm-up; the architectures "
            "timed round by round (interleaved), medians of the process CPU time (wall-clock "
            "medians are in the JSON). Params/MAdds by `fna_d2.cost` (conv layers, the "
            "paper's convention); \"RetinaNet\" is the paper's COCO model (FPN 256, 4x256 "
            "convs per branch, 9 anchors, 80 classes). Latency of the whole network is the "
            "backbone + FPN + head forward (no box decoding / NMS).", "",
            "Architectures: " + "; ".join(f"**{n}**: {r['sources'].get(n, '')}"
                                          for n in r["sources"]) + ".", ""]
    for n in names:
        if n not in ("MobileNetV2",):
            out.append(f"- {n}: " + " \\| ".join(" ".join(st) for st in cost[n]["ops"][1:]))
    out.append("")
    out += ["| backbone | Params (M) | MAdds 320x320 (G) | MAdds 800x1088 (G) | "
            "RetinaNet Params (M) | RetinaNet MAdds 800x1088 (G) | paper |",
            "|---|---|---|---|---|---|---|"]
    for n in names:
        c3, c8 = cost[n]["320x320"], cost[n]["800x1088"]
        p = r.get("paper", {}).get(n)
        ptxt = f"{p['retinanet_params_m']}M / {p['retinanet_madds_g']}B" if p else "-"
        out.append(f"| {n} | {c8['backbone_params_m']:.2f} | {c3['backbone_madds_g']:.3f} | "
                   f"{c8['backbone_madds_g']:.2f} | {c8['retinanet_params_m']:.2f} | "
                   f"{c8['retinanet_madds_g']:.2f} | {ptxt} |")
    out.append("")
    out += ["| backbone | input | backbone latency (ms) | / MobileNetV2 | MAdds / MobileNetV2 |"
            " backbone+FPN+head (ms) | / MobileNetV2 |", "|---|---|---|---|---|---|---|"]
    for key, d in lat.items():
        for n in names:
            if n not in d["backbone_ms"]:
                continue
            rr = ratios[key][n]
            out.append(f"| {n} | {key} | {d['backbone_ms'][n]['median']:.1f} | "
                       f"{x(rr['backbone_latency_ratio'])} | {x(rr['backbone_madds_ratio'])} | "
                       f"{d['retinanet_ms'][n]['median']:.0f} | "
                       f"{x(rr['retinanet_latency_ratio'])} |")
    out.append("")
    if rt:
        out += _tuned(rt, names)
    for note in r.get("notes", []):
        out.append(f"Note: {note}")
    ck = checks_by_name(r)
    for key in lat:
        rr = ratios[key].get("FNA (published)")
        c = ck.get(f"published_speed@{key}")
        if not rr or not c:
            continue
        out += ["", f"At {key}, FNA's published backbone has {x(rr['backbone_madds_ratio'], 3)} "
                f"MobileNetV2's MAdds and runs {c['text']} ({x(rr['backbone_latency_ratio'])} "
                f"the latency) on this CPU; with the head, the whole network is at "
                f"{x(rr['retinanet_latency_ratio'])}."]
    out += ["", "MAdds and CPU latency need not agree: FNA's backbone trades depth (skips) for "
            "5x5/7x7 depthwise kernels, whose cost per MAdd on a CPU differs from 3x3 ones "
            "and from 1x1 convolutions. The paper optimised MAdds only; "
            "`MODEL.FNA.SEARCH.COST latency` searches against measured latency. In the whole "
            "RetinaNet the head (about 128 of 133 GMAdds at 800x1088) dominates, so backbone "
            "differences shrink in the last column."]
    out += ["", img(doc, r), img(doc, rt), ""]
    return out


def _tuned(rt: Dict[str, Any], names: List[str]) -> List[str]:
    """The ``--malloc tuned`` table, compared with the default allocator (its
    ``malloc_effect`` check)."""
    lt, rtt = rt["figures"]["latency"], rt["figures"]["ratios"]
    eff = (checks_by_name(rt).get("malloc_effect") or {}).get("value") or {}
    vs = eff.get("backbone_vs_default") or {}
    out = ["", "Same, with glibc malloc's mmap/trim thresholds fixed (`--malloc tuned`, see "
           "section 3):", "",
           "| backbone | input | backbone latency (ms) | / MobileNetV2 | vs default malloc |"
           " backbone+FPN+head (ms) | / MobileNetV2 |", "|---|---|---|---|---|---|---|"]
    for key, d in lt.items():
        for n in names:
            if n not in d["backbone_ms"]:
                continue
            rr = rtt[key][n]
            out.append(f"| {n} | {key} | {d['backbone_ms'][n]['median']:.1f} | "
                       f"{x(rr['backbone_latency_ratio'])} | {x(vs.get(key, {}).get(n))} | "
                       f"{d['retinanet_ms'][n]['median']:.0f} | "
                       f"{x(rr['retinanet_latency_ratio'])} |")
    out.append("")
    if eff.get("speedup_min") is not None:
        out += [f"The allocator setting alone makes the batch-1 backbones "
                f"{eff['speedup_min']:.1f}-{eff['speedup_max']:.1f}x faster on this CPU (page "
                f"faults of the activation buffers, section 3); the latency ratios to "
                f"MobileNetV2 change by at most {eff['max_ratio_change']:.2f}.", ""]
    return out


def summary(r: Optional[Dict[str, Any]]) -> List[str]:
    if not r or not r.get("figures"):
        return []
    out = []
    rr = r["figures"]["ratios"]
    for key in rr:
        for n in rr[key]:
            if n == "MobileNetV2":
                continue
            out.append(f"| inference | {n} backbone latency / MobileNetV2, {key} | "
                       f"{x(rr[key][n]['backbone_latency_ratio'])} (MAdds "
                       f"{x(rr[key][n]['backbone_madds_ratio'])}) | - | |")
    return out
