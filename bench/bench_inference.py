#!/usr/bin/env python
"""Inference cost: CPU latency (batch 1) and Params / MAdds of the published FNA RetinaNet
backbone (``fna_retinanet_arch()``) and of a demo-searched architecture, against MobileNetV2,
at the demo input size (320x320) and at the paper's 800x1088.

* Params / MAdds: ``fna_d2.cost`` (conv layers, the paper's convention): the backbone alone
  (``arch_cost``) and the whole RetinaNet with the paper's COCO head (80 classes,
  ``paper_retinanet_cfg`` + ``detectron2_model_cost``).
* Latency: eval mode, ``torch.no_grad``, batch 1, 1 thread by default (stable on a shared
  machine, closest to a single mobile core); the backbone alone, and the backbone + FPN +
  head forward (no box decoding / NMS, which depends on the detections rather than on the
  backbone). After warm-up, the architectures are timed round by round (interleaved, rotating
  order) and the median per architecture is reported, with ratios to MobileNetV2.

The demo-searched architecture is taken from the first that exists of
``output/demo/trees/derive/arch.json``, ``output/demo/trees/search/searched_arch.json``,
``output/bench/demo_trees/derive/arch.json``, ``output/bench/demo_trees/search/searched_arch.json``,
the remapping ablation's searched architecture (``output/bench/full/ablation/...``); else it
is skipped with a note.

Verdicts (:func:`checks`): per input size, whether the published FNA backbone runs faster,
slower or as fast as MobileNetV2 (within 2 %); the ``--malloc tuned`` run also compares its
latencies with the stored default-allocator result (``make bench`` runs that one first).
"""
from __future__ import annotations

import glob
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import torch  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from fna_d2.arch import fna_retinanet_arch, load_arch, mobilenetv2_arch, save_arch  # noqa: E402
from fna_d2.cost import arch_cost, detectron2_model_cost, paper_retinanet_cfg  # noqa: E402
from fna_d2.modeling import DerivedNet  # noqa: E402
from fna_d2.utils import pyplot  # noqa: E402

NAME = "inference"
#: a backbone latency ratio to MobileNetV2 within [1 - AS_FAST, 1 + AS_FAST] is "as fast"
AS_FAST = 0.02
SEARCHED_CANDIDATES = (
    "output/demo/trees/derive/arch.json",
    "output/demo/trees/search/searched_arch.json",
    "output/bench/demo_trees/derive/arch.json",
    "output/bench/demo_trees/search/searched_arch.json",
)


def find_searched(quick: bool) -> Tuple[Optional[str], str]:
    for p in SEARCHED_CANDIDATES:
        if os.path.isfile(os.path.join(C.REPO, p)):
            return os.path.join(C.REPO, p), f"demo pipeline search ({p})"
    pat = os.path.join(C.OUT, "quick" if quick else "full", "ablation", "search_remap_s*",
                       "searched_arch.json")
    found = sorted(glob.glob(pat))
    if found:
        return found[0], ("the remapping ablation's short search on the demo data "
                          f"({os.path.relpath(found[0], C.REPO)})")
    return None, ("no demo-searched architecture found (run `make demo` or "
                  "bench/bench_remap_ablation.py first); skipped")


def archs(quick: bool) -> Tuple[Dict[str, Any], Dict[str, str]]:
    out = {"MobileNetV2": mobilenetv2_arch(), "FNA (published)": fna_retinanet_arch()}
    path, note = find_searched(quick)
    src = {"MobileNetV2": "fna_d2.arch.mobilenetv2_arch()",
           "FNA (published)": "fna_d2.arch.fna_retinanet_arch()"}
    if path:
        out["FNA (demo search)"] = load_arch(path)
        src["FNA (demo search)"] = note
    else:
        src["FNA (demo search)"] = note
    return out, src


def retinanet(arch_path: str, network: str):
    cfg = paper_retinanet_cfg(network, arch_path)
    model = build_model(cfg)
    model.eval()
    return model


