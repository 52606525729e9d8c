#!/usr/bin/env python
"""Render ``docs/benchmarks.md`` (or, with ``--quick``, ``bench/results/quick/benchmarks.md``)
from the result files in ``bench/results`` written by the benchmark scripts. Every number in
the page comes from those files; nothing is typed in by hand except the paper's published
values, which are labelled as such."""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

f = C.fmt


def _x(v: Optional[float], nd: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}x"


def _pct(v: Optional[float], nd: int = 1) -> str:
    return "n/a" if v is None else f"{v * 100:.{nd}f}%"


def _status(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def _img(doc_path: str, res: Optional[Dict[str, Any]]) -> str:
    if not res or not res.get("plot"):
        return ""
    rel = os.path.relpath(os.path.join(C.REPO, res["plot"]), os.path.dirname(doc_path))
    return f"![{res['name']}]({rel})\n"


def _machine(m: Dict[str, Any]) -> str:
    return (f"{m.get('cpu')}, {m.get('logical_cores')} logical cores, {m.get('memory_gb')} GB, "
            f"torch {m.get('torch')}, Python {m.get('python')}"
            + (f", GPU {m['cuda']}" if m.get("cuda") else ", no GPU"))


# ----------------------------------------------------------------------------- sections
def sec_search(r: Optional[Dict[str, Any]], doc: str) -> List[str]:
    out = ["## 1. Search cost (`bench/bench_search_step.py`)", ""]
    if not r:
        return out + ["Not run.", ""]
    s, g = r["settings"], r["figures"]
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
    rows = [("search iteration (arch + weight)", "iteration", "iteration_ratio", "<= 3x"),
            ("weight step alone", "weight_step", "weight_ratio", "<= 1.3x"),
            ("arch step alone", "arch_step", "arch_ratio", "-")]
    out += ["| step | time (s) | / seed step | wall-clock ratio | target | status |",
            "|---|---|---|---|---|---|",
            f"| seed MobileNetV2 training step | {f(g['seed_step_s'])} | 1.00x | 1.00x | | |"]
    met = r.get("met", {})
    for label, key, rk, tgt in rows:
        st = _status(met.get(rk)) if rk in met else ""
        out.append(f"| {label} | {f(g[key + '_s'])} | {_x(g[rk])} | "
                   f"{_x(g.get('wall', {}).get(rk))} | {tgt} | {st} |")
    out.append("")
    pr = g.get("iteration_ratio_per_round", {})
    if pr:
        out += [f"Per-round iteration ratios: median {_x(pr.get('median'))}, quartiles "
                f"{_x(pr['iqr'][0])}-{_x(pr['iqr'][1])} (n = {pr.get('n')}).", ""]
    mem = g.get("memory_mb", {})
    if mem:
        out += ["Peak memory (each variant in its own process, "
                f"{s.get('memory_steps')} step(s); peak RSS = VmHWM, and its increase over the "
                "RSS of the built model, i.e. activations, gradients and optimizer state):", "",
                "| variant | peak RSS (MB) | RSS after build (MB) | increase (MB) | peak / seed |"
                " increase / seed |", "|---|---|---|---|---|---|"]
        for v, label in (("seed", "seed training step"), ("weight", "weight step"),
                         ("iteration", "search iteration")):
            m = mem[v]
            out.append(f"| {label} | {m['maxrss_mb']:.0f} | {m['rss_after_build_mb']:.0f} | "
                       f"{m['step_increase_mb']:.0f} | "
                       f"{_x(m['maxrss_mb'] / mem['seed']['maxrss_mb'])} | "
                       f"{_x(m['step_increase_mb'] / max(1e-9, mem['seed']['step_increase_mb']))} |")
        out.append("")
    prof = r.get("profile")
    if prof:
        out += ["Where the time goes (one profiled step each; forward times from module hooks, "
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
        a, sd, w = prof["arch"]["forward_breakdown_ms"], prof["seed"]["forward_breakdown_ms"], \
            prof["weight"]["forward_breakdown_ms"]
        out += [
            f"Reading: the arch step runs every candidate of the 21 searchable layers, so its "
            f"backbone forward costs {a['backbone_bottom_up_fwd'] / max(1e-9, sd['backbone_bottom_up_fwd']):.1f}x "
            f"the seed's; it is cheap overall because the weights are frozen (no weight "
            f"gradients: its backward costs {a['backward_optimizer_rest'] / max(1e-9, sd['backward_optimizer_rest']):.2f}x "
            f"the seed's) and because the RetinaNet head, identical in all three, dominates "
            f"the seed step. The weight step runs one sampled path of a 21-layer network whose "
            f"ops are on average larger than MobileNetV2's (uniform over k3/k5/k7 and e3/e6, "
            f"plus skips), so its backbone forward is "
            f"{w['backbone_bottom_up_fwd'] / max(1e-9, sd['backbone_bottom_up_fwd']):.2f}x the seed's.",
            ""]
    out += [_img(doc, r), ""]
    return out


def sec_inference(r: Optional[Dict[str, Any]], rt: Optional[Dict[str, Any]], doc: str
                  ) -> List[str]:
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
                       f"{_x(rr['backbone_latency_ratio'])} | {_x(rr['backbone_madds_ratio'])} | "
                       f"{d['retinanet_ms'][n]['median']:.0f} | "
                       f"{_x(rr['retinanet_latency_ratio'])} |")
    out.append("")
    if rt:
        lt, rtt = rt["figures"]["latency"], rt["figures"]["ratios"]
        out += ["", "Same, with glibc malloc's mmap/trim thresholds fixed (`--malloc tuned`, see "
                "section 3):", "",
                "| backbone | input | backbone latency (ms) | / MobileNetV2 | vs default malloc |"
                " backbone+FPN+head (ms) | / MobileNetV2 |", "|---|---|---|---|---|---|---|"]
        for key, d in lt.items():
            for n in names:
                if n not in d["backbone_ms"]:
                    continue
                rr = rtt[key][n]
                base = lat.get(key, {}).get("backbone_ms", {}).get(n, {}).get("median")
                vs = _x(d["backbone_ms"][n]["median"] / base) if base else "n/a"
                out.append(f"| {n} | {key} | {d['backbone_ms'][n]['median']:.1f} | "
                           f"{_x(rr['backbone_latency_ratio'])} | {vs} | "
                           f"{d['retinanet_ms'][n]['median']:.0f} | "
                           f"{_x(rr['retinanet_latency_ratio'])} |")
        out.append("")
        sp = [lat[k]["backbone_ms"][n]["median"] / lt[k]["backbone_ms"][n]["median"]
              for k in lt if k in lat for n in names if n in lt[k]["backbone_ms"]]
        dr = [abs(rtt[k][n]["backbone_latency_ratio"] - ratios[k][n]["backbone_latency_ratio"])
              for k in lt if k in lat for n in names if n in rtt[k] and n in ratios[k]]
        if sp:
            out += [f"The allocator setting alone makes the batch-1 backbones {min(sp):.1f}-"
                    f"{max(sp):.1f}x faster on this CPU (page faults of the activation buffers,"
                    f" section 3); the latency ratios to MobileNetV2 change by at most "
                    f"{max(dr):.2f}.", ""]
    for note in r.get("notes", []):
        out.append(f"Note: {note}")
    for key in lat:
        rr = ratios[key].get("FNA (published)")
        if not rr:
            continue
        lr, mr = rr["backbone_latency_ratio"], rr["backbone_madds_ratio"]
        speed = ("slower" if lr > 1.02 else "faster" if lr < 0.98 else "as fast")
        out += ["", f"At {key}, FNA's published backbone has {_x(mr, 3)} MobileNetV2's MAdds and "
                f"runs {speed} ({_x(lr)} the latency) on this CPU; with the head, the whole "
                f"network is at {_x(rr['retinanet_latency_ratio'])}."]
    out += ["", "MAdds and CPU latency need not agree: FNA's backbone trades depth (skips) for "
            "5x5/7x7 depthwise kernels, whose cost per MAdd on a CPU differs from 3x3 ones "
            "and from 1x1 convolutions. The paper optimised MAdds only; "
            "`MODEL.FNA.SEARCH.COST latency` searches against measured latency. In the whole "
            "RetinaNet the head (about 128 of 133 GMAdds at 800x1088) dominates, so backbone "
            "differences shrink in the last column."]
    out += ["", _img(doc, r), _img(doc, rt), ""]
    return out


def sec_latency(r: Optional[Dict[str, Any]], rt: Optional[Dict[str, Any]], doc: str
                ) -> List[str]:
    """Section 3 from ``latency_model`` (default malloc) and ``latency_model_tuned_malloc``
    (the library's default, tuned malloc)."""
    out = ["## 3. Latency model (`bench/bench_latency_model.py`)", ""]
    first = rt or r
    if not first:
        return out + ["Not run.", ""]
    s = first["settings"]
    clock = first["figures"].get("clock", "wall")
    runs = [x for x in (rt, r) if x]
    when = "; ".join(
        f"`bench_latency_model.py"
        f"{' --malloc tuned' if x['settings']['malloc'].get('mode') == 'tuned' else ''}` "
        f"on {x.get('date')}, commit `{x['machine'].get('git')}`, load average at its start "
        f"{x['machine'].get('load_average')}, {x['wall_time_s'] / 60:.1f} min" for x in runs)
    out += [f"This section's runs: {when} ({_machine(first['machine'])}).", "",
            f"{s['num_archs']} architectures sampled uniformly from the detection space "
            f"(21 searchable layers), {s['input_size'][0]}x{s['input_size'][1]}, batch 1, "
            f"{s['threads']} thread(s), {s['repeats']} timed repeats per op and per network, "
            f"{s['passes']} independent passes (table, calibration and networks re-measured). "
            "Prediction = the library's (`fna_d2.latency.predict_vs_measured` on the "
            "`LatencyTable` built by `get_latency_table`): scale x (measured stem and first "
            "block + sum of the table entries of the architecture's ops), where the scale is the "
            "table's own calibration, stored in the table file: the median of measured / "
            "predicted over 4 fixed whole networks timed when the table is built (per layer the "
            "fastest, median, slowest candidate, and fastest/slowest alternating; none of them "
            "is among the sampled architectures). *Uncalibrated* = the same with scale 1. "
            "Measured = the whole `DerivedNet`. Clocks: **cpu** = the library's code with "
            "`time_module` reading the process CPU time "
            f"({s.get('cpu_clock_estimator', 'median')} over the repeats; immune to the other "
            "processes on this machine), **wall** = the library exactly as shipped. Allocator: "
            "**tuned** = the library's default (`MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC True`, "
            "`fna_d2.latency.apply_malloc_tuning`: glibc's mmap/trim thresholds fixed at 1 GiB "
            "with `mallopt`); **default** = glibc as is (`LATENCY_TUNE_MALLOC False`). The "
            "setting is process-wide and irreversible, so the two are separate runs "
            "(`--malloc tuned` / none); the allocator setting is part of a table's device key.",
            "",
            "| malloc | clock | scale | mean rel. error (calibrated) | signed | uncalibrated |"
            " signed | Spearman | status (calibrated: <= 10% / >= 0.9) | per pass: error / "
            "Spearman | noise floor between passes |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for res, mode in ((rt, "tuned (library default)"), (r, "default")):
        if not res:
            continue
        gg = res["figures"]
        for c in res["settings"].get("clocks", [clock]):
            d = gg[c]
            ok_e = d["mean_rel_error"] <= res["targets"]["mean_rel_error"]
            ok_s = d["spearman"] >= res["targets"]["spearman"]
            scales = ", ".join(f(p.get("scale"), 3) for p in d.get("per_pass", []))
            out.append(f"| {mode} | {c} | {scales} | {_pct(d['mean_rel_error'])} | "
                       f"{_pct(d['mean_signed_rel_error'])} | {_pct(d.get('mean_rel_error_raw'))}"
                       f" | {_pct(d.get('mean_signed_rel_error_raw'))} | {f(d['spearman'], 3)} | "
                       f"{_status(ok_e)} / {_status(ok_s)} | "
                       + ", ".join(f"{_pct(p['mean_rel_error'])} / {f(p['spearman'], 3)}"
                                   for p in d.get("per_pass", [])) + " | "
                       f"{_pct(d.get('measured_noise_between_passes'))} (rank corr. "
                       f"{f(d.get('measured_rank_corr_between_passes'), 3)}) |")
    out += ["", "Scale: one value per pass (each pass builds its own table). Errors and "
            "Spearman: median over the passes.", ""]
    reading = ["Reading."]
    if rt:
        dt = rt["figures"][rt["figures"].get("clock", clock)]
        reading.append(
            f"With the library's defaults (tuned allocator, calibrated table; {clock} clock) the "
            f"table predicts whole networks to {_pct(dt['mean_rel_error'])} on average with rank "
            f"correlation {f(dt['spearman'], 3)}; without the calibration the error is "
            f"{_pct(dt.get('mean_rel_error_raw'))}, "
            + ("almost all of it a uniform bias" if abs(dt.get("mean_signed_rel_error_raw") or 0)
               >= 0.9 * (dt.get("mean_rel_error_raw") or 0) else "partly a bias")
            + f" ({_pct(dt.get('mean_signed_rel_error_raw'))}): ops timed alone and repeatedly "
            "run with warm caches, in a network they do not. The scale, fitted on 4 fixed networks, "
            f"leaves a bias of {_pct(dt['mean_signed_rel_error'])} on the sampled ones (per "
            "pass: " + ", ".join(_pct(p["mean_signed_rel_error"]) for p in dt.get("per_pass", []))
            + f"; the same networks' measured latencies differ by "
            f"{_pct(dt.get('measured_noise_between_passes'))} between passes).")
    if r:
        dd = r["figures"][r["figures"].get("clock", clock)]
        dt = rt["figures"][rt["figures"].get("clock", clock)] if rt else None
        worse = dt is None or (dd["mean_rel_error"] > dt["mean_rel_error"]
                               and dd["spearman"] < dt["spearman"])
        reading.append(
            f"With glibc's allocator as is, the error is {_pct(dd['mean_rel_error'])} "
            f"calibrated ({_pct(dd.get('mean_rel_error_raw'))} uncalibrated) and the rank "
            f"correlation {f(dd['spearman'], 3)}"
            + ("." if not worse else ": glibc returns freed buffers above its "
            "(dynamic) mmap threshold to the kernel, so in a whole network the multi-MB "
            "activations of the high-resolution layers are page-faulted in again on every "
            "forward pass, while an op timed alone reuses its buffers. How much a network pays "
            "depends on its ops, so this error is architecture-dependent and no scale removes "
            "it; fixing the thresholds does (hence the library's default)."))
    reading.append(
        "For the search the scale does not matter: its cost loss is LAMBDA x log(COST_SCALE x "
        "E) / log(TAU) with E the softmax-weighted sum of the table entries "
        "(`fna_d2/engine/search.py`), so a constant factor adds log(scale) and leaves every "
        "architecture gradient unchanged; what matters there is the rank correlation, which the "
        "allocator setting decides. The scale makes the table's milliseconds (the logged "
        "expected cost, `searchable_latency_ms`) those of whole networks.")
    out += [" ".join(reading), ""]
    pf = (r or {}).get("figures", {}).get("minor_page_faults")
    pft = (rt or {}).get("figures", {}).get("minor_page_faults")
    if pf or pft:
        parts = [f"{x['whole_network_per_forward']:.0f} minor page faults per forward pass of a "
                 f"whole network vs {x['layers_alone_per_forward']:.0f} for its layers run alone"
                 f" with the {m} allocator" for x, m in ((pf, "default"), (pft, "tuned")) if x]
        n = (pf or pft)["archs"]
        out += [f"Measured in these runs (first {n} architectures): " + "; ".join(parts) + ".",
                ""]
    out += [_img(doc, rt), _img(doc, r), ""]
    return out


def sec_ablation(r: Optional[Dict[str, Any]], doc: str) -> List[str]:
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
            f"`MODEL.FNA.REMAP.ENABLED False`, \"remap\" = remapped from `{s['seed_weights']}`."
            , ""]
    if s.get("score_thresh_test") is not None:
        out += [f"Test score threshold {s['score_thresh_test']} (detectron2's default 0.05 "
                "leaves such briefly trained detectors with no detections and an undefined AP)."
                , ""]
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
        out.append(f"| {k} | {f(v['AP']['mean'])} +- {f(v['AP']['std'])} | "
                   f"{f(v['AP50']['mean'])} | {', '.join(f(x) for x in v['AP_per_seed'])} | "
                   f"{r['paper']['init'][k]} |")
    out += ["", "Target remapping strategy (architecture of the remapped search):", "",
            "| width + kernel | AP (mean +- std) | AP50 | per seed | tensors width-cropped / "
            "kernel-padded | paper mIoU |", "|---|---|---|---|---|---|"]
    for k, v in g["strategy"].items():
        rc = v.get("remap_counts") or {}
        out.append(f"| {k} | {f(v['AP']['mean'])} +- {f(v['AP']['std'])} | "
                   f"{f(v['AP50']['mean'])} | {', '.join(f(x) for x in v['AP_per_seed'])} | "
                   f"{rc.get('width_cropped', 'n/a')} / {rc.get('kernel_padded', 'n/a')} | "
                   f"{r['paper']['strategy'][k]} |")
    out += ["", "The paper's orderings at this scale (\"beyond spread\": the gap of the means "
            "exceeds the larger standard deviation of the two):", "",
            "| claim | AP | paper gap (mIoU) | holds? |", "|---|---|---|---|"]
    for row in g["orderings"]:
        verdict = ("yes, beyond spread" if row["beyond_spread"] else
                   "yes, within spread" if row["holds"] else "**no**")
        out.append(f"| {row['claim']} | {f(row['AP_a'])} vs {f(row['AP_b'])} | "
                   f"{row['paper_gap']:+.1f} | {verdict} |")
    held = [row for row in g["orderings"] if row["beyond_spread"]]
    dirn = [row for row in g["orderings"] if row["holds"]]
    out += ["", f"{len(dirn)} of {len(g['orderings'])} orderings hold in direction, "
            f"{len(held)} beyond the seed spread. " + _ablation_reading(g), ""]
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
            _img(doc, r), ""]
    return out


