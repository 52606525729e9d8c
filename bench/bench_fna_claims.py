#!/usr/bin/env python
"""What the search buys, on both demos: FNA's searched architecture against architectures of
the same cost (random ones from the same space, MobileNetV2 shrunk by hand, the published FNA
COCO architecture) and against the seed, every network remapped from the same seed and trained
with the demo's adaptation schedule and several training seeds.

Per demo (nuclei: segmentation, mIoU; trees: detection, COCO AP):

1. the demo's search (its config as ``make demo`` runs it), and the same search with
   ``MODEL.FNA.SEARCH.TARGET_COST seed``;
2. controls at the searched architecture's backbone MAdds (``fna_d2.controls``): ``--random``
   architectures drawn uniformly within +-3%, MobileNetV2 shrunk (``depth``, ``expansion``);
   the published FNA COCO architecture (``configs/archs/fna_retinanet_coco.json``);
3. training: the adaptation config with ``MODEL.FNA.ARCH`` per network, and the seed baseline
   (ImageNet-trained MobileNetV2, the baseline config), each with ``SEED`` 0..seeds-1.

**Resumable across machines and sessions**: every finished search and training writes its
record to ``bench/results/fna_claims/<demo>/`` (committed with the repository), architectures
included; a run whose record exists is not run again. ``bench/results/fna_claims.json`` (the
summary, :mod:`claims_stats`) is rewritten after every run, so an interrupted benchmark leaves
a consistent, partial summary that says what is missing. ``--quick``: instant-test sizes into
``bench/results/quick``.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import claims_stats as S  # noqa: E402
from ablation_jobs import Runner  # noqa: E402
from fna_d2.arch import load_arch, save_arch, seed_arch  # noqa: E402
from fna_d2.controls import (backbone_gmadds, sample_matched, shrink_seed,  # noqa: E402
                             space_of_config)
from fna_d2.utils import read_json, write_json  # noqa: E402

NAME = "fna_claims"
PUBLISHED = "configs/archs/fna_retinanet_coco.json"
DEMOS: Dict[str, Dict[str, Any]] = {
    "nuclei": {"search": "configs/demo/nuclei_search.yaml",
               "adapt": "configs/demo/nuclei_adapt.yaml",
               "baseline": "configs/demo/nuclei_baseline.yaml", "metric": "mIoU", "seeds": 3},
    "trees": {"search": "configs/demo/trees_search.yaml",
              "adapt": "configs/demo/trees_adapt.yaml",
              "baseline": "configs/demo/trees_baseline.yaml", "metric": "AP", "seeds": 1},
}
#: --quick: the instant-test configs and a handful of iterations
QUICK_OPTS = {"nuclei": ["SOLVER.MAX_ITER", 4, "MODEL.FNA.SEARCH.WARMUP_ITERS", 2,
                         "SOLVER.WARMUP_ITERS", 1, "MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS", 1,
                         "INPUT.MIN_SIZE_TEST", 64, "INPUT.CROP.SIZE", "(64, 64)"],
              "trees": ["SOLVER.MAX_ITER", 4, "MODEL.FNA.SEARCH.WARMUP_ITERS", 2,
                        "SOLVER.WARMUP_ITERS", 1, "INPUT.MIN_SIZE_TRAIN", "(96,)",
                        "INPUT.MIN_SIZE_TEST", 96, "MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS", 1]}


def records_dir(root: str, demo: str) -> str:
    """Where one demo's records live under the results folder ``root``."""
    return os.path.join(root, NAME, demo)


def job_opts(demo: str, quick: bool, out: str, seed: int) -> List[Any]:
    """The overrides every run of ``demo`` gets: its output folder, ``SEED``, no periodic
    evaluation or checkpoint (``quick``: and the instant-test sizes)."""
    return (["OUTPUT_DIR", out, "SEED", seed, "TEST.EVAL_PERIOD", 0,
             "SOLVER.CHECKPOINT_PERIOD", 10 ** 7]
            + (QUICK_OPTS[demo] if quick else []))


