"""The pipeline's ``report.md``: searched architecture, cost, latency, accuracy, the searched net
beside its cost-matched controls, wall times, plots.

Pure formatting: :func:`write_report_files` takes plain data (a :class:`ReportData`, gathered
by :mod:`fna_d2.pipeline.report_data`) and writes Markdown plus its PNGs (the bar chart; the
search's own plots copied next to it); nothing here trains, measures or reads a pipeline's
state.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .arch import SKIP, Arch
from .utils import fmt_number, fmt_seconds, pyplot, save_figure, write_text

__all__ = ["ReportData", "arch_table", "comparison_section", "plot_metric_bars",
           "pipeline_notes", "write_report", "write_report_files", "NO_CONTROLS"]

#: the report's line when the pipeline trained no controls
NO_CONTROLS = ("No controls were trained (`FNA_PIPELINE.CONTROLS` is empty): add "
               "`FNA_PIPELINE.CONTROLS \"['random', 'shrunk_depth']\"` to the pipeline's "
               "overrides (or its config) to train cost-matched random and shrunk-seed "
               "architectures and compare them with the searched one here (docs/controls.md).")


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
    #: caption -> image file (e.g. the search's heat map) to copy next to the report
    figures: Dict[str, str] = field(default_factory=dict)
    #: searched-vs-controls rows, the searched net first: "network", "made", the metric,
    #: "backbone MAdds (G)", "backbone Params (M)" (empty: no controls were trained)
    comparison: List[Dict[str, object]] = field(default_factory=list)


def _cell(v: object, digits: int) -> str:
    """A table cell: numbers with ``digits`` decimals, "-" where a number is missing."""
    if v is None or isinstance(v, (int, float)):
        return fmt_number(None if v is None else float(v), digits, missing="-")
    return str(v)


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


def _delta(v: object, ref: object, relative: bool = False) -> str:
    """``v - ref`` (``relative``: ``v / ref - 1`` in %) as a signed cell; "-" without both."""
    if not isinstance(v, (int, float)) or not isinstance(ref, (int, float)):
        return "-"
    if relative:
        return f"{v / ref - 1:+.1%}" if ref else "-"
    return f"{v - ref:+.2f}"


def comparison_section(rows: Sequence[Dict[str, object]], metric: str) -> List[str]:
    """The "Searched vs controls" section's lines: a table of ``rows`` (the first, the searched
    net, is the reference of the deltas) and what it measures; :data:`NO_CONTROLS` without
    rows."""
    if not rows:
        return [NO_CONTROLS]
    ref = rows[0]
    madds, params = "backbone MAdds (G)", "backbone Params (M)"
    out = [f"| network | made as | {metric} | {metric} - searched | {madds} | "
           f"MAdds vs searched | {params} |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        cells = [str(r.get("network")), str(r.get("made", "")), _cell(r.get(metric), 2),
                 "(reference)" if i == 0 else _delta(r.get(metric), ref.get(metric)),
                 _cell(r.get(madds), 3),
                 "(reference)" if i == 0 else _delta(r.get(madds), ref.get(madds), True),
                 _cell(r.get(params), 3)]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "What this measures: the searched net against the controls, architectures of "
            "the same backbone cost (random paths of the same search space, or the seed shrunk "
            "by hand) remapped from the same seed and trained with the same adaptation config "
            "and schedule, is what the search added beyond choosing a cost. A control against "
            "the seed baseline is not the cost of remapping alone: the seed differs in "
            "architecture (more MAdds) and in its weights, ImageNet-trained for that "
            "architecture rather than remapped into a new one. One training run per network "
            "(see the notes): a difference within the run-to-run spread means nothing."]
    return out


def plot_metric_bars(path: str, values: Dict[str, Optional[float]], metric: str,
                     title: str = "") -> str:
    """Bar chart of ``metric`` per network (missing values drawn as empty bars); returns path."""
    plt = pyplot()
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
    return save_figure(fig, path)


def _kv_table(rows: Dict[str, Dict[str, float]], columns: Sequence[str],
              digits: Dict[str, int]) -> str:
    lines = ["| network | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, vals in rows.items():
        cells = [_cell(vals.get(c), digits.get(c, 2)) for c in columns]
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

    out += ["## Searched vs controls", ""] + comparison_section(data.comparison, data.metric)
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
        out.append("Params and MAdds (conv and linear layers), as `python -m fna_d2.cost` "
                   "counts them" + (f" at {size} input:" if size else ":"))
        cols = list(next(iter(data.cost.values())))
        out += ["", _kv_table(data.cost, cols, {c: 3 for c in cols})]
        names = list(data.cost)
        if len(names) == 2:
            for key in ("MAdds (G)", "backbone MAdds (G)"):
                line = _ratio_line(data.cost, key, names[0], names[1], "G")
                if line:
                    out += ["", line]
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

    return write_text(path, "\n".join(out).rstrip() + "\n")


def write_report_files(path: str, data: ReportData, figure_dir: str) -> str:
    """Write the report of ``data`` to ``path`` with its images in ``figure_dir``: the
    ``data.figures`` copied there, then a bar chart of the metric per network
    (``metric_bars.png``). Returns ``path``."""
    os.makedirs(figure_dir, exist_ok=True)
    base = os.path.dirname(os.path.abspath(path))
    plots = dict(data.plots)
    for caption, src in data.figures.items():
        if os.path.isfile(src):
            dst = os.path.join(figure_dir, os.path.basename(src))
            shutil.copyfile(src, dst)
            plots[caption] = os.path.relpath(dst, base)
    values = {n: r.get(data.metric) for n, r in data.results.items()}
    if values:
        bars = plot_metric_bars(os.path.join(figure_dir, "metric_bars.png"), values, data.metric)
        plots[f"{data.metric} of the searched network vs the seed"] = os.path.relpath(bars, base)
    return write_report(path, dataclasses.replace(data, plots=plots))


def pipeline_notes(train_seed: int, latency_repeats: int) -> List[str]:
    """The report's notes on how its numbers were obtained (``SEED`` of the trained stages,
    ``MODEL.FNA.SEARCH.LATENCY_REPEATS``)."""
    return [
        "Params/MAdds: 'Params (M)' / 'MAdds (G)' are the whole model, the other columns its "
        "parts, as `python -m fna_d2.cost --config-file` prints them: backbone (the FNA "
        "network; with SSDLite its 320->1280 conv too), fpn (RetinaNet) or extras (SSDLite's "
        "extra layers), head (detection head, or DeepLab's ASPP head).",
        "Latency: backbone forward pass on one core of this machine's CPU (1 torch "
        "thread), batch 1, eval mode; 3 rounds of "
        f"{int(latency_repeats)} timed runs "
        "(MODEL.FNA.SEARCH.LATENCY_REPEATS) after warm-up: median = the middle round's "
        "median, min / max over the round medians. Other load on the machine inflates it.",
        "The searched architecture is the per-layer argmax of alpha; the derived network "
        "moves skips to the end of each stage and is trained from the remapped seed "
        "(stage 'adapt').",
        f"Accuracy: one training run per network (SEED {train_seed}). On small data the "
        f"run-to-run spread can exceed the difference shown: re-run with another seed "
        f"(e.g. `--output-dir OTHER SEED {int(train_seed) + 1}`) and compare the runs with "
        f"`python -m fna_d2.compare DIR OTHER ...` before reading a small gap as a gain.",
    ]