def _ablation_reading(g: Dict[str, Any]) -> str:
    rows = {row["claim"]: row for row in g["orderings"]}
    tgt = [v for k, v in rows.items() if k.startswith("remapping the target")]
    sup = [v for k, v in rows.items() if k.startswith("remapping the super net")]
    strat = [v for k, v in rows.items() if k.startswith("first-k")]
    init = g["init"]
    parts = []
    order = sorted(init, key=lambda k: init[k]["AP"]["mean"])
    paper_order = ["random/random", "remap/random", "random/remap", "remap/remap"]
    parts.append("The four cells rank " + " < ".join(order) + " by mean AP"
                 + (", the paper's order." if order == paper_order else
                    f" (paper: {' < '.join(paper_order)})."))
    if all(v["beyond_spread"] for v in tgt):
        parts.append("The paper's large effect, remapping the seed into the target network "
                     "instead of training it from scratch, reproduces clearly (" + ", ".join(
                         f"{f(v['AP_a'])} vs {f(v['AP_b'])} AP" for v in tgt) + ").")
    elif all(v["holds"] for v in tgt):
        parts.append("Remapping the target helps in both rows, though not beyond the seed "
                     "spread in every row.")
    else:
        parts.append("Remapping the target does not consistently help at this scale.")
    sup_txt = "; ".join(f"{v['claim'].split('(')[1].rstrip(')')}: {f(v['AP_a'])} vs "
                        f"{f(v['AP_b'])} ({'beyond' if v['beyond_spread'] else 'within'} spread)"
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
                 "layer(s)), so it "
                 "cannot separate the super network's initialisation from the luck of a single "
                 "short search.")
    parts.append("Remapping the super network: " + sup_txt + "." + extra)
    held = [v["b"] for v in strat if v["holds"]]
    lost = [v["b"] for v in strat if not v["holds"]]
    clear = [v["b"] for v in strat if v["beyond_spread"]]
    parts.append("Target remapping strategies: first-k + centre beats "
                 + (", ".join(held) if held else "none of the others")
                 + (f" ({', '.join(clear)} beyond the spread)" if clear else "")
                 + (f"; {', '.join(lost)} match or slightly beat it, within the seed spread"
                    if lost and not any(v["beyond_spread"] for v in strat if not v["holds"])
                    else (f"; {', '.join(lost)} beat it" if lost else ""))
                 + ". The width strategies differ only in which hidden channels of the "
                 "e6 -> e3 layers are kept (the paper's gaps are 0.8-1.3 mIoU); the kernel "
                 "strategy changes every k5/k7 layer"
                 + (", and spreading the 3x3 taps (dilated) instead of padding around them "
                    "(centre) costs most of the benefit of remapping here."
                    if "first_k+dilated" in clear else "."))
    return " ".join(parts)


