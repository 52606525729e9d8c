"""What the report shows, gathered from a pipeline's outputs: the evaluate stage's numbers, the
searched / derived / seed architectures, the search's last logged losses and plots, the stage
manifests' wall times (summed over a resumed stage's runs), and the cost and latency of both
networks (measured here, see :mod:`.measure`), and the searched-vs-controls comparison
(:func:`comparison_rows`). :mod:`fna_d2.report` formats the result."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from ..arch import SKIP, Arch, load_arch
from ..report import ReportData, pipeline_notes
from ..arch import seed_arch
from ..tasks import NET_NAMES, task_of
from ..utils import read_json
from .measure import measure_costs, measure_nets, measurement_config, measurement_configs

#: what the stages are handed: the running :class:`~fna_d2.pipeline.core.Pipeline` (named, not
#: imported: core builds on this module, so importing it back would make a cycle)
Pipeline = Any

__all__ = ["gather_report_data", "search_summary", "comparison_rows", "BACKBONE_COLUMNS"]

#: the cost columns of the comparison table (as :func:`~fna_d2.cost.cost_columns` names them)
BACKBONE_COLUMNS = ("backbone MAdds (G)", "backbone Params (M)")

#: the search's own plots the report shows: file in search/ -> caption
SEARCH_PLOTS = {
    "alpha_heatmap.png": "Architecture parameters softmax(alpha) at the end of the search",
    "search_curves.png": "Search: losses and expected cost",
}


def search_summary(search_dir: str, searched: Optional[Arch]) -> Dict[str, object]:
    """A few numbers about the search: skip share and the last logged losses/cost."""
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


def _made(rec: Dict[str, Any], tol: float) -> str:
    """How a control architecture was made, from its ``controls.json`` row."""
    method = str(rec.get("method", ""))
    if method.startswith("shrink-"):
        how = {"depth": "layers turned into skip", "expansion": "expansion 6 -> 3"}.get(
            method[len("shrink-"):], method)
        return f"the seed shrunk by hand ({how}) to the step nearest the searched cost, remapped"
    return (f"random path of the search space, backbone MAdds within {tol:.0%} of the "
            f"searched ({method} sampling), remapped")


def comparison_rows(pipe: Pipeline, evals: Dict[str, dict], metric: str,
                    cost: Dict[str, Dict[str, float]], size) -> List[Dict[str, Any]]:
    """Rows of the searched-vs-controls table: the searched (adapted) net, each control, the
    seed baseline; each with how it was made, ``metric`` and :data:`BACKBONE_COLUMNS` (the
    controls' costs measured here from the adapt config with their arch files). Empty
    without controls."""
    if not pipe.control_names:
        return []
    acfg = pipe.stage_cfg("adapt")
    arch_files = {n: os.path.join(pipe.stage_dir("controls"), f"{n}.json")
                  for n in pipe.control_names}
    ccost = measure_costs({n: measurement_config(acfg, p) for n, p in arch_files.items()
                           if os.path.isfile(p)}, size)

    def row(name: str, stage: str, made: str, c: Dict[str, float]) -> Dict[str, Any]:
        numbers = (evals.get(stage) or {}).get("numbers") or {}
        out: Dict[str, Any] = {"network": name, "made": made, metric: numbers.get(metric)}
        out.update({k: c.get(k) for k in BACKBONE_COLUMNS})
        return out

    rows = [row(NET_NAMES["adapt"], "adapt", "searched (derived), remapped from the seed",
                cost.get(NET_NAMES["adapt"], {}))]
    for n in pipe.control_names:
        rows.append(row(n, f"control_{n}", _made(pipe.control_record(n),
                                                 pipe.controls.tolerance), ccost.get(n, {})))
    if "baseline" in pipe.stages():
        rows.append(row(NET_NAMES["baseline"], "baseline",
                        "the seed, its ImageNet-trained weights", cost.get(NET_NAMES["baseline"],
                                                                           {})))
    return rows


def gather_report_data(pipe: Pipeline) -> ReportData:
    """The :class:`~fna_d2.report.ReportData` of ``pipe``'s current outputs (builds both
    networks on the CPU to measure them)."""
    acfg = pipe.stage_cfg("adapt")
    task, metric = task_of(acfg)
    searched = load_arch(pipe.searched_arch_path)
    evals = read_json(os.path.join(pipe.stage_dir("evaluate"), "results.json")) or {}
    results = {NET_NAMES.get(s, s): v.get("numbers", {}) for s, v in evals.items()
               if s in NET_NAMES}  # the controls are in the comparison

    # cost + latency: derived (adapt config) vs seed (same config, seed architecture)
    size = tuple(int(s) for s in acfg.MODEL.FNA.SEARCH.COST_INPUT_SIZE)
    repeats = int(acfg.MODEL.FNA.SEARCH.LATENCY_REPEATS)
    cost, lat = measure_nets(measurement_configs(acfg), size, repeats)

    search_dir = pipe.stage_dir("search")
    wall: Dict[str, Optional[float]] = {}
    notes_by_stage: Dict[str, str] = {}
    for s in pipe.stages():
        if s == "report":
            continue
        man = pipe.manifest(s) or {}
        wall[s] = man.get("wall_time_s")  # the sum over the stage's runs (manifest.end_run)
        note = f"{man.get('status', 'not run')} {man.get('finished', '')}".strip()
        runs = len(man.get("runs") or [])
        notes_by_stage[s] = note + (f", {runs} runs (resumed)" if runs > 1 else "")

    return ReportData(
        title=f"FNA pipeline report: {os.path.basename(pipe.config_file)}",
        task=task, metric=metric, seed=seed_arch(acfg.MODEL.FNA.SEED), searched=searched,
        derived=load_arch(pipe.derived_arch_path), results=results, cost=cost,
        cost_input_size=size, latency=lat, latency_input_size=size, wall_times=wall,
        stage_notes=notes_by_stage, search_summary=search_summary(search_dir, searched),
        notes=pipeline_notes(acfg.SEED, repeats),
        configs={s: os.path.relpath(p, os.getcwd()) for s, p in pipe.config_files.items()
                 if p and not s.startswith("control_")},  # the controls': the adapt config
        figures={caption: os.path.join(search_dir, fname)
                 for fname, caption in SEARCH_PLOTS.items()},
        comparison=comparison_rows(pipe, evals, metric, cost, size),
    )
