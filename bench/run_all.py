#!/usr/bin/env python
"""Run every fna_d2 benchmark and regenerate ``docs/benchmarks.md`` (``make bench``).

Order: end-to-end pipeline first (it reads the demo pipeline's stage manifests, so reading them
first captures one consistent demo run; ``--run-pipeline`` runs the demo pipeline first, which
adds its full duration), inference (which uses that demo run's searched architecture), search
cost, latency model, remapping ablation. Each script runs in its own process; its output goes to
``output/bench/logs/<script>.log`` and its figures to ``bench/results/<name>.json``.

``--quick``: a smoke run (tiny sizes and repeats, a few minutes) writing to
``bench/results/quick/`` and ``bench/results/quick/benchmarks.md``; the committed results and
``docs/benchmarks.md`` are left alone.
"""
from __future__ import annotations

import os
import re
import sys
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from make_doc import render  # noqa: E402

_OWN = re.compile(r"^(\[(search_step|inference|latency_model|remap_ablation|pipeline|bench)\]"
                  r"|Traceback|\w*Error)")
#: (script, extra arguments); the latency benchmarks also run with glibc malloc's
#: mmap/trim thresholds fixed (see _common.apply_malloc)
BENCHES = (("bench_pipeline.py", []), ("bench_inference.py", []),
           ("bench_inference.py", ["--malloc", "tuned"]), ("bench_search_step.py", []),
           ("bench_latency_model.py", []), ("bench_latency_model.py", ["--malloc", "tuned"]),
           ("bench_remap_ablation.py", []))
SCRIPTS = sorted({b for b, _ in BENCHES})


def main(argv=None) -> int:
    ap = C.arg_parser(__doc__, "smoke mode (minutes)")
    ap.add_argument("--only", default="", help="comma list of scripts to run (e.g. "
                    "bench_inference.py); the page is rendered from all stored results")
    ap.add_argument("--run-pipeline", action="store_true",
                    help="run the demo pipeline inside bench_pipeline.py (adds ~15+ min)")
    ap.add_argument("--no-doc", action="store_true", help="do not regenerate the page")
    a = ap.parse_args(argv)
    os.chdir(C.REPO)
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    for s in only:
        if s not in SCRIPTS:
            ap.error(f"unknown script {s!r}; known: {', '.join(SCRIPTS)}")
    t0 = time.perf_counter()
    load_start = [round(v, 2) for v in os.getloadavg()]
    machine = C.machine_info()
    logs = os.path.join(C.OUT, "logs" + ("_quick" if a.quick else ""))
    os.makedirs(logs, exist_ok=True)
    benches: List[Dict[str, Any]] = []
    for script, extra in BENCHES:
        if only and script not in only:
            continue
        args = [os.path.join(C.BENCH, script)] + extra + (["--quick"] if a.quick else [])
        if script == "bench_pipeline.py" and a.run_pipeline:
            args.append("--run")
        label = " ".join([script] + extra)
        log = os.path.join(logs, script.replace(".py", "") + "".join(
            "_" + e.lstrip("-") for e in extra) + ".log")
        print(f"[run_all] {label} ... (log: {os.path.relpath(log, C.REPO)})", flush=True)
        t = time.perf_counter()
        proc = C.run_python(args, log_path=log)
        dt = time.perf_counter() - t
        benches.append({"script": label, "returncode": proc.returncode, "wall_s": dt,
                        "log": os.path.relpath(log, C.REPO)})
        with open(log, encoding="utf-8", errors="replace") as f:
            lines = [ln.rstrip() for ln in f if _OWN.match(ln)]
        for ln in lines[-14:]:
            print("    " + ln)
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        print(f"[run_all] {label}: {status} in {dt / 60:.1f} min", flush=True)
    total = time.perf_counter() - t0
    prev = C.read_result("run_all", a.quick) if only else None
    if prev and only:  # keep the other scripts' entries of the last full run
        kept = [b for b in prev.get("benches", []) if b["script"].split()[0] not in only]
        benches = kept + benches
    load_end = [round(v, 2) for v in os.getloadavg()]
    this_run = {"date": machine.get("date"), "git": machine.get("git"),
                "load_start": load_start, "load_end": load_end}
    if only:  # the page header keeps describing the last full run, and names this update
        full = (prev or {}).get("full_run") or {
            "date": (prev or {}).get("date"), "git": (prev or {}).get("machine", {}).get("git"),
            "load_start": (prev or {}).get("load_start"),
            "load_end": (prev or {}).get("load_end")}
        partial = dict(this_run, scripts=only, wall_s=total)
    else:
        full, partial = this_run, None
    C.write_result("run_all", a.quick, {
        "machine": machine, "wall_time_s": total if not only else (prev or {}).get(
            "wall_time_s"), "partial_run_s": total if only else None, "load_start": load_start,
        "load_end": load_end, "benches": benches, "run_pipeline": a.run_pipeline,
        "full_run": full, "partial_run": partial})
    print(f"[run_all] all done in {total / 60:.1f} min", flush=True)
    if not a.no_doc:
        render(a.quick)
    return 0 if all(b["returncode"] == 0 for b in benches) else 1


if __name__ == "__main__":
    sys.exit(main())
