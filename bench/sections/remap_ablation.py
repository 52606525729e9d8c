"""Section 4 of ``docs/benchmarks.md``: remapping vs random initialisation
(``bench/bench_remap_ablation.py``)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .fmt import checks_by_name, f, img

__all__ = ["section", "summary"]


def _ap(v: Dict[str, Any]) -> str:
    """``mean +- std`` (just the mean when the std is undefined: one seed)."""
    s = v["AP"]["std"]
    return f(v["AP"]["mean"]) + ("" if s is None else f" +- {f(s)}")


def _holds(row: Dict[str, Any]) -> str:
    """The "holds?" column: beyond_spread is None when a std is undefined (one seed)."""
    if not row["holds"]:
        return "**no**"
    return {True: "yes, beyond spread", False: "yes, within spread"}.get(
        row["beyond_spread"], "yes (one seed: no spread)")


def section(r: Optional[Dict[str, Any]], doc: str) -> List[str]:
    out = ["## 4. Remapping vs random initialisation (`bench/bench_remap_ablation.py`)", ""]
    if not r:
        return out + ["Not run.", ""]
    g, s = r["figures"], r["settings"]
    seeds = s["train_seeds"]
    out += [f"The paper's ablation (Cityscapes mIoU) scaled down to the tree-crown demo "
            f"(`fna_trees_train` -> COCO AP on `fna_trees_val`, 12 images): images "
            f"{s['image_size']} px, batch {s['batch']}, {s['train_iters']} training iterations "
            f"(LR {s['base_lr']}, {len(seeds)} seeds each), {s['head']} (lighter than the "
            f"demo's head so the whole benchmark fits its time budget; the backbone is "
            f"unchanged), searches of {s['search_iters']} iterations ({s['search_warmup_iters']} "
            f"warm-up, then 1 arch : 1 weight step), one search seed. \"random\" = "
            f"`MODEL.FNA.REMAP.ENABLED False`, \"remap\" = remapped from `{s['seed_weights']}`.",
            ""]
    if s.get("score_thresh_test") is not None:
        out += [f"Test score threshold {s['score_thresh_test']} (detectron2's default 0.05 "
                "leaves such briefly trained detectors with no detections and an undefined AP).",
                ""]
    out += ["Searched architectures:", "",
            "| super net init | searchable-layer ops | e3 ops | k5/k7 ops | skips | "
            "GMAdds @256 | weight-step loss first 10 -> last 10 its | arch-step loss last 10 |",
            "|---|---|---|---|---|---|---|---|"]
    for i, d in g["search"].items():
        a = d["arch"]
        ops = " \\| ".join(" ".join(st) for st in a["ops"][1:])
        out.append(f"| {i} | {ops} | {a['num_e3']} | {a['num_k5_k7']} | {a['num_skip']} | "
                   f"{a['madds_g_256']:.3f} | {f(d['weight_loss_first10'])} -> "
                   f"{f(d['weight_loss_last10'])} | {f(d['arch_loss_last10'])} |")
    out += ["", "Initialisation (super net / target):", "",
            "| super net / target | AP (mean +- std) | AP50 | per seed | paper mIoU |",
            "|---|---|---|---|---|"]
    for k, v in g["init"].items():
        out.append(f"| {k} | {_ap(v)} | {f(v['AP50']['mean'])} | "
                   f"{', '.join(f(x) for x in v['AP_per_seed'])} | {r['paper']['init'][k]} |")
    out += ["", "Target remapping strategy (architecture of the remapped search):", "",
            "| width + kernel | AP (mean +- std) | AP50 | per seed | tensors width-cropped / "
            "kernel-padded | paper mIoU |", "|---|---|---|---|---|---|"]
    for k, v in g["strategy"].items():
        rc = v.get("remap_counts") or {}
        out.append(f"| {k} | {_ap(v)} | {f(v['AP50']['mean'])} | "
                   f"{', '.join(f(x) for x in v['AP_per_seed'])} | "
                   f"{rc.get('width_cropped', 'n/a')} / {rc.get('kernel_padded', 'n/a')} | "
                   f"{r['paper']['strategy'][k]} |")
    out += ["", "The paper's orderings at this scale (\"beyond spread\": the gap of the means "
            "exceeds the larger standard deviation of the two):", "",
            "| claim | AP | paper gap (mIoU) | holds? |", "|---|---|---|---|"]
    for row in g["orderings"]:
        out.append(f"| {row['claim']} | {f(row['AP_a'])} vs {f(row['AP_b'])} | "
                   f"{row['paper_gap']:+.1f} | {_holds(row)} |")
    n = checks_by_name(r)["orderings"]["value"]
    out += ["", f"{n['in_direction']} of {n['total']} orderings hold in direction, "
            f"{n['beyond_spread']} beyond the seed spread. " + _reading(r), ""]
    lc = g.get("lr_check") or {}
    if lc:
        b = lc["same_seed_at_base_lr"]
        out += [f"LR check (seed {lc['seed']}, the remapped search's architecture): at the demo "
                f"configs' LR {lc['lr']} (batch 2) the remapped target reaches AP "
                f"{f(lc['remap']['AP'])} (final training loss {f(lc['remap']['final_loss'])}) and "
                f"the random one {f(lc['random']['AP'])} ({f(lc['random']['final_loss'])}); at "
                f"LR {s['base_lr']}: {f(b['remap']['AP'])} and {f(b['random']['AP'])}.", ""]
    out += [f"Run time: searches {g['search_wall_s'] / 60:.1f} min, trainings "
            f"{g['train_wall_s'] / 60:.1f} min (wall, {s['workers']} jobs at a time), "
            f"{g['jobs_cpu_s'] / 60:.1f} CPU-min of training/search work.", "",
            img(doc, r), ""]
    return out


def _reading(r: Dict[str, Any]) -> str:
    g, ck = r["figures"], checks_by_name(r)
    sup = [v for v in g["orderings"] if v["claim"].startswith("remapping the super net")]
    spread = {True: "beyond spread", False: "within spread"}
    sup_txt = "; ".join(f"{v['claim'].split('(')[1].rstrip(')')}: {f(v['AP_a'])} vs "
                        f"{f(v['AP_b'])} ({spread.get(v['beyond_spread'], 'one seed: no spread')})"
                        for v in sup)
    srch = g.get("search", {})
    extra = ""
    if "random" in srch and "remap" in srch:
        a, b = srch["remap"], srch["random"]
        extra = (f" The remapped super network also trained faster during the search "
                 f"(weight-step loss over its last 10 iterations {f(a['weight_loss_last10'])} "
                 f"vs {f(b['weight_loss_last10'])} from random). Caveat: with one search per "
                 "initialisation this compares two architectures (remapped search: "
                 f"{a['arch']['madds_g_256']:.3f} GMAdds, {a['arch']['num_skip']} skip layer(s); "
                 f"random: {b['arch']['madds_g_256']:.3f} GMAdds, {b['arch']['num_skip']} skip "
                 "layer(s)), so it cannot separate the super network's initialisation from the "
                 "luck of a single short search.")
    return " ".join([ck["init_order"]["text"], ck["target_remap"]["text"],
                     "Remapping the super network: " + sup_txt + "." + extra,
                     ck["strategies"]["text"]])


def summary(r: Optional[Dict[str, Any]]) -> List[str]:
    if not r:
        return []
    ck = checks_by_name(r)
    ie, n = ck["init_effect"], ck["orderings"]
    return [f"| remap ablation | AP random/random -> remap/remap | {f(ie['value'][0])} -> "
            f"{f(ie['value'][1])} | {ie['target']} | |",
            f"| remap ablation | paper orderings holding beyond the seed spread | "
            f"{n['value']['beyond_spread']} / {n['value']['total']} (in direction: "
            f"{n['value']['in_direction']} / {n['value']['total']}) | {n['target']} | |"]
