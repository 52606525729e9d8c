#!/usr/bin/env python
"""Re-apply the benchmarks' verdict functions to the stored results: recompute the
``checks`` of every ``bench/results/<name>.json`` (``--quick``: ``bench/results/quick``) with
the ``checks(doc, default)`` function of the script that wrote it, leaving every measured
number as it is. Use it when a verdict (a target, a threshold, its wording) changes, instead of
re-running the benchmarks; then ``python bench/make_doc.py`` re-renders the page."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import bench_inference  # noqa: E402
import bench_latency_model  # noqa: E402
import bench_pipeline  # noqa: E402
import bench_remap_ablation  # noqa: E402
import bench_search_step  # noqa: E402
import gpu_check  # noqa: E402
from fna_d2.utils import write_json  # noqa: E402

#: result name -> the script module that wrote it (and decides its verdicts)
SCRIPTS = {m.NAME: m for m in (bench_search_step, bench_inference, bench_latency_model,
                               bench_remap_ablation, bench_pipeline, gpu_check)}


def recheck(quick: bool) -> list:
    """Rewrite the checks of each stored result; returns the result names rewritten. A
    ``--malloc tuned`` result is checked against the stored default-allocator one."""
    done = []
    for name, script in SCRIPTS.items():
        for mode in ("default", "tuned"):
            rname = C.malloc_result_name(name, mode)
            res = C.read_result(rname, quick)
            if res is None:
                continue
            default = C.read_result(name, quick) if mode == "tuned" else None
            res["checks"] = C.clean_json(script.checks(res, default))
            write_json(C.result_path(rname, quick), res, indent=1)
            print(f"[bench] rechecked {os.path.relpath(C.result_path(rname, quick), C.REPO)}")
            done.append(rname)
    return done


def main(argv=None) -> int:
    a = C.arg_parser(__doc__).parse_args(argv)
    recheck(a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