class Bench:
    """One demo's runs: records in :func:`records_dir`, scratch outputs under output/bench."""

    def __init__(self, demo: str, a) -> None:
        self.demo, self.a, self.spec = demo, a, DEMOS[demo]
        self.rec = records_dir(a.results_dir, demo)
        self.archs = os.path.join(self.rec, "archs")
        self.scratch = C.scratch(NAME, demo, quick=a.quick)
        self.runner = Runner(self.scratch, workers=1, threads=a.threads, label=NAME)
        os.makedirs(self.archs, exist_ok=True)
        self.space, self.size, self.os_, self.seed = space_of_config(
            os.path.join(C.REPO, self.spec["search"]),
            [str(o) for o in (QUICK_OPTS[demo] if a.quick else [])])

    def gmadds(self, arch_file: str) -> float:
        """Backbone GMAdds at the search's cost input size ('': the seed)."""
        arch = load_arch(arch_file) if arch_file else seed_arch(self.seed)
        return backbone_gmadds(arch, self.size, self.os_)

    # -- records
    def record_path(self, rid: str) -> str:
        return os.path.join(self.rec, f"{rid}.json")

    def done(self, rid: str) -> bool:
        return os.path.exists(self.record_path(rid))

    def _run(self, rid: str, spec: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
        res = self.runner.run_record(dict(spec, id=rid), extra)
        write_json(self.record_path(rid), C.clean_json(res), indent=1)
        return res

    # -- 1. searches
    def search(self, rid: str, target: bool) -> str:
        arch_file = os.path.join(self.archs, f"{rid}.json")
        if not self.done(rid):
            opts = job_opts(self.demo, self.a.quick, os.path.join(self.scratch, rid), 0)
            if target:
                opts += ["MODEL.FNA.SEARCH.TARGET_COST", "seed"]
            res = self._run(rid, {"kind": "search", "config": self.spec["search"],
                                  "opts": opts}, {"target_cost": "seed" if target else None})
            save_arch(load_arch(res["arch_path"]).skips_to_end(), arch_file)
            res["backbone_gmadds"] = self.gmadds(arch_file)
            write_json(self.record_path(rid), C.clean_json(res), indent=1)
        return arch_file

    # -- 2. controls
    def controls(self, searched: str) -> Dict[str, str]:
        space, size, os_, seed = self.space, self.size, self.os_, self.seed
        plan_file = os.path.join(self.archs, "controls.json")
        if not os.path.exists(plan_file):
            arch = load_arch(searched)
            target = backbone_gmadds(arch, size, os_)
            rows = {}
            for i, m in enumerate(sample_matched(space, target, self.a.random, size, os_,
                                                 tol=0.03, seed=0, exclude=[arch])):
                rows[f"random_{i:02d}"] = m
            for mode in ("depth", "expansion"):
                rows[f"shrunk_{mode}"] = shrink_seed(seed_arch(seed), space, target, size, os_,
                                                     mode)
            for name, m in rows.items():
                save_arch(m.arch, os.path.join(self.archs, f"{name}.json"))
            write_json(plan_file, {"target_gmadds": target, "input_size": list(size),
                                   "output_stride": os_,
                                   "controls": {n: {"gmadds": m.gmadds, "method": m.method,
                                                    "rel_error": m.rel_error}
                                                for n, m in rows.items()}}, indent=1)
        shutil.copyfile(os.path.join(C.REPO, PUBLISHED), os.path.join(self.archs,
                                                                      "fna_coco.json"))
        plan = read_json(plan_file)
        return {n: os.path.join(self.archs, f"{n}.json") for n in plan["controls"]} | {
            "fna_coco": os.path.join(self.archs, "fna_coco.json")}

    # -- 3. training
    def train(self, net: str, arch_file: str, seed: int) -> None:
        rid = f"train_{net}_s{seed}"
        if self.done(rid):
            return
        out = os.path.join(self.scratch, rid)
        if arch_file:
            spec = {"kind": "train", "config": self.spec["adapt"],
                    "opts": job_opts(self.demo, self.a.quick, out, seed)
                    + ["MODEL.FNA.ARCH", arch_file]}
        else:
            spec = {"kind": "train", "config": self.spec["baseline"],
                    "opts": job_opts(self.demo, self.a.quick, out, seed)}
        self._run(rid, spec, {"network": net, "train_seed": seed,
                              "arch_file": os.path.relpath(arch_file, C.REPO) if arch_file
                              else None, "backbone_gmadds": self.gmadds(arch_file)})


def plan(b: Bench) -> List[tuple]:
    """(network, arch file or '' for the seed baseline) in the order they are trained."""
    searched = b.search("search", target=False)
    nets = [("searched", searched), ("seed", "")]
    nets += sorted(b.controls(searched).items())
    nets.append(("searched_target_seed", b.search("search_target_seed", target=True)))
    return nets


def main(argv=None) -> int:
    ap = C.arg_parser(__doc__, "instant-test sizes, 1 seed, 2 random architectures")
    ap.add_argument("--demos", default="nuclei,trees")
    ap.add_argument("--random", type=int, default=None, help="random architectures (5)")
    ap.add_argument("--seeds", type=int, default=None,
                    help="training seeds per network (default: nuclei 3, trees 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (1)")
    ap.add_argument("--summarize", action="store_true", help="only rewrite the summary")
    ap.add_argument("--reverse", action="store_true",
                    help="train the networks in reverse order: a second process started with "
                    "it shares the work with a running one (they meet in the middle)")
    ap.add_argument("--results-dir", default=None, help="records and summary folder (default "
                    "bench/results; --quick: bench/results/quick)")
    a = ap.parse_args(argv)
    a.random = a.random or (2 if a.quick else 5)
    a.results_dir = os.path.abspath(a.results_dir or C.results_dir(a.quick))
    os.chdir(C.REPO)
    names = [d.strip() for d in a.demos.split(",") if d.strip()]
    unknown = [d for d in names if d not in DEMOS]
    if unknown:
        ap.error(f"--demos: unknown {', '.join(unknown)}; known: {', '.join(DEMOS)}")
    demos = {d: dict(DEMOS[d], seeds=a.seeds or (1 if a.quick else DEMOS[d]["seeds"]))
             for d in names}
    t0 = time.perf_counter()
    for demo in ([] if a.summarize else demos):
        b = Bench(demo, a)
        nets = plan(b)
        for seed in range(demos[demo]["seeds"]):  # seed 0 of every network first
            for net, arch in (nets[::-1] if a.reverse else nets):
                b.train(net, arch, seed)
                S.write_summary(NAME, demos, a.results_dir, records_dir, a.quick)
    doc = S.write_summary(NAME, demos, a.results_dir, records_dir, a.quick,
                          wall_s=time.perf_counter() - t0)
    for c in doc["checks"]:
        print(f"[{NAME}] {c['name']}: {c['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
