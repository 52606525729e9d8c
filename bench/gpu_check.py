#!/usr/bin/env python
"""GPU check: seconds per iteration and peak GPU memory of the COCO RetinaNet search and
adaptation at the paper's input size and per-GPU batch, and the GPU-hours of the full paper
schedules projected from them, next to the paper's 6 GPU-days of search and 3.2 GPU-days of
training (FNA.md sec. 7). One GPU, under 8 minutes: ``bash bench/gpu_check.sh``.

Per precision (``--precisions``: SOLVER.AMP.ENABLED / PRECISION) and config, the real trainers
are built by :func:`fna_d2.engine.build_trainer` from ``configs/fna_retinanet_{search,adapt}.yaml``
(MODEL.FNA.ARCH: the published ``configs/archs/fna_retinanet_coco.json``), randomly initialised
(timing does not depend on the weights), on synthetic COCO-size images (``gpu_check_data``) at
the configs' resize (shortest edge 800, longest <= 1333) and per-GPU batch (IMS_PER_BATCH / the
paper's GPUs: search 8 / 8 = 1, adaptation 32 / 8 = 4). ``trainer.run_step()`` is timed (data
loading included, as in training) with ``time.perf_counter`` around ``torch.cuda.synchronize``:

* search: ``--cold`` untimed warm-up weight steps, ``--iters`` timed warm-up weight steps
  (uniform paths, no arch step), ``--cold`` untimed and ``--iters`` timed search iterations
  (1 arch step + 1 weight step);
* adaptation: ``--cold`` untimed, then ``--iters`` timed training steps.

Projection (GPU-hours of the paper schedule, device time of every GPU counted)::

    search  = (WARMUP_ITERS * s_weight + (MAX_ITER - WARMUP_ITERS) * s_iteration) * GPUS / 3600
    adapt   = MAX_ITER * s_step * GPUS / 3600

with MAX_ITER / WARMUP_ITERS from the configs and GPUS the paper's 8: every GPU runs one
per-GPU batch per iteration at the measured speed. That assumes perfect data-parallel scaling
(gradient all-reduce and SyncBN traffic are not measured on one GPU), so it is a lower bound.

``--quick``: the same code path on CPU in about a minute (tiny images, batch 1, one step per
phase, fp32 and bf16); written to ``--out`` (default ``output/bench/quick/gpu_check.json``), never to
``bench/results/gpu_check.json``. Without ``--quick`` the check refuses to run without CUDA
(exit 2). Exit 1 when a run failed (its reason is in the result file), 0 otherwise.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import gpu_check_data as D  # noqa: E402
from gpu_check_progress import Progress  # noqa: E402
import torch  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from fna_d2.config import get_fna_cfg  # noqa: E402
from fna_d2.engine import build_trainer  # noqa: E402
from fna_d2.utils import write_json  # noqa: E402

NAME = "gpu_check"
CONFIGS = {"search": "configs/fna_retinanet_search.yaml",
           "adapt": "configs/fna_retinanet_adapt.yaml"}
ARCH = "configs/archs/fna_retinanet_coco.json"
#: the paper's settings and costs (FNA.md), cited as the paper's
PAPER = {
    "search": {"gpus": 8, "gpu_days": 6.0,
               "source": "FNA.md sec. 5 (8 GPUs x 1 image, 1333x800) and sec. 7 (6 GPU-days)"},
    "adapt": {"gpus": 8, "gpu_days": 3.2,
              "source": "FNA.md sec. 6 (batch 32, 1333x800; 8 GPUs x 4 images as in the "
                        "config's comment: FNA.md gives no GPU count) and sec. 7 (3.2 GPU-days)"},
}
#: --precisions name -> SOLVER.AMP.PRECISION (None: fp32, AMP off)
PRECISIONS = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}
FULL_MINUTES = 8.0
#: command-line defaults of the full check (False) and of --quick (True)
DEFAULTS = {False: dict(device="cuda", precisions="fp32,fp16,bf16", cold=3, iters=20, images=32),
            True: dict(device="cpu", precisions="fp32,bf16", cold=1, iters=1, batch=1, images=4,
                       threads=1)}
FORMULA = {"search": "(WARMUP_ITERS * s_weight + (MAX_ITER - WARMUP_ITERS) * s_iteration) "
                     "* GPUS / 3600",
           "adapt": "MAX_ITER * s_step * GPUS / 3600"}


# ----------------------------------------------------------------------------- plan
def schedule(kind: str) -> Dict[str, Any]:
    """The paper schedule of ``kind`` as the config states it, and the per-GPU batch."""
    cfg = get_fna_cfg(os.path.join(C.REPO, CONFIGS[kind]))
    gpus = PAPER[kind]["gpus"]
    ims = int(cfg.SOLVER.IMS_PER_BATCH)
    if ims % gpus:
        raise SystemExit(f"{CONFIGS[kind]}: SOLVER.IMS_PER_BATCH {ims} is not a multiple of the "
                         f"paper's {gpus} GPUs")
    out = {"config": CONFIGS[kind], "max_iter": int(cfg.SOLVER.MAX_ITER), "ims_per_batch": ims,
           "paper_gpus": gpus, "per_gpu_batch": ims // gpus,
           "min_size_train": list(cfg.INPUT.MIN_SIZE_TRAIN),
           "max_size_train": int(cfg.INPUT.MAX_SIZE_TRAIN)}
    if kind == "search":
        out["warmup_iters"] = int(cfg.MODEL.FNA.SEARCH.WARMUP_ITERS)
    return out


def phases(kind: str, cold: int, iters: int) -> List[Dict[str, Any]]:
    """The steps of one run, in order: (phase name, timed?, count)."""
    if kind == "search":
        return [{"phase": "weight_step", "timed": False, "n": cold},
                {"phase": "weight_step", "timed": True, "n": iters},
                {"phase": "iteration", "timed": False, "n": cold},
                {"phase": "iteration", "timed": True, "n": iters}]
    return [{"phase": "step", "timed": False, "n": cold},
            {"phase": "step", "timed": True, "n": iters}]


def run_opts(kind: str, precision: str, a: argparse.Namespace, sched: Dict[str, Any],
             dataset: str, out_dir: str) -> List[Any]:
    """The overrides of one run (the schedule's keys stay the config's: no hook runs here)."""
    opts: List[Any] = ["MODEL.DEVICE", a.device, "DATASETS.TRAIN", f"('{dataset}',)",
                       "DATASETS.TEST", "()", "MODEL.FNA.SEED_WEIGHTS", "",
                       "SOLVER.IMS_PER_BATCH", a.batch or sched["per_gpu_batch"],
                       "OUTPUT_DIR", out_dir,
                       "SOLVER.AMP.ENABLED", PRECISIONS[precision] is not None]
    if PRECISIONS[precision] is not None:
        opts += ["SOLVER.AMP.PRECISION", PRECISIONS[precision]]
    if kind == "search":
        opts += ["MODEL.FNA.SEARCH.WARMUP_ITERS", a.cold + a.iters]
    else:
        opts += ["MODEL.FNA.ARCH", os.path.join(C.REPO, ARCH)]
    if a.quick:  # tiny inputs, no loader workers: the same code path in seconds (the test
        # size too: the search's weight half is read without augmentation, at the test size)
        opts += ["INPUT.MIN_SIZE_TRAIN", f"({D.QUICK_SIZE},)", "INPUT.MAX_SIZE_TRAIN",
                 D.QUICK_SIZE * 3 // 2, "INPUT.MIN_SIZE_TEST", D.QUICK_SIZE,
                 "INPUT.MAX_SIZE_TEST", D.QUICK_SIZE * 3 // 2, "DATALOADER.NUM_WORKERS", 0]
    return opts


# ----------------------------------------------------------------------------- one run
class _Probe:
    """What the model computed on: the output dtypes of its first convolution (autocast's
    compute dtype) and the (H, W) of the images it was given (after the configs' resize)."""

    def __init__(self, model: torch.nn.Module) -> None:
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        self.dtypes: set = set()
        self.sizes: set = set()
        self.handles = [
            conv.register_forward_hook(lambda m, i, o: self.dtypes.add(str(o.dtype))),
            model.register_forward_pre_hook(lambda m, i: self.sizes.update(
                tuple(d["image"].shape[-2:]) for d in i[0]))]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _data_time(storage: EventStorage) -> Optional[float]:
    try:
        return float(storage.history("data_time").latest())
    except KeyError:
        return None


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"


def run_one(kind: str, precision: str, a: argparse.Namespace, sched: Dict[str, Any],
            dataset: str, prog: Progress) -> Dict[str, Any]:
    """Build one trainer, run its phases, return its record (with the projection)."""
    label = f"{kind} {precision}"
    plan = phases(kind, a.cold, a.iters)
    rec: Dict[str, Any] = {"config": kind, "precision": precision,
                           "amp_precision": PRECISIONS[precision],
                           "per_gpu_batch": a.batch or sched["per_gpu_batch"]}
    why = None
    if (precision == "bf16" and a.device.startswith("cuda")
          and not torch.cuda.is_bf16_supported()):
        why = "this GPU does not support bfloat16"
    if why:
        prog.skipped(label, sum(p["n"] for p in plan), why)
        return dict(rec, status="skipped", reason=why)
    out_dir = os.path.join(a.work, f"{kind}_{precision}")
    cfg = get_fna_cfg(os.path.join(C.REPO, CONFIGS[kind]),
                      [str(o) for o in run_opts(kind, precision, a, sched, dataset, out_dir)])
    cfg.freeze()
    cuda = torch.device(a.device) if a.device.startswith("cuda") else None
    if cuda:  # what an earlier run left allocated would count in this run's peak: recorded
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(cuda)
        rec["allocated_before_mb"] = torch.cuda.memory_allocated(cuda) / 2 ** 20
    seed_all_rng(a.seed)  # each run's random init and data order, the same from run to run
    t = time.perf_counter()
    try:
        trainer = build_trainer(cfg)
    except Exception as e:  # noqa: BLE001  (report it, run the others)
        prog.skipped(label, sum(p["n"] for p in plan), "build failed")
        return dict(rec, status="failed", reason=f"building the trainer: {_first_line(e)}")
    rec["build_s"] = time.perf_counter() - t
    prog.built(label, rec["build_s"])
    probe = _Probe(trainer.model)
    times: Dict[str, List[float]] = {}
    data: Dict[str, List[float]] = {}
    it = 0
    try:
        with EventStorage(0) as storage:
            for ph in plan:
                for j in range(ph["n"]):
                    trainer.iter = storage.iter = it
                    _sync(a.device)
                    t = time.perf_counter()
                    trainer.run_step()
                    _sync(a.device)
                    dt = time.perf_counter() - t
                    it += 1
                    prog.step(label, ph["phase"] + ("" if ph["timed"] else " (untimed)"),
                              j + 1, ph["n"], dt)
                    if ph["timed"]:
                        times.setdefault(ph["phase"], []).append(dt)
                        dtime = _data_time(storage)
                        if dtime is not None:
                            data.setdefault(ph["phase"], []).append(dtime)
    except Exception as e:  # noqa: BLE001  (a NaN loss, CUDA out of memory: report, go on)
        prog.drop(sum(p["n"] for p in plan) - it)
        rec.update(status="failed", reason=f"at step {it}: {_first_line(e)}")
    else:
        rec["status"] = "ok"
    finally:
        probe.remove()
    rec["s_per_iter"] = {k: C.summary(v) for k, v in times.items()}
    rec["data_time_s"] = {k: C.median(v) for k, v in data.items()}
    rec["observed_dtypes"] = sorted(probe.dtypes)
    rec["input_sizes_hw"] = sorted(list(hw) for hw in probe.sizes)
    rec["peak_memory_mb"] = torch.cuda.max_memory_allocated(cuda) / 2 ** 20 if cuda else None
    rec["peak_reserved_mb"] = torch.cuda.max_memory_reserved(cuda) / 2 ** 20 if cuda else None
    if rec["status"] == "ok":
        rec["projection"] = project(kind, sched, rec["s_per_iter"])
    del trainer
    gc.collect()
    return rec


# ----------------------------------------------------------------------------- projection
def project(kind: str, sched: Dict[str, Any], s_per_iter: Dict[str, Dict[str, Any]]
            ) -> Dict[str, Any]:
    """GPU-hours of the paper schedule from the medians (see the module doc)."""
    gpus = sched["paper_gpus"]
    if kind == "search":
        w, m = sched["warmup_iters"], sched["max_iter"]
        device_s = (w * s_per_iter["weight_step"]["median"]
                    + (m - w) * s_per_iter["iteration"]["median"])
    else:
        device_s = sched["max_iter"] * s_per_iter["step"]["median"]
    gpu_hours = device_s * gpus / 3600
    paper_h = PAPER[kind]["gpu_days"] * 24
    return {"formula": FORMULA[kind], "gpus": gpus, "wall_hours_on_gpus": device_s / 3600,
            "gpu_hours": gpu_hours, "gpu_days": gpu_hours / 24, "paper_gpu_hours": paper_h,
            "paper_gpu_days": PAPER[kind]["gpu_days"], "ratio_to_paper": gpu_hours / paper_h}


# ----------------------------------------------------------------------------- verdicts
def checks(doc: Dict[str, Any], default: Optional[Dict[str, Any]] = None
           ) -> List[Dict[str, Any]]:
    """Whole check under 8 minutes (full runs); every requested run completed; autocast
    observed at the requested dtype; the projections next to the paper's (no target)."""
    runs, quick = doc["runs"], doc["quick"]
    mins = doc["wall_time_s"] / 60
    ok = [r for r in runs if r["status"] == "ok"]
    out = [C.check("wall_time_min", mins, f"<= {FULL_MINUTES:g} min",
                   None if quick else mins <= FULL_MINUTES,
                   f"the whole check took {mins:.1f} min" + (" (--quick)" if quick else "")),
           C.check("runs_completed", f"{len(ok)} / {len(runs)}", "all", len(ok) == len(runs),
                   "; ".join(f"{r['config']} {r['precision']}: {r['status']}" for r in runs))]
    for r in ok:
        want = {None: "torch.float32", "float16": "torch.float16",
                "bfloat16": "torch.bfloat16"}[r["amp_precision"]]
        seen = ", ".join(r["observed_dtypes"]) or "nothing"
        out.append(C.check(f"dtype_{r['config']}_{r['precision']}", seen, want, seen == want,
                           f"{r['config']} {r['precision']}: the first convolution computed "
                           f"in {seen}"))
        p = r["projection"]
        out.append(C.check(f"projection_{r['config']}_{r['precision']}", p["gpu_days"],
                           f"paper {p['paper_gpu_days']:g} GPU-days", None,
                           f"{r['config']} {r['precision']}: {p['gpu_days']:.2f} GPU-days "
                           f"projected ({p['ratio_to_paper']:.2f}x the paper's)"))
    return out


# ----------------------------------------------------------------------------- main
def machine(device: str) -> Dict[str, Any]:
    m = C.machine_info()
    m["cuda_version"] = torch.version.cuda
    m["gpu"] = None
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        m["gpu"] = {"name": p.name, "memory_gb": round(p.total_memory / 2 ** 30, 1),
                    "capability": f"{p.major}.{p.minor}", "count": torch.cuda.device_count(),
                    "cudnn": torch.backends.cudnn.version(),
                    "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    return m


def notes(a: argparse.Namespace) -> List[str]:
    out = []
    if a.quick:
        out.append("--quick: tiny images on a CPU, one step per phase; every time and projection "
                   "here is a smoke-test value, not a measurement of the paper's setting")
    if a.batch:
        out.append(f"--batch {a.batch} replaced the paper's per-GPU batch; the projections still "
                   f"use the paper's iteration counts, so they do not describe its schedule")
    return out


def parse(argv=None) -> argparse.Namespace:
    ap = C.arg_parser(__doc__, "CPU smoke run of the same code path (about a minute)")
    ap.add_argument("--precisions", default=None,
                    help="comma list of fp32,fp16,bf16 (default all three; --quick: fp32,bf16)")
    ap.add_argument("--device", default=None, help="default cuda (--quick: cpu)")
    ap.add_argument("--cold", type=int, default=None, help="untimed steps per phase (3; quick 1)")
    ap.add_argument("--iters", type=int, default=None, help="timed steps per phase (20; quick 1)")
    ap.add_argument("--batch", type=int, default=None,
                    help="per-GPU batch (default the paper's; --quick: 1)")
    ap.add_argument("--images", type=int, default=None, help="synthetic images (32; quick 4)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default torch's; --quick: 1, which is many times "
                         "faster than oversubscribed threads on a loaded CPU)")
    ap.add_argument("--seed", type=int, default=0,
                    help="RNG seed of each run's weights, sampling and data order (default 0)")
    ap.add_argument("--work", default=None, help="scratch folder for the synthetic images and "
                    "the trainers' OUTPUT_DIRs (default output/bench/{full,quick}/gpu_check)")
    ap.add_argument("--out", default=None, help="result file (default bench/results/"
                    "gpu_check.json; --quick: output/bench/quick/gpu_check.json)")
    a = ap.parse_args(argv)
    q = a.quick
    for k, v in DEFAULTS[q].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.precisions = [p.strip() for p in a.precisions.split(",") if p.strip()]
    a.work = os.path.abspath(a.work or os.path.join(C.OUT, "quick" if q else "full", NAME))
    a.out = os.path.abspath(a.out or (os.path.join(C.OUT, "quick", f"{NAME}.json") if q
                                      else C.result_path(NAME, False)))
    bad = [p for p in a.precisions if p not in PRECISIONS]
    if bad:
        ap.error(f"--precisions: unknown {', '.join(bad)}; known: {', '.join(PRECISIONS)}")
    if a.iters < 1 or a.cold < 0:
        ap.error("--iters must be >= 1 and --cold >= 0")
    return a


def refusal(a: argparse.Namespace) -> Optional[str]:
    """Why this check cannot run as asked (None: it can)."""
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        return ("CUDA is not available (torch.cuda.is_available() is False): the GPU check needs "
                "a GPU; run it with --quick for the CPU smoke run of the same code path")
    if not a.quick and not a.device.startswith("cuda"):
        return (f"--device {a.device}: the full check measures a GPU (its iterations at 1333x800 "
                f"take minutes each on a CPU); use --quick on a CPU")
    if not a.device.startswith("cuda") and "fp16" in a.precisions:
        return "--precisions fp16 needs a GPU: autocast on a CPU runs bfloat16 only (use bf16)"
    return None


def main(argv=None) -> int:
    a = parse(argv)
    why = refusal(a)
    if why:
        print(f"gpu_check.py: error: {why}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    os.chdir(C.REPO)
    if a.threads:
        torch.set_num_threads(a.threads)
    setup_logger()  # once, as the trainers would; then quiet
    C.quiet_logs()
    scheds = {k: schedule(k) for k in CONFIGS}
    dataset, synth = D.register_synthetic(os.path.join(a.work, "images"), a.images,
                                          quick=a.quick)
    order = [(k, p) for p in a.precisions for k in CONFIGS]
    prog = Progress(len(order), sum(p["n"] for k, _ in order
                                    for p in phases(k, a.cold, a.iters)))
    runs = [run_one(k, p, a, scheds[k], dataset, prog) for k, p in order]
    doc = {"name": NAME, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": a.quick,
           "machine": machine(a.device), "wall_time_s": time.perf_counter() - t0,
           "settings": {"device": a.device, "precisions": a.precisions, "cold_steps": a.cold,
                        "torch_threads": torch.get_num_threads(),
                        "timed_steps": a.iters, "batch_override": a.batch, "data": synth,
                        "seed": a.seed,
                        "weights": "random init (MODEL.FNA.SEED_WEIGHTS '')",
                        "arch": ARCH, "command": " ".join(["python bench/gpu_check.py"]
                                                          + list(argv or sys.argv[1:]))},
           "schedules": scheds, "paper": PAPER, "formulas": FORMULA, "runs": runs,
           "notes": notes(a)}
    doc["checks"] = checks(doc)
    path = write_json(a.out, C.clean_json(doc), indent=1)
    for c in doc["checks"]:
        print(f"[gpu_check] {c['name']}: {c['text']}")
    print(f"[gpu_check] wrote {os.path.relpath(path, C.REPO)}")
    return 1 if any(r["status"] == "failed" for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
