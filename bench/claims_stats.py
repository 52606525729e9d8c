"""The summary of ``bench/bench_fna_claims.py``: read every record of every demo, and write
``<results>/fna_claims.json`` with, per demo, each network's metric (mean +- sample std over
training seeds), the paired difference searched - other (same training seed; mean and a 95%
t interval), the rank of the searched architecture among the random ones, the search's final
alpha entropy, what is still missing, and the verdicts; and the strip plot
``fna_claims.png``. Only reads records and formats: it can run at any time (``--summarize``).
"""
from __future__ import annotations

import glob
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import _common as C
from fna_d2.compare import t975
from fna_d2.utils import mean_std, pyplot, read_json, write_json

__all__ = ["load_records", "demo_figures", "checks", "write_summary"]


def load_records(rec_dir: str) -> Dict[str, Dict[str, Any]]:
    """``{record id: record}`` of one demo's folder (searches and trainings)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(rec_dir, "*.json"))):
        r = read_json(path)
        if r is not None:
            out[os.path.splitext(os.path.basename(path))[0]] = r
    return out


def _paired(a: Dict[int, float], b: Dict[int, float]) -> Dict[str, Optional[float]]:
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    ms = mean_std(d)
    half = (t975(len(d) - 1) * ms["std"] / math.sqrt(len(d))
            if ms["std"] is not None else None)
    return {"n": len(d), "mean": ms["mean"], "std": ms["std"], "ci95_half": half}


def demo_figures(records: Dict[str, Dict[str, Any]], metric: str) -> Dict[str, Any]:
    """The numbers of one demo (module doc)."""
    nets: Dict[str, Dict[str, Any]] = {}
    for rid, r in records.items():
        if r.get("kind") != "train" or r.get(metric) is None:
            continue
        n = nets.setdefault(r["network"], {"by_seed": {}, "gmadds": r.get("backbone_gmadds"),
                                           "arch_file": r.get("arch_file"), "wall_s": []})
        n["by_seed"][int(r["train_seed"])] = float(r[metric])
        n["wall_s"].append(r.get("wall_s"))
    for n in nets.values():
        n.update(mean_std(list(n["by_seed"].values())))
    out: Dict[str, Any] = {"metric": metric, "networks": nets, "paired": {}, "searches": {}}
    if "searched" in nets:
        for name, n in nets.items():
            if name != "searched":
                out["paired"][name] = _paired(nets["searched"]["by_seed"], n["by_seed"])
        rand = sorted((v["mean"] for k, v in nets.items() if k.startswith("random_")),
                      reverse=True)
        if rand:
            s = nets["searched"]["mean"]
            # a tie counts against the searched architecture: rank 1 = better than every one
            out["rank_among_random"] = {"rank": 1 + sum(m >= s for m in rand),
                                        "of": len(rand) + 1}
    for rid in ("search", "search_target_seed"):
        r = records.get(rid)
        if r:
            out["searches"][rid] = {k: r.get(k) for k in ("alpha_entropy", "skip_ratio",
                                                          "backbone_gmadds", "wall_s",
                                                          "target_cost")}
    return out


def _beyond(p: Optional[Dict[str, Any]]) -> Optional[bool]:
    """True/False: the paired 95% interval excludes / includes 0; None: too few seeds."""
    if not p or p["ci95_half"] is None:
        return None
    return abs(p["mean"]) > p["ci95_half"]


def checks(fig: Dict[str, Any], complete: Dict[str, bool]) -> List[Dict[str, Any]]:
    """Per demo: the searched net against the random ones, the shrunk seeds and the seed, and
    the target-seed search against the seed (verdicts only on complete demos)."""
    out = []
    for demo, g in fig.items():
        nets, paired, metric = g["networks"], g["paired"], g["metric"]
        if "searched" not in nets:
            continue
        done = complete[demo]
        r = g.get("rank_among_random")
        if r:
            out.append(C.check(f"{demo}_searched_vs_random", r["rank"], "rank 1",
                               r["rank"] == 1 if done else None,
                               f"{demo}: the searched architecture ranks {r['rank']} of "
                               f"{r['of']} among random architectures of its cost ({metric}; "
                               f"ties count against it)"
                               + ("" if done else " (incomplete)")))
        for other in ("shrunk_depth", "shrunk_expansion", "seed", "fna_coco"):
            p = paired.get(other)
            if not p or p["mean"] is None:
                continue
            beyond = _beyond(p)
            spread = {True: "beyond the seeds' spread", False: "within the seeds' spread",
                      None: "one seed: no spread"}[beyond]
            out.append(C.check(f"{demo}_searched_vs_{other}", p["mean"], "> 0",
                               p["mean"] > 0 if done else None,
                               f"{demo}: searched - {other} = {p['mean']:+.2f} {metric} "
                               f"({p['n']} paired seeds, {spread})"
                               + ("" if done else " (incomplete)")))
        if "searched_target_seed" in nets and "seed" in nets:
            t, s = nets["searched_target_seed"]["mean"], nets["seed"]["mean"]
            out.append(C.check(f"{demo}_target_seed_vs_seed", t - s, ">= 0 (at the seed's cost)",
                               t >= s if done else None,
                               f"{demo}: the search at the seed's cost gives {t:.2f} vs the "
                               f"seed's {s:.2f} {metric}" + ("" if done else " (incomplete)")))
    return out


def plot(fig: Dict[str, Any], path: str) -> Optional[str]:
    demos = [d for d, g in fig.items() if g["networks"]]
    if not demos:
        return None
    plt = pyplot()
    f, axes = plt.subplots(1, len(demos), figsize=(6.5 * len(demos), 3.8), squeeze=False)
    for ax, demo in zip(axes[0], demos):
        g = fig[demo]
        names = sorted(g["networks"], key=lambda n: (not n.startswith("searched"),
                                                     n.startswith("random_"), n))
        for i, n in enumerate(names):
            v = g["networks"][n]
            ys = list(v["by_seed"].values())
            color = "C3" if n.startswith("searched") else ("C7" if n.startswith("random_")
                                                          else "C0")
            ax.scatter([i] * len(ys), ys, color=color, s=18, zorder=3)
            ax.hlines(v["mean"], i - 0.3, i + 0.3, color=color, lw=2)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(g["metric"])
        ax.set_title(f"{demo}: searched (red), random at its cost (grey), others (blue)",
                     fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    return C.finish_fig(f, path)


def write_summary(name: str, demos: Dict[str, Dict[str, Any]], root: str,
                  records_dir: Callable[[str, str], str], quick: bool,
                  wall_s: Optional[float] = None) -> Dict[str, Any]:
    """Rewrite ``<root>/<name>.json`` and the plot (docs/img, or ``<root>/img`` for a quick
    run or another root) from the records; returns the doc."""
    fig, missing, complete = {}, {}, {}
    for demo, spec in demos.items():
        rec_dir = records_dir(root, demo)
        records = load_records(rec_dir)
        fig[demo] = demo_figures(records, spec["metric"])
        plan = read_json(os.path.join(rec_dir, "archs", "controls.json")) or {}
        nets = (["searched", "seed", "fna_coco", "searched_target_seed"]
                + sorted((plan.get("controls") or {})))
        want = [f"train_{n}_s{s}" for s in range(spec["seeds"]) for n in nets]
        missing[demo] = [w for w in want if w not in records] + [
            s for s in ("search", "search_target_seed") if s not in records]
        complete[demo] = bool(plan) and not missing[demo]
    img = (C.DOC_IMG if os.path.abspath(root) == os.path.abspath(C.RESULTS) and not quick
           else os.path.join(root, "img"))
    png = plot(fig, os.path.join(img, f"{name}.png"))
    doc = {"name": name, "quick": quick, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "machine": C.machine_info(), "wall_time_s": wall_s,
           "settings": {d: {k: v for k, v in s.items()} for d, s in demos.items()},
           "figures": fig, "complete": complete, "missing": missing,
           "plot": os.path.relpath(png, C.REPO) if png else None}
    doc["checks"] = checks(fig, complete)
    path = write_json(os.path.join(root, f"{name}.json"), C.clean_json(doc), indent=1)
    print(f"[bench] wrote {os.path.relpath(path, C.REPO)}")
    return doc
