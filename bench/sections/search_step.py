"""Section 1 of ``docs/benchmarks.md``: search cost (``bench/bench_search_step.py``)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .fmt import checks_by_name, f, img, status, x

__all__ = ["section", "summary"]

#: table rows: (label, figure key, ratio key); a ratio key with a check shows its target
_ROWS = (("search iteration (arch + weight)", "iteration", "iteration_ratio"),
         ("weight step alone", "weight_step", "weight_ratio"),
         ("arch step alone", "arch_step", "arch_ratio"))


def section(r: Optional[Dict[str, Any]], doc: str) -> List[str]:
    out = ["## 1. Search cost (`bench/bench_search_step.py`)", ""]
    if not r:
        return out + ["Not run.", ""]
    s, g = r["settings"], r["figures"]
    ck = checks_by_name(r)
    clock = g.get("clock", "wall")
    out += [
        f"One search iteration (1 arch step + 1 weight step, `SearchStepRunner.run_step` after "
        f"the warm-up) and one weight step alone (`run_step` during the warm-up) of the demo "
        f"super network, against one training step (`SimpleTrainer.run_step`) of the seed "
        f"MobileNetV2 RetinaNet, all at batch {s['batch']}, {s['image_size'][0]}x"
        f"{s['image_size'][1]}, {s['threads']} thread(s), on a fixed pre-mapped batch of demo "
        f"images (data loading excluded). {s['rounds']} rounds, the variants interleaved in "
        f"rotating order, medians. Headline clock: **{clock}** time"
        + (" (process CPU time: with one thread this is the compute time, which the other "
           "processes sharing this machine cannot inflate; wall-clock ratios are given too)."
           if clock == "cpu" else "."), ""]
    out += ["| step | time (s) | / seed step | wall-clock ratio | target | status |",
            "|---|---|---|---|---|---|",
            f"| seed MobileNetV2 training step | {f(g['seed_step_s'])} | 1.00x | 1.00x | | |"]
    for label, key, rk in _ROWS:
        c = ck.get(rk)
        out.append(f"| {label} | {f(g[key + '_s'])} | {x(g[rk])} | "
                   f"{x(g.get('wall', {}).get(rk))} | {c['target'] if c else '-'} | "
                   f"{status(c['met']) if c else ''} |")
    out.append("")
    pr = g.get("iteration_ratio_per_round", {})
    if pr:
        out += [f"Per-round iteration ratios: median {x(pr.get('median'))}, quartiles "
                f"{x(pr['iqr'][0])}-{x(pr['iqr'][1])} (n = {pr.get('n')}).", ""]
    out += _memory(g.get("memory_mb", {}), s)
    out += _profile(r.get("profile"))
    out += [img(doc, r), ""]
    return out


def _memory(mem: Dict[str, Any], s: Dict[str, Any]) -> List[str]:
    if not mem:
        return []
    out = ["Peak memory (each variant in its own process, "
           f"{s.get('memory_steps')} step(s); peak RSS = VmHWM, and its increase over the "
           "RSS of the built model, i.e. activations, gradients and optimizer state):", "",
           "| variant | peak RSS (MB) | RSS after build (MB) | increase (MB) | peak / seed |"
           " increase / seed |", "|---|---|---|---|---|---|"]
    for v, label in (("seed", "seed training step"), ("weight", "weight step"),
                     ("iteration", "search iteration")):
        m = mem[v]
        out.append(f"| {label} | {m['maxrss_mb']:.0f} | {m['rss_after_build_mb']:.0f} | "
                   f"{m['step_increase_mb']:.0f} | "
                   f"{x(m['maxrss_mb'] / mem['seed']['maxrss_mb'])} | "
                   f"{x(m['step_increase_mb'] / max(1e-9, mem['seed']['step_increase_mb']))} |")
    return out + [""]


def _profile(prof: Optional[Dict[str, Any]]) -> List[str]:
    if not prof:
        return []
    out = ["Where the time goes (one profiled step each; forward times from module hooks, "
           "CPU ms; the rest is backward, optimizer and bookkeeping):", "",
           "| step | total | backbone fwd | FPN fwd | head fwd | backward + optimizer + rest |"
           " conv fwd (self) | conv bwd (self) | batch norm (self) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for v, label in (("seed", "seed training step"), ("arch", "arch step"),
                     ("weight", "weight step")):
        p = prof[v]
        fb, gr = p["forward_breakdown_ms"], p["groups_ms"]
        out.append(f"| {label} | {fb['step_total']:.0f} | {fb['backbone_bottom_up_fwd']:.0f} |"
                   f" {fb['fpn_fwd']:.0f} | {fb['head_fwd']:.0f} | "
                   f"{fb['backward_optimizer_rest']:.0f} | {gr.get('conv forward', 0):.0f} | "
                   f"{gr.get('conv backward', 0):.0f} | "
                   f"{gr.get('batch norm (fwd+bwd)', 0):.0f} |")
    out.append("")
    a, sd, w = (prof[v]["forward_breakdown_ms"] for v in ("arch", "seed", "weight"))
    bb = max(1e-9, sd["backbone_bottom_up_fwd"])
    out += [
        f"Reading: the arch step runs every candidate of the 21 searchable layers, so its "
        f"backbone forward costs {a['backbone_bottom_up_fwd'] / bb:.1f}x "
        f"the seed's; it is cheap overall because the weights are frozen (no weight "
        f"gradients: its backward costs "
        f"{a['backward_optimizer_rest'] / max(1e-9, sd['backward_optimizer_rest']):.2f}x "
        f"the seed's) and because the RetinaNet head, identical in all three, dominates "
        f"the seed step. The weight step runs one sampled path of a 21-layer network whose "
        f"ops are on average larger than MobileNetV2's (uniform over k3/k5/k7 and e3/e6, "
        f"plus skips), so its backbone forward is "
        f"{w['backbone_bottom_up_fwd'] / bb:.2f}x the seed's.", ""]
    return out


def summary(r: Optional[Dict[str, Any]]) -> List[str]:
    if not r:
        return []
    g, ck = r["figures"], checks_by_name(r)
    out = []
    for c, label in ((ck["iteration_ratio"], f"search iteration / seed training step "
                                             f"({g.get('clock')} time)"),
                     (ck["weight_ratio"], "weight step / seed training step")):
        out.append(f"| search cost | {label} | {x(c['value'])} | {c['target']} | "
                   f"{status(c['met'])} |")
    if g.get("memory_mb"):
        out.append(f"| search cost | peak memory, iteration / seed step | "
                   f"{x(g['memory_ratio_iteration'])} | - | |")
    return out
