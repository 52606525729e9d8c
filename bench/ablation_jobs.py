#!/usr/bin/env python
"""The runs of the remapping ablation (``bench/bench_remap_ablation.py``) and of the claims
benchmark (``bench/bench_fna_claims.py``): the options of an ablation search or training job
(:func:`search_spec`, :func:`train_spec`), one job run in this process (:func:`run_job`; a
real ``SearchTrainer`` / ``FNATrainer`` with loss curves recorded, COCO AP or mIoU), and
:class:`Runner`, which runs each job in its own process (``python bench/ablation_jobs.py
--job SPEC --job-out RESULT``), a few at a time."""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import torch  # noqa: E402
from detectron2.engine import HookBase  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from fna_d2.engine import FNATrainer  # noqa: E402
from fna_d2.engine.search import SearchTrainer, alpha_stats  # noqa: E402
from fna_d2.utils import fmt_number, write_json  # noqa: E402

__all__ = ["SEED_URI", "SCORE_THRESH_TEST", "common_opts", "search_spec", "train_spec",
           "run_job", "Runner"]

SEED_URI = "fna_d2://keras_mobilenetv2"
#: detectron2's 0.05 leaves briefly trained detectors with no detections (AP undefined)
SCORE_THRESH_TEST = 0.01


def common_opts(size: int, iters: int, seed: int, out: str, lr: float) -> List[Any]:
    return ["MODEL.RETINANET.SCORE_THRESH_TEST", SCORE_THRESH_TEST,
            "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", int(size * 1.25),
            "INPUT.MIN_SIZE_TEST", size, "INPUT.MAX_SIZE_TEST", int(size * 1.25),
            "MODEL.FPN.OUT_CHANNELS", 128, "MODEL.RETINANET.NUM_CONVS", 2,
            "MODEL.FNA.SEED_WEIGHTS", SEED_URI,
            "MODEL.FNA.SEARCH.COST_INPUT_SIZE", f"({size}, {size})",
            "SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", lr, "SOLVER.MAX_ITER", iters,
            "SOLVER.STEPS", f"({max(1, int(iters * 0.8))},)",
            "SOLVER.WARMUP_ITERS", min(20, max(1, iters // 5)),
            "SOLVER.CHECKPOINT_PERIOD", 10 ** 7, "TEST.EVAL_PERIOD", 0,
            "DATALOADER.NUM_WORKERS", 0, "SEED", seed, "OUTPUT_DIR", out, "MODEL.DEVICE", "cpu"]


def search_spec(init: str, a: argparse.Namespace, root: str) -> Dict[str, Any]:
    sid = f"search_{init}_s{a.search_seed}"
    opts = common_opts(a.size, a.search_iters, a.search_seed, os.path.join(root, sid),
                       a.search_lr)
    opts += ["MODEL.FNA.REMAP.ENABLED", init == "remap",
             "MODEL.FNA.SEARCH.WARMUP_ITERS", a.search_iters // 2,
             "MODEL.FNA.SEARCH.SEED", a.search_seed,
             "MODEL.FNA.SEARCH.DERIVE_PERIOD", 10 ** 7]
    return {"id": sid, "kind": "search", "config": "configs/demo/trees_search.yaml",
            "opts": opts}


def train_spec(tag: str, arch: str, remap: bool, width: str, kernel: str, seed: int,
               a: argparse.Namespace, root: str) -> Dict[str, Any]:
    tid = f"train_{tag}_s{seed}"
    opts = common_opts(a.size, a.iters, seed, os.path.join(root, tid), a.lr)
    opts += ["MODEL.FNA.NETWORK", "derived", "MODEL.FNA.ARCH", arch,
             "MODEL.FNA.REMAP.ENABLED", remap, "MODEL.FNA.REMAP.WIDTH", width,
             "MODEL.FNA.REMAP.KERNEL", kernel]
    return {"id": tid, "kind": "train", "config": "configs/demo/trees_adapt.yaml", "opts": opts}


class _Curves(HookBase):
    """Records the latest value of each of ``keys`` after every step that logged it."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self.curves: Dict[str, List[Tuple[int, float]]] = {k: [] for k in keys}

    def after_step(self) -> None:
        hist = self.trainer.storage.histories()
        for k in self.keys:
            if k in hist:
                v, it = hist[k].values()[-1]
                if it == self.trainer.iter:
                    self.curves[k].append((int(it), float(v)))


def run_job(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One search or training (in this process); returns its result dict."""
    torch.set_num_threads(int(spec.get("threads", 1)))
    C.quiet_logs()
    cfg = C.demo_cfg(spec["config"], spec["opts"])
    cfg.freeze()
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    seed_all_rng(cfg.SEED)
    t0, c0 = time.perf_counter(), time.process_time()
    res: Dict[str, Any] = {"id": spec["id"], "kind": spec["kind"]}
    if spec["kind"] == "search":
        trainer = SearchTrainer(cfg)
        hook = _Curves(["total_loss", "arch/total_loss", "search/expected_cost"])
        trainer.register_hooks([hook])
        trainer.resume_or_load(resume=False)
        trainer.train()
        arch_path = os.path.join(cfg.OUTPUT_DIR, "searched_arch.json")
        stats = alpha_stats(trainer.net)
        res.update({"arch_path": arch_path, "curves": hook.curves,
                    "alpha_entropy": stats.entropy, "skip_ratio": stats.skip_ratio})
    else:
        trainer = FNATrainer(cfg)
        hook = _Curves(["total_loss"])
        trainer.register_hooks([hook])
        trainer.resume_or_load(resume=False)
        results = trainer.train()
        rep = trainer.checkpointer.remap_report
        bbox = (results or {}).get("bbox", {})
        seg = (results or {}).get("sem_seg", {})
        res.update({"AP": _num(bbox.get("AP")), "AP50": _num(bbox.get("AP50")),
                    "AP75": _num(bbox.get("AP75")), "mIoU": _num(seg.get("mIoU")),
                    "curves": hook.curves,
                    "remap_counts": rep.counts() if rep is not None and rep.enabled else None})
    res["wall_s"] = time.perf_counter() - t0
    res["cpu_s"] = time.process_time() - c0
    for f in os.listdir(cfg.OUTPUT_DIR):  # weights are not needed afterwards
        if f.endswith(".pth"):
            os.remove(os.path.join(cfg.OUTPUT_DIR, f))
    return res


def _num(v: Any) -> Optional[float]:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if v != v else v


class Runner:
    """Runs job specs, each in its own process, ``workers`` at a time, ``threads`` each; the
    specs, logs and results go to ``<root>/jobs``; progress lines start with ``[label]``."""

    def __init__(self, root: str, workers: int, threads: int,
                 label: str = "remap_ablation") -> None:
        self.root, self.workers, self.threads, self.label = root, workers, threads, label

    def run_record(self, spec: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
        """:meth:`run_one`, as a benchmark record: without the curves, with ``extra`` and the
        machine, load, date and commit it ran on."""
        res = self.run_one(spec)
        res.pop("curves", None)
        m = C.machine_info(self.threads)
        res.update(extra, machine=m["cpu"], load_average=m["load_average"], date=m["date"],
                   git=m["git"])
        return res

    def run_one(self, spec: Dict[str, Any]) -> Dict[str, Any]:
        """Run one job in its own process; its result (RuntimeError with the log's tail if it
        failed)."""
        d = os.path.join(self.root, "jobs")
        os.makedirs(d, exist_ok=True)
        spec = dict(spec, threads=self.threads)
        spec_path = os.path.join(d, f"{spec['id']}.json")
        out_path = os.path.join(d, f"{spec['id']}.result.json")
        write_json(spec_path, spec, indent=None)
        if os.path.exists(out_path):
            os.remove(out_path)
        t0 = time.perf_counter()
        proc = C.run_python([os.path.abspath(__file__), "--job", spec_path, "--job-out", out_path],
                            log_path=os.path.join(d, f"{spec['id']}.log"),
                            env={"OMP_NUM_THREADS": str(self.threads)})
        if proc.returncode != 0 or not os.path.exists(out_path):
            with open(os.path.join(d, f"{spec['id']}.log"), encoding="utf-8") as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"job {spec['id']} failed (exit {proc.returncode}):\n{tail}")
        with open(out_path, encoding="utf-8") as f:
            res = json.load(f)
        res["process_wall_s"] = time.perf_counter() - t0
        metric = "mIoU" if res.get("mIoU") is not None else "AP"
        msg = (f"{metric} {fmt_number(res.get(metric), 1)}" if res["kind"] == "train"
               else f"arch {os.path.relpath(res['arch_path'], C.REPO)}")
        print(f"[{self.label}] {spec['id']}: {msg} ({res['process_wall_s']:.0f} s wall, "
              f"{res['cpu_s']:.0f} s CPU)", flush=True)
        return res

    def run(self, specs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
        with futures.ThreadPoolExecutor(max_workers=self.workers) as ex:
            done = dict(zip([s["id"] for s in specs], ex.map(self.run_one, specs)))
        return done


def main(argv=None) -> int:
    """``--job SPEC --job-out RESULT``: run one job and write its result."""
    ap = argparse.ArgumentParser(description="one job of bench/bench_remap_ablation.py")
    ap.add_argument("--job", required=True)
    ap.add_argument("--job-out", required=True)
    a = ap.parse_args(argv)
    os.chdir(C.REPO)
    with open(a.job, encoding="utf-8") as f:
        res = run_job(json.load(f))
    write_json(a.job_out, C.clean_json(res), indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