def sec_pipeline(r: Optional[Dict[str, Any]], doc: str) -> List[str]:
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
    out += [_img(doc, r), ""]
    return out


def summary_rows(res: Dict[str, Optional[Dict[str, Any]]]) -> List[str]:
    out = ["| benchmark | figure | measured | target | status |", "|---|---|---|---|---|"]
    r = res.get("search_step")
    if r:
        g = r["figures"]
        out.append(f"| search cost | search iteration / seed training step ({g.get('clock')} time)"
                   f" | {_x(g['iteration_ratio'])} | <= 3x | {_status(r['met']['iteration_ratio'])} |")
        out.append(f"| search cost | weight step / seed training step | {_x(g['weight_ratio'])} |"
                   f" <= 1.3x | {_status(r['met']['weight_ratio'])} |")
        if g.get("memory_mb"):
            out.append(f"| search cost | peak memory, iteration / seed step | "
                       f"{_x(g['memory_ratio_iteration'])} | - | |")
    r = res.get("inference")
    if r and r.get("figures"):
        rr = r["figures"]["ratios"]
        for key in rr:
            for n in rr[key]:
                if n == "MobileNetV2":
                    continue
                out.append(f"| inference | {n} backbone latency / MobileNetV2, {key} | "
                           f"{_x(rr[key][n]['backbone_latency_ratio'])} (MAdds "
                           f"{_x(rr[key][n]['backbone_madds_ratio'])}) | - | |")
    for key, what in (("latency_model_tuned_malloc", "tuned malloc = library default"),
                      ("latency_model", "default malloc")):
        r = res.get(key)
        if not r:
            continue
        g = r["figures"]
        out.append(f"| latency model | mean relative error, calibrated ({what}, {g.get('clock')}"
                   f" clock) | {_pct(g['mean_rel_error'])} (uncalibrated "
                   f"{_pct(g.get('mean_rel_error_raw'))}) | <= 10% | "
                   f"{_status(r['met']['mean_rel_error'])} |")
        out.append(f"| latency model | Spearman rank correlation ({what}) | "
                   f"{f(g['spearman'], 3)} | >= 0.9 | {_status(r['met']['spearman'])} |")
    r = res.get("remap_ablation")
    if r:
        rows = r["figures"]["orderings"]
        init = r["figures"]["init"]
        out.append(f"| remap ablation | AP random/random -> remap/remap | "
                   f"{f(init['random/random']['AP']['mean'])} -> "
                   f"{f(init['remap/remap']['AP']['mean'])} | paper 72.4 -> 76.6 mIoU | |")
        out.append(f"| remap ablation | paper orderings holding beyond the seed spread | "
                   f"{sum(x['beyond_spread'] for x in rows)} / {len(rows)} (in direction: "
                   f"{sum(x['holds'] for x in rows)} / {len(rows)}) | all | |")
    r = res.get("pipeline")
    if r and r.get("figures"):
        g = r["figures"]
        out.append(f"| end-to-end | demo pipeline total wall time | "
                   f"{g['total_wall_time_s'] / 60:.1f} min{'' if g['complete'] else ' (incomplete)'}"
                   f" | ~15 min (README, idle 2-core CPU) | |")
    return out + [""]


