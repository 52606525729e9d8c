"""The pipeline's ``report.md``: searched architecture, cost, latency, accuracy, wall times, plots.

Pure formatting: :func:`write_report` takes plain data (see :class:`ReportData`) gathered by
:mod:`fna_d2.pipeline` and writes Markdown plus a bar chart PNG; nothing here trains or
measures.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .arch import SKIP, Arch

__all__ = ["ReportData", "arch_table", "plot_metric_bars", "write_report", "fmt_seconds"]


@dataclass
class ReportData:
    """Everything the report shows. Missing pieces are ``None`` / empty and reported as such."""

    title: str
    task: str                                  # "detection" or "segmentation"
    metric: str                                # "AP" or "mIoU"
    seed: Arch
    searched: Optional[Arch] = None            # as written by the search (before derive)
    derived: Optional[Arch] = None             # what adapt trains (skips moved to the end)
    results: Dict[str, Dict[str, float]] = field(default_factory=dict)   # net -> metrics
    cost: Dict[str, Dict[str, float]] = field(default_factory=dict)      # net -> Params/MAdds
    cost_input_size: Optional[Sequence[int]] = None
    latency: Dict[str, Dict[str, float]] = field(default_factory=dict)   # net -> ms stats
    latency_input_size: Optional[Sequence[int]] = None
    wall_times: Dict[str, Optional[float]] = field(default_factory=dict)  # stage -> seconds
    stage_notes: Dict[str, str] = field(default_factory=dict)            # stage -> status
    search_summary: Dict[str, object] = field(default_factory=dict)      # alpha stats etc.
    plots: Dict[str, str] = field(default_factory=dict)  # caption -> path relative to report
    notes: List[str] = field(default_factory=list)
    configs: Dict[str, str] = field(default_factory=dict)               # stage -> config file


def fmt_seconds(s: Optional[float]) -> str:
    """``3725.2 -> "1 h 02 min"``, ``75 -> "1 min 15 s"``, ``None -> "-"``."""
    if s is None:
        return "-"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _fmt(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def arch_table(arch: Arch, seed: Arch, searched: Optional[Arch] = None) -> str:
    """Markdown table, one row per stage: widths, stride, seed ops, (searched ops,) derived ops.

    ``searched`` (if given) shows the per-layer argmax in search order; ``arch`` is the
    derived net (skips moved to the end)."""
    head = ["stage", "Cin->Cout", "stride", "seed ops"]
    if searched is not None:
        head.append("searched (argmax)")
    head += ["derived (trained)", "layers (non-skip)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s, st in enumerate(arch.stages):
        seed_ops = " ".join(seed.stages[s].ops) if s < len(seed.stages) else "-"
        cells = [str(s), f"{st.cin}->{st.cout}", str(st.stride), seed_ops]
        if searched is not None:
            cells.append(" ".join(searched.stages[s].ops) if s < len(searched.stages) else "-")
        real = sum(op != SKIP for op in st.ops)
        cells += [" ".join(st.ops), f"{len(st.ops)} ({real})"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_metric_bars(path: str, values: Dict[str, Optional[float]], metric: str,
                     title: str = "") -> str:
    """Bar chart of ``metric`` per network (missing values drawn as empty bars); returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(values)
    nums = [values[n] if values[n] is not None else 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(4.0 + 0.6 * len(names), 3.2))
    colors = ["#d9534f" if "FNA" in n or "searched" in n else "#5b8fd9" for n in names]
    bars = ax.bar(names, nums, color=colors)
    for b, n in zip(bars, names):
        label = "n/a" if values[n] is None else f"{values[n]:.2f}"
        ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set_ylabel(metric)
    top = max(nums) if nums and max(nums) > 0 else 1.0
    ax.set_ylim(0, top * 1.2)
    ax.set_title(title or f"{metric} on the validation set")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _kv_table(rows: Dict[str, Dict[str, float]], columns: Sequence[str],
              digits: Dict[str, int]) -> str:
    lines = ["| network | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, vals in rows.items():
        cells = [_fmt(vals.get(c), digits.get(c, 2)) if isinstance(vals.get(c), (int, float))
                 or vals.get(c) is None else str(vals.get(c)) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio_line(rows: Dict[str, Dict[str, float]], key: str, a: str, b: str, unit: str) -> str:
    va, vb = rows.get(a, {}).get(key), rows.get(b, {}).get(key)
    if va is None or vb is None or not vb:
        return ""
    return f"{a} / {b} {key}: {va / vb:.3f} ({va - vb:+.3f} {unit})."


def write_report(path: str, data: ReportData) -> str:
    """Write ``data`` as Markdown to ``path`` (plots are referenced by relative path)."""
    out: List[str] = [f"# {data.title}", ""]
    out.append(f"Task: **{data.task}**, metric: **{data.metric}**. Generated by "
               "`python -m fna_d2.pipeline`; numbers come from the stage outputs next to "
               "this file.")
    out.append("")
    if data.configs:
        out += ["Configs: " + ", ".join(f"{k}: `{v}`" for k, v in data.configs.items()), ""]

    out += ["## Accuracy", ""]
    if data.results:
        cols = list(dict.fromkeys([data.metric] + [k for v in data.results.values() for k in v]))
        out.append(_kv_table(data.results, cols, {}))
        if any(v.get(data.metric) is None for v in data.results.values()):
            out += ["", f"'-': no {data.metric} (detectron2 reports NaN when a detector makes "
                    "no detection above the test score threshold, e.g. after very few "
                    "iterations)."]
        names = list(data.results)
        if len(names) == 2:
            va = data.results[names[0]].get(data.metric)
            vb = data.results[names[1]].get(data.metric)
            if va is not None and vb is not None:
                out += ["", f"{names[0]} - {names[1]}: {va - vb:+.2f} {data.metric}."]
    else:
        out.append("No evaluation results (the evaluate stage did not run).")
    out.append("")

    out += ["## Searched architecture", ""]
    if data.derived is not None:
        out.append(arch_table(data.derived, data.seed, data.searched))
        n_skip = sum(op == SKIP for st in data.derived.stages for op in st.ops)
        n_layers = sum(len(st.ops) for st in data.derived.stages)
        out += ["", f"{n_layers - n_skip} real layers + {n_skip} skip (the seed has "
                f"{sum(len(st.ops) for st in data.seed.stages)} layers)."]
    else:
        out.append("No searched architecture (the search stage did not run).")
    if data.search_summary:
        out += ["", "Search: " + ", ".join(f"{k} = {v}" for k, v in data.search_summary.items())
                + "."]
    out.append("")

    out += ["## Cost of the backbones", ""]
    if data.cost:
        size = "x".join(str(int(s)) for s in data.cost_input_size or ())
        out.append("Params and MAdds (conv and linear layers, `fna_d2.cost`)"
                   + (f" at {size} input:" if size else ":"))
        cols = list(next(iter(data.cost.values())))
        out += ["", _kv_table(data.cost, cols, {c: 3 for c in cols})]
        names = list(data.cost)
        if len(names) == 2:
            out += ["", _ratio_line(data.cost, "MAdds (G)", names[0], names[1], "G")]
    else:
        out.append("Cost not measured.")
    out.append("")
    if data.latency:
        size = "x".join(str(int(s)) for s in data.latency_input_size or ())
        out.append("CPU latency (1 thread) of the backbone forward pass (batch 1"
                   + (f", {size}" if size else "") + ", this machine; median over repeats):")
        cols = list(next(iter(data.latency.values())))
        out += ["", _kv_table(data.latency, cols, {c: 2 for c in cols})]
        names = list(data.latency)
        if len(names) == 2:
            out += ["", _ratio_line(data.latency, "median (ms)", names[0], names[1], "ms")]
        out.append("")

    out += ["## Stage wall times", "", "| stage | wall time | status |", "|---|---|---|"]
    for stage, secs in data.wall_times.items():
        out.append(f"| {stage} | {fmt_seconds(secs)} | {data.stage_notes.get(stage, '')} |")
    total = sum(s for s in data.wall_times.values() if s)
    out += [f"| total | {fmt_seconds(total)} | |", ""]

    if data.plots:
        out += ["## Plots", ""]
        for caption, rel in data.plots.items():
            out += [f"**{caption}**", "", f"![{caption}]({rel})", ""]
    if data.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in data.notes] + [""]

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out).rstrip() + "\n")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- gathering
def _backbone(model):
    """The bottom-up network of a detectron2 model (inside an FPN or not)."""
    bb = model.backbone
    return getattr(bb, "bottom_up", bb)


