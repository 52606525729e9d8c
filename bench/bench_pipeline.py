#!/usr/bin/env python
"""End-to-end: wall time of each stage of the demo pipeline (``python -m fna_d2.pipeline
--config-file configs/demo/trees_pipeline.yaml``) and the total.

The figures are read from the stage manifests (``<root>/<stage>/stage.json``: status,
``wall_time_s``, start / finish time) that the pipeline writes. By default the most recent
complete run among ``output/demo/trees`` (``make demo``) and ``output/bench/demo_trees`` is
read, and the JSON says which one and when it ran: those numbers were measured by that
pipeline run, not by this script. ``--run`` first runs the demo pipeline into
``output/bench/demo_trees`` (``--force`` re-runs finished stages), so the numbers are
measured now; that takes the demo's full time (about 15 minutes on an idle 2-core machine,
several times longer on a loaded one). The evaluation numbers (AP of the searched network
and of the MobileNetV2 baseline) are copied from the pipeline's ``evaluate/results.json``.
The total is set against the README's expectation (:func:`checks`).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from fna_d2.pipeline import STAGES  # noqa: E402
from fna_d2.utils import pyplot, read_json  # noqa: E402

NAME = "pipeline"
ROOTS = ("output/demo/trees", "output/bench/demo_trees")
PIPELINE_CONFIG = "configs/demo/trees_pipeline.yaml"
#: what the README promises for the demo pipeline
EXPECTED = "~15 min (README, idle 2-core CPU)"


def read_root(root: str) -> Optional[Dict[str, Any]]:
    stages: Dict[str, Any] = {}
    for s in STAGES:
        m = read_json(os.path.join(C.REPO, root, s, "stage.json"))
        if m is None:
            continue
        stages[s] = {"status": m.get("status"), "wall_time_s": m.get("wall_time_s"),
                     "started": m.get("started"), "finished": m.get("finished")}
    if not stages:
        return None
    done = [s for s in STAGES if stages.get(s, {}).get("status") == "done"]
    out = {"root": root, "stages": stages, "complete": len(done) == len(STAGES),
           "done_stages": done,
           "total_wall_time_s": sum(float(v["wall_time_s"] or 0) for v in stages.values()),
           "last_finished": max((v.get("finished") or "" for v in stages.values()), default="")}
    res = read_json(os.path.join(C.REPO, root, "evaluate", "results.json"))
    if res is not None:
        out["metrics"] = {k: v.get("numbers") for k, v in res.items() if isinstance(v, dict)}
    rep = os.path.join(C.REPO, root, "report.md")
    out["report"] = os.path.relpath(rep, C.REPO) if os.path.isfile(rep) else None
    return out


def run_pipeline(root: str, force: bool) -> Dict[str, Any]:
    args = ["-m", "fna_d2.pipeline", "--config-file", PIPELINE_CONFIG, "--output-dir", root]
    if force:
        args += ["--force", ",".join(STAGES)]
    log = os.path.join(C.REPO, "output", "bench", "demo_trees_pipeline.log")
    t0, c0 = time.perf_counter(), os.times()
    proc = C.run_python(args, log_path=log)
    c1 = os.times()
    return {"returncode": proc.returncode, "wall_s": time.perf_counter() - t0,
            "children_cpu_s": (c1.children_user - c0.children_user)
            + (c1.children_system - c0.children_system), "log": os.path.relpath(log, C.REPO)}


def plot(run: Dict[str, Any], path: str) -> str:
    plt = pyplot()
    st = [s for s in STAGES if s in run["stages"]]
    vals = [float(run["stages"][s]["wall_time_s"] or 0) / 60 for s in st]
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.barh(range(len(st)), vals, color="#48c")
    ax.set_yticks(range(len(st)), st)
    ax.invert_yaxis()
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=7)
    ax.set_xlabel("wall time (min)")
    ax.set_title(f"demo pipeline stages, total {sum(vals):.1f} min", fontsize=9)
    return C.finish_fig(fig, path)


def checks(doc: Dict[str, Any], default: Optional[Dict[str, Any]] = None
           ) -> List[Dict[str, Any]]:
    """``total_wall_time`` (s) of the run read, against the README's expectation (no pass/fail:
    the machine's load decides it). ``default`` is unused."""
    g = doc.get("figures")
    if not g:
        return []
    return [C.check("total_wall_time", g["total_wall_time_s"], EXPECTED)]


def main(argv=None) -> int:
    ap = C.arg_parser(__doc__, "(reads manifests; nothing to shrink)")
    ap.add_argument("--run", action="store_true", help="run the demo pipeline first")
    ap.add_argument("--force", action="store_true", help="with --run: re-run finished stages")
    ap.add_argument("--root", default="", help="pipeline output dir to read")
    a = ap.parse_args(argv)
    os.chdir(C.REPO)
    t0 = time.perf_counter()
    machine = C.machine_info()
    notes: List[str] = []
    ran = None
    if a.run:
        root = a.root or "output/bench/demo_trees"
        print(f"[pipeline] running the demo pipeline into {root} (long)", flush=True)
        ran = run_pipeline(root, a.force)
        if ran["returncode"] != 0:
            notes.append(f"the pipeline run exited with {ran['returncode']} (see {ran['log']})")
        runs = [r for r in [read_root(root)] if r]
    else:
        runs = [r for r in (read_root(x) for x in ([a.root] if a.root else ROOTS)) if r]
    # the most complete run, then the most recent
    best = max(runs, key=lambda r: (r["complete"], len(r["done_stages"]),
                                    r["last_finished"] or ""), default=None)
    img = None
    if best is None:
        notes.append("no demo pipeline output found (output/demo/trees, output/bench/demo_trees):"
                     " run `make demo` or `python bench/bench_pipeline.py --run`")
        print("[pipeline] " + notes[-1])
    else:
        src = ("measured by this script (--run)" if ran else
               f"read from the stage manifests of the pipeline run in {best['root']} "
               f"(finished {best['last_finished'] or 'n/a'}), not measured by this script")
        notes.append(src)
        if not best["complete"]:
            notes.append(f"that run is incomplete: stages done: {', '.join(best['done_stages'])}")
        for s in STAGES:
            if s in best["stages"]:
                v = best["stages"][s]
                print(f"[pipeline] {s:<9} {v['status']:<8} {float(v['wall_time_s'] or 0):8.1f} s")
        print(f"[pipeline] total {best['total_wall_time_s']:.1f} s ({src})", flush=True)
        img = plot(best, os.path.join(C.img_dir(a.quick), "bench_pipeline.png"))
    doc = {
        "machine": machine, "wall_time_s": time.perf_counter() - t0,
        "settings": {"config": PIPELINE_CONFIG, "ran_now": bool(ran)},
        "figures": best, "run": ran, "other_runs": [r for r in runs if r is not best],
        "notes": notes, "plot": os.path.relpath(img, C.REPO) if img else None}
    doc["checks"] = checks(doc)
    C.write_result(NAME, a.quick, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