def render(quick: bool) -> str:
    names = ("search_step", "inference", "inference_tuned_malloc", "latency_model",
             "latency_model_tuned_malloc", "remap_ablation", "pipeline")
    res = {n: C.read_result(n, quick) for n in names}
    run = C.read_result("run_all", quick) or {}
    doc = (os.path.join(C.QUICK_RESULTS, "benchmarks.md") if quick
           else os.path.join(C.REPO, "docs", "benchmarks.md"))
    m = run.get("machine") or next((r["machine"] for r in res.values() if r), {})
    lines = ["# Benchmarks", "",
             "<!-- generated by bench/run_all.py (bench/make_doc.py) from bench/results/*.json;"
             " do not edit by hand -->", ""]
    if quick:
        lines += ["**Smoke run (`--quick`): tiny sizes and repeats; these numbers mean "
                  "nothing.**", ""]
    full = run.get("full_run") or {"date": run.get("date", m.get("date", "?")),
                                   "git": m.get("git", "?"), "load_start": run.get(
                                       "load_start", m.get("load_average")),
                                   "load_end": run.get("load_end", "?")}
    part = run.get("partial_run")
    lines += [f"Generated by `make bench` (`python bench/run_all.py{' --quick' if quick else ''}`)"
              f" on {full.get('date') or '?'}, commit `{full.get('git') or '?'}`"
              + (f"; the whole run took **{run['wall_time_s'] / 60:.1f} min**"
                 if run.get("wall_time_s") else "") + "."
              + (f" Updated on {part['date']} (commit `{part['git']}`) by `--only "
                 f"{','.join(part['scripts'])}`: those sections come from that run, the others "
                 "from the full run." if part else ""), "",
              f"Machine: {_machine(m)}; the timing benchmarks run with 1 torch thread (each "
              "section says). Load average (1/5/15 min) at the start "
              f"{full.get('load_start')}, at the end "
              f"{full.get('load_end') or '?'}: other processes shared the {m.get('logical_cores')} "
              "cores, so absolute times are inflated and noisy; the figures below are ratios of "
              "variants measured side by side in one process (interleaved, medians), and with "
              "one thread on the process CPU-time clock, which other processes cannot "
              "inflate. Raw results with every sample: `bench/results/*.json`.", ""]
    if run.get("benches"):
        lines += ["| script | exit | wall time (min) |", "|---|---|---|"]
        for b in run["benches"]:
            lines.append(f"| `bench/{b['script']}` | {b['returncode']} | {b['wall_s'] / 60:.1f} |")
        lines.append("")
    lines += ["## Summary", ""] + summary_rows(res)
    lines += sec_search(res["search_step"], doc)
    lines += sec_inference(res["inference"], res.get("inference_tuned_malloc"), doc)
    lines += sec_latency(res.get("latency_model"), res.get("latency_model_tuned_malloc"), doc)
    lines += sec_ablation(res["remap_ablation"], doc)
    lines += sec_pipeline(res["pipeline"], doc)
    lines += ["## Reproducing", "",
              "`make bench` (= `python bench/run_all.py`) runs everything (the run above: "
              f"{(run.get('wall_time_s') or 0) / 60:.0f} minutes on a shared 2-core CPU, most of "
              "it the remapping ablation) and rewrites this page; `python bench/run_all.py --quick` is a "
              "smoke run of a few minutes that writes to `bench/results/quick/` instead. "
              "Each script runs alone too (`python bench/bench_search_step.py --help`). "
              "`python bench/make_doc.py` re-renders this page from the stored results.", ""]
    text = "\n".join(lines).replace("\n\n\n", "\n\n")
    os.makedirs(os.path.dirname(doc), exist_ok=True)
    with open(doc, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"[bench] wrote {os.path.relpath(doc, C.REPO)}")
    return doc


def main(argv=None) -> int:
    ap = C.arg_parser(__doc__)
    a = ap.parse_args(argv)
    render(a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