def _measure_nets(cfgs: Dict[str, "object"], size: Sequence[int], repeats: int
                  ) -> "tuple[Dict[str, Dict[str, float]], Dict[str, Dict[str, float]]]":
    """Params/MAdds (backbone and whole model, ``fna_d2.cost``) and CPU backbone latency."""
    import torch
    from detectron2.modeling import build_model

    from .cost import detectron2_model_cost
    from .latency import time_module

    cost: Dict[str, Dict[str, float]] = {}
    lat: Dict[str, Dict[str, float]] = {}
    for name, cfg in cfgs.items():
        model = build_model(cfg).eval()
        rep = detectron2_model_cost(model, tuple(size))
        cost[name] = {"Params (M)": rep["backbone"].params / 1e6,
                      "MAdds (G)": rep["backbone"].madds / 1e9,
                      "model Params (M)": rep["total"].params / 1e6,
                      "model MAdds (G)": rep["total"].madds / 1e9}
        bb = _backbone(model)
        div = getattr(model.backbone, "size_divisibility", 0) or 1
        h, w = (-(-int(s) // div) * div for s in size)
        x = torch.randn(1, 3, h, w)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # single-core latency: stable under load, mobile-like
        try:
            times = [time_module(bb, x, repeats=max(1, repeats)) for _ in range(3)]
        finally:
            torch.set_num_threads(threads)
        lat[name] = {"median (ms)": sorted(times)[1], "min (ms)": min(times),
                     "max (ms)": max(times)}
    return cost, lat


def _search_summary(search_dir: str, searched: Optional[Arch]) -> Dict[str, object]:
    """A few numbers about the search: skip share and the last logged losses/cost."""
    import json

    out: Dict[str, object] = {}
    if searched is not None:
        ops = [op for st in searched.stages[1:] for op in st.ops]
        out["skip layers"] = f"{sum(o == SKIP for o in ops)}/{len(ops)}"
    path = os.path.join(search_dir, "metrics.json")
    last: Dict[str, float] = {}
    if os.path.isfile(path):
        with open(path, "r", encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                for k, v in rec.items():
                    if isinstance(v, (int, float)) and ("cost" in k or "loss" in k.lower()
                                                        or "entropy" in k or k == "iteration"):
                        last[k] = v
    for k in sorted(last):
        if (k == "iteration" or "cost" in k or "entropy" in k
                or k in ("total_loss", "arch/total_loss")):
            v = last[k]
            out[k] = f"{v:.4g}" if isinstance(v, float) else v
    return out


def build_report(pipe, spec) -> str:
    """Gather the stage outputs of ``pipe`` (a :class:`fna_d2.pipeline.Pipeline`) and write
    ``OUTPUT_DIR/report.md`` plus its PNGs in ``OUTPUT_DIR/report/``. Returns the path."""
    import json
    import shutil

    from .arch import load_arch
    from .tasks import NET_NAMES, task_of
    from .seeds_arch import seed_arch

    acfg = pipe.stage_cfg("adapt")
    task, metric = task_of(acfg)
    seed = seed_arch(acfg.MODEL.FNA.SEED)
    searched = load_arch(pipe.searched_arch_path)
    derived = load_arch(pipe.derived_arch_path)
    os.makedirs(spec.dir, exist_ok=True)

    with open(os.path.join(pipe.stage_dir("evaluate"), "results.json"), encoding="utf-8") as f:
        evals = json.load(f)
    results = {NET_NAMES.get(s, s): v.get("numbers", {}) for s, v in evals.items()}

    # cost + latency: derived (adapt config) vs seed (same config, seed architecture)
    size = tuple(int(s) for s in acfg.MODEL.FNA.SEARCH.COST_INPUT_SIZE)
    cfgs = {}
    for name, arch_path in (("FNA (searched)", acfg.MODEL.FNA.ARCH), ("MobileNetV2 (seed)", "")):
        c = acfg.clone()
        c.defrost()
        c.MODEL.DEVICE = "cpu"
        c.MODEL.WEIGHTS = ""
        c.MODEL.FNA.NETWORK = "derived"
        c.MODEL.FNA.ARCH = arch_path
        for key in ("MODEL.FNA.NORM", "MODEL.SEM_SEG_HEAD.NORM", "MODEL.FPN.NORM"):
            node, leaf = c, key.split(".")
            for part in leaf[:-1]:
                node = node[part]
            if node[leaf[-1]] == "SyncBN":  # measured in one process
                node[leaf[-1]] = "BN"
        c.freeze()
        cfgs[name] = c
    cost, lat = _measure_nets(cfgs, size, int(acfg.MODEL.FNA.SEARCH.LATENCY_REPEATS))

    plots: Dict[str, str] = {}
    search_dir = pipe.stage_dir("search")
    for fname, caption in (("alpha_heatmap.png", "Architecture parameters softmax(alpha) at the "
                            "end of the search"),
                           ("search_curves.png", "Search: losses and expected cost")):
        src = os.path.join(search_dir, fname)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(spec.dir, fname))
            plots[caption] = os.path.join("report", fname)
    values = {n: r.get(metric) for n, r in results.items()}
    if values:
        plot_metric_bars(os.path.join(spec.dir, "metric_bars.png"), values, metric)
        plots[f"{metric} of the searched network vs the seed"] = os.path.join(
            "report", "metric_bars.png")

    wall: Dict[str, Optional[float]] = {}
    notes_by_stage: Dict[str, str] = {}
    for s in pipe.stages():
        if s == "report":
            continue
        man = pipe.manifest(s) or {}
        wall[s] = man.get("wall_time_s")
        notes_by_stage[s] = f"{man.get('status', 'not run')} {man.get('finished', '')}".strip()

    notes = [
        "Params/MAdds: backbone columns are the bottom-up network only (stem + stages, no "
        "1280 conv); 'model' columns include FPN/ASPP and heads (fna_d2.cost convention).",
        "Latency: backbone forward pass on one core of this machine's CPU (1 torch "
        "thread), batch 1, eval mode; 3 rounds of "
        f"{int(acfg.MODEL.FNA.SEARCH.LATENCY_REPEATS)} timed runs "
        "(MODEL.FNA.SEARCH.LATENCY_REPEATS) after warm-up: median = the middle round's "
        "median, min / max over the round medians. Other load on the machine inflates it.",
        "The searched architecture is the per-layer argmax of alpha; the derived network "
        "moves skips to the end of each stage and is trained from the remapped seed "
        "(stage 'adapt').",
        f"Accuracy: one training run per network (SEED {acfg.SEED}). On small data the "
        f"run-to-run spread can exceed the difference shown: re-run with another seed "
        f"(e.g. `--output-dir OTHER SEED {int(acfg.SEED) + 1}`) and compare the runs with "
        f"`python -m fna_d2.compare DIR OTHER ...` before reading a small gap as a gain.",
    ]
    data = ReportData(
        title=f"FNA pipeline report: {os.path.basename(pipe.config_file)}",
        task=task, metric=metric, seed=seed, searched=searched, derived=derived,
        results=results, cost=cost, cost_input_size=size, latency=lat,
        latency_input_size=size, wall_times=wall, stage_notes=notes_by_stage,
        search_summary=_search_summary(search_dir, searched), plots=plots, notes=notes,
        configs={s: os.path.relpath(p, os.getcwd()) for s, p in pipe.config_files.items()
                 if p},
    )
    return write_report(os.path.join(pipe.root, "report.md"), data)