def cost_rows(arch_objs: Dict[str, Any], sizes: List[Tuple[int, int]], tmp: str
              ) -> Dict[str, Dict[str, Any]]:
    rows: Dict[str, Dict[str, Any]] = {}
    for name, arch in arch_objs.items():
        path = save_arch(arch, os.path.join(tmp, f"{_slug(name)}.json"))
        model = retinanet(path, "derived")
        r: Dict[str, Any] = {"ops": [list(st.ops) for st in arch.stages]}
        for h, w in sizes:
            bb = arch_cost(arch, (h, w))
            full = detectron2_model_cost(model, (h, w))
            r[f"{h}x{w}"] = {"backbone_params_m": bb.params / 1e6,
                             "backbone_madds_g": bb.madds / 1e9,
                             "retinanet_params_m": full["total"].params / 1e6,
                             "retinanet_madds_g": full["total"].madds / 1e9}
        rows[name] = r
    return rows


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def time_interleaved(mods: Dict[str, Any], x, repeats: int, warmup: int
                     ) -> Dict[str, Dict[str, List[float]]]:
    """{"cpu": {name: [ms]}, "wall": {name: [ms]}}: process CPU time and wall time."""
    names = list(mods)
    times = {c: {n: [] for n in names} for c in ("cpu", "wall")}
    with torch.no_grad():
        for n in names:
            for _ in range(warmup):
                mods[n](x)
        for r in range(repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                t0, c0 = time.perf_counter(), time.process_time()
                mods[n](x)
                times["cpu"][n].append((time.process_time() - c0) * 1e3)
                times["wall"][n].append((time.perf_counter() - t0) * 1e3)
    return times


class _NetForward:
    """backbone + FPN + head of a detectron2 RetinaNet on a normalised tensor."""

    def __init__(self, model) -> None:
        self.m = model

    def __call__(self, x):
        feats = self.m.backbone(x)
        return self.m.head([feats[f] for f in self.m.head_in_features])


def latency(arch_objs: Dict[str, Any], sizes: List[Tuple[int, int]], tmp: str,
            reps: Dict[str, int], warmup: int, clock: str) -> Dict[str, Any]:
    """Per size: backbone and whole-network latency summaries on ``clock`` ("cpu" or "wall"),
    and the other clock's under ``*_wall_ms`` / ``*_cpu_ms``."""
    out: Dict[str, Any] = {}
    for h, w in sizes:
        key = f"{h}x{w}"
        big = h * w > 400 * 400
        x = torch.randn(1, 3, h, w)
        bbs = {n: DerivedNet(a, out_features=["c3", "c4", "c5"]).eval()
               for n, a in arch_objs.items()}
        t_bb = time_interleaved(bbs, x, reps["backbone_big" if big else "backbone"], warmup)
        nets = {n: _NetForward(retinanet(save_arch(a, os.path.join(tmp, f"{_slug(n)}.json")),
                                         "derived"))
                for n, a in arch_objs.items()}
        t_net = time_interleaved(nets, x, reps["net_big" if big else "net"], 1)
        other = "wall" if clock == "cpu" else "cpu"
        out[key] = {"backbone_ms": {n: C.summary(v) for n, v in t_bb[clock].items()},
                    "retinanet_ms": {n: C.summary(v) for n, v in t_net[clock].items()},
                    f"backbone_{other}_ms": {n: C.summary(v) for n, v in t_bb[other].items()},
                    f"retinanet_{other}_ms": {n: C.summary(v) for n, v in t_net[other].items()}}
        for n in arch_objs:
            print(f"[inference] {key} {n}: backbone {C.median(t_bb['cpu'][n]):.1f} ms CPU "
                  f"({C.median(t_bb['wall'][n]):.1f} wall), backbone+FPN+head "
                  f"{C.median(t_net['cpu'][n]):.1f} ms CPU ({C.median(t_net['wall'][n]):.1f} "
                  f"wall)", flush=True)
    return out


def checks(doc: Dict[str, Any], default: Optional[Dict[str, Any]] = None
           ) -> List[Dict[str, Any]]:
    """Per input size ``published_speed@<size>``: the published FNA backbone's latency ratio to
    MobileNetV2 and whether that is faster, slower or as fast (within ``AS_FAST``). With
    ``default`` (the default-allocator result, for a ``--malloc tuned`` run) also
    ``malloc_effect``: each backbone's latency relative to the default allocator, the range of
    the speed-ups and the largest change of a latency ratio to MobileNetV2."""
    out = []
    ratios = doc["figures"]["ratios"]
    for key, rr in ratios.items():
        r = rr.get("FNA (published)")
        if not r:
            continue
        lr = r["backbone_latency_ratio"]
        speed = "slower" if lr > 1 + AS_FAST else "faster" if lr < 1 - AS_FAST else "as fast"
        out.append(C.check(f"published_speed@{key}", lr,
                           f"{1 - AS_FAST:.2f}-{1 + AS_FAST:.2f}x MobileNetV2 = as fast", None,
                           speed))
    if default and default.get("figures"):
        lat, dlat, dratios = doc["figures"]["latency"], default["figures"]["latency"], \
            default["figures"]["ratios"]
        vs: Dict[str, Dict[str, Optional[float]]] = {}
        speedups, changes = [], []
        for key, d in lat.items():
            vs[key] = {}
            for n, v in d["backbone_ms"].items():
                base = dlat.get(key, {}).get("backbone_ms", {}).get(n, {}).get("median")
                vs[key][n] = v["median"] / base if base else None
                if base:
                    speedups.append(base / v["median"])
                if n in dratios.get(key, {}) and n in ratios[key]:
                    changes.append(abs(ratios[key][n]["backbone_latency_ratio"]
                                       - dratios[key][n]["backbone_latency_ratio"]))
        value = {"backbone_vs_default": vs,
                 "speedup_min": min(speedups) if speedups else None,
                 "speedup_max": max(speedups) if speedups else None,
                 "max_ratio_change": max(changes) if changes else None}
        out.append(C.check("malloc_effect", value))
    return out


def plot(rows, lat, sizes, path: str) -> str:
    plt = pyplot()
    names = list(rows)
    fig, axes = plt.subplots(1, len(sizes), figsize=(4 * len(sizes), 3))
    if len(sizes) == 1:
        axes = [axes]
    colors = ["#888", "#c63", "#36c", "#393"]
    for ax, (h, w) in zip(axes, sizes):
        key = f"{h}x{w}"
        for i, n in enumerate(names):
            m = rows[n][key]["backbone_madds_g"]
            l = lat[key]["backbone_ms"][n]["median"]
            q = lat[key]["backbone_ms"][n]["iqr"]
            ax.errorbar([m], [l], yerr=[[l - q[0]], [q[1] - l]], fmt="o", color=colors[i % 4],
                        label=n, capsize=3)
        ax.set_xlabel("backbone GMAdds")
        ax.set_ylabel("backbone latency (ms, 1 thread, CPU time)")
        ax.set_title(f"{key}, batch 1", fontsize=9)
        ax.legend(fontsize=7)
    return C.finish_fig(fig, path)


def main(argv=None) -> int:
    ap = C.arg_parser(__doc__)
    ap.add_argument("--threads", type=int, default=1)
    C.add_malloc_option(ap, NAME)
    args = ap.parse_args(argv)
    os.chdir(C.REPO)
    malloc = C.apply_malloc(args.malloc)
    name = C.malloc_result_name(NAME, args.malloc)
    torch.set_num_threads(args.threads)
    C.quiet_logs()
    t0 = time.perf_counter()
    machine = C.machine_info(args.threads)
    sizes = [(320, 320), (800, 1088)]
    if args.quick:
        reps = {"backbone": 3, "backbone_big": 1, "net": 1, "net_big": 1}
        sizes = [(320, 320)]
    else:
        reps = {"backbone": 15, "backbone_big": 7, "net": 7, "net_big": 3}
    arch_objs, sources = archs(args.quick)
    tmp = C.scratch("inference", quick=args.quick)
    rows = cost_rows(arch_objs, [(320, 320), (800, 1088)], tmp)
    for n, r in rows.items():
        c = r["800x1088"]
        print(f"[inference] {n}: backbone {c['backbone_params_m']:.2f}M / "
              f"{c['backbone_madds_g']:.2f}B, RetinaNet {c['retinanet_params_m']:.2f}M / "
              f"{c['retinanet_madds_g']:.2f}B MAdds at 800x1088", flush=True)
    # process CPU time with 1 thread: the compute time, immune to other processes' load
    clock = "cpu" if args.threads == 1 else "wall"
    lat = latency(arch_objs, sizes, tmp, reps, warmup=1 if args.quick else 2, clock=clock)
    ratios: Dict[str, Any] = {}
    for key, d in lat.items():
        base_bb = d["backbone_ms"]["MobileNetV2"]["median"]
        base_net = d["retinanet_ms"]["MobileNetV2"]["median"]
        ratios[key] = {n: {"backbone_latency_ratio": d["backbone_ms"][n]["median"] / base_bb,
                           "retinanet_latency_ratio": d["retinanet_ms"][n]["median"] / base_net,
                           "backbone_madds_ratio": rows[n][key]["backbone_madds_g"]
                           / rows["MobileNetV2"][key]["backbone_madds_g"]}
                       for n in arch_objs}
    img = plot(rows, lat, sizes, os.path.join(C.img_dir(args.quick), f"bench_{name}.png"))
    notes = []
    if "FNA (demo search)" not in arch_objs:
        notes.append(sources["FNA (demo search)"])
    paper = {"MobileNetV2": {"retinanet_params_m": 11.49, "retinanet_madds_g": 133.05},
             "FNA (published)": {"retinanet_params_m": 11.73, "retinanet_madds_g": 133.03}}
    doc = {
        "machine": machine, "wall_time_s": time.perf_counter() - t0,
        "settings": {"threads": args.threads, "batch": 1, "clock": clock, "malloc": malloc,
                     "latency_sizes": [list(s) for s in sizes],
                     "repeats": reps, "cost_sizes": [[320, 320], [800, 1088]],
                     "retinanet_for_cost": "paper RetinaNet (FPN 256, 4x256 convs, 9 anchors, "
                                           "80 classes)",
                     "retinanet_for_latency": "same, backbone+FPN+head forward, no post-"
                                              "processing"},
        "sources": sources, "figures": {"cost": rows, "latency": lat, "ratios": ratios},
        "paper": paper, "notes": notes, "plot": os.path.relpath(img, C.REPO)}
    doc["checks"] = checks(doc, C.read_result(NAME, args.quick) if args.malloc == "tuned" else None)
    C.write_result(name, args.quick, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
