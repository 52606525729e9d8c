#!/usr/bin/env python
"""int8 post-training quantization of the demos' trained models (``python -m fna_d2.quant``):
the test metric (mIoU / AP) of float and int8 and their CPU latency, batch 1 at the test size.

Needs the demos trained first (``python -m fna_d2.pipeline --config-file
configs/demo/nuclei_pipeline.yaml --output-dir output/demo_nuclei``, the same for trees); a
demo whose ``adapt/model_final.pth`` is missing is recorded as not run. Writes
``bench/results/int8.json`` (not part of ``bench/run_all.py``: it needs the trained demos).

    python bench/bench_int8.py [--demos nuclei,trees] [--threads 1] [--calib-images 64]
        [--weights trees=output/demo_trees/adapt/model_0000299.pth]
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import torch  # noqa: E402

from fna_d2.config import get_fna_cfg  # noqa: E402
from fna_d2.quant import BACKEND, quantize_trained_model  # noqa: E402

#: demo -> its pipeline output folder (the pipeline's --output-dir in the docstring)
DEMOS = {"nuclei": "output/demo_nuclei", "trees": "output/demo_trees"}
#: the brief's target: at most this many metric points lost
MAX_LOSS = 1.0


def checks(doc):
    out = []
    for demo, r in doc["figures"].items():
        if not r.get("eval"):
            continue
        loss = -r["eval"]["delta"]
        out.append(C.check(f"{demo}: {r['eval']['metric']} lost by int8", round(loss, 2),
                           f"<= {MAX_LOSS}", loss <= MAX_LOSS))
        out.append(C.check(f"{demo}: int8 / float CPU latency", round(
            1 / r["latency"]["speedup"], 2), None, None,
            "int8 faster" if r["latency"]["speedup"] > 1 else "int8 slower"))
    return out


def main() -> int:
    ap = C.arg_parser(__doc__)
    ap.add_argument("--demos", default="nuclei,trees")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--backend", default=BACKEND)
    ap.add_argument("--weights", action="append", default=[], metavar="DEMO=FILE",
                    help="a demo's weights other than its run's model_final.pth (e.g. an "
                    "intermediate checkpoint of the same run); recorded in the json")
    args = ap.parse_args()
    chosen = dict(w.split("=", 1) for w in args.weights)
    unknown = sorted(set(chosen) - set(DEMOS))
    if unknown:
        ap.error(f"--weights {unknown[0]}=...: no such demo (use one of {', '.join(DEMOS)})")
    torch.set_num_threads(args.threads)
    C.quiet_logs()
    t0 = time.time()
    load_start = [round(v, 2) for v in os.getloadavg()]
    figures, notes = {}, []
    for demo in args.demos.split(","):
        run = os.path.join(C.REPO, DEMOS[demo], "adapt")
        weights = os.path.join(C.REPO, chosen.get(demo, os.path.join(run, "model_final.pth")))
        if not os.path.isfile(weights):
            notes.append(f"{demo}: not run ({os.path.relpath(weights, C.REPO)} missing: train "
                         "the demo first)")
            continue
        cfg = get_fna_cfg(os.path.join(run, "config.yaml"), ["MODEL.WEIGHTS", weights])
        out = C.scratch("int8", demo, quick=args.quick)
        s = time.time()
        info = quantize_trained_model(cfg, out, args.calib_images, run_eval=True,
                                      latency_s=0.5 if args.quick else 3.0,
                                      config_file=os.path.join(run, "config.yaml"),
                                      backend=args.backend)
        info["wall_time_s"] = time.time() - s
        info["file_mb"] = os.path.getsize(os.path.join(out, info["file"])) / 2 ** 20
        figures[demo] = info
    doc = {"machine": C.machine_info(args.threads), "wall_time_s": time.time() - t0,
           "settings": {"threads": args.threads, "calib_images": args.calib_images,
                        "backend": args.backend, "demos": args.demos,
                        "weights": {d: os.path.relpath(os.path.join(C.REPO, w), C.REPO)
                                    for d, w in chosen.items()}},
           "load": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]},
           "figures": figures, "notes": notes}
    doc["checks"] = checks(doc)
    C.write_result("int8", args.quick, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
