#!/usr/bin/env python
"""Search cost: one search iteration (1 arch step + 1 weight step) and one weight step alone,
relative to one training step of the seed MobileNetV2 RetinaNet, at the same batch and image
size; and the peak memory of each.

What is timed (real fna_d2 code, fixed pre-mapped batch, so data loading is excluded):

* ``seed step``: detectron2's ``SimpleTrainer.run_step`` on the demo RetinaNet with the
  MobileNetV2 backbone (``configs/demo/trees_baseline.yaml``): forward, backward, SGD with
  gradient clipping, metrics.
* ``iteration``: ``SearchStepRunner.run_step`` after the warm-up on the detection super network
  (``configs/demo/trees_search.yaml``): 1 arch step (all candidates, mixed) + 1 weight step
  (one sampled path), metrics, alpha statistics.
* ``weight step``: ``SearchStepRunner.run_step`` during the warm-up: 1 weight step only.
* ``arch step``: ``SearchStepRunner.arch_step()`` alone (for the breakdown).

The variants are interleaved round by round (rotating order) in one process and the medians
are compared, so machine load affects them alike. Peak memory: each variant runs in its own
subprocess; ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after a few steps (and its increase
over the RSS right after building the model) is reported; on a GPU,
``torch.cuda.max_memory_allocated``.

Targets: iteration <= 3x the seed step, weight step <= 1.3x (:func:`checks`, on the headline
clock).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import resource
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import detectron2.data.transforms as T  # noqa: E402
import torch  # noqa: E402
from detectron2.data import DatasetCatalog, DatasetMapper  # noqa: E402
from detectron2.engine import SimpleTrainer  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from fna_d2.cost import op_cost_table  # noqa: E402
from fna_d2.engine import FNATrainer  # noqa: E402
from fna_d2.engine.search import SearchSchedule, SearchStepRunner, SearchTrainer  # noqa: E402
from fna_d2.utils import pyplot  # noqa: E402
from search_step_profile import profile  # noqa: E402

NAME = "search_step"
TARGETS = {"iteration_ratio": 3.0, "weight_ratio": 1.3}
VARIANTS = ("seed", "iteration", "weight", "arch")


class _FixedStream:
    """Stands in for the search's DataStream: always the same pre-mapped batch."""

    def __init__(self, batch: List[Dict[str, Any]]) -> None:
        self.batch = batch
        self.loader = self
        self.consumed = 0

    def __iter__(self):
        while True:
            yield self.batch

    def next(self) -> List[Dict[str, Any]]:
        self.consumed += 1
        return self.batch

    def state_dict(self) -> Dict[str, int]:
        return {"consumed": self.consumed}


def _batch(cfg, size: int, batch: int) -> List[Dict[str, Any]]:
    dicts = [d for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0]) if d.get("annotations")]
    mapper = DatasetMapper(cfg, is_train=True, augmentations=[T.Resize((size, size))])
    return [mapper(copy.deepcopy(d)) for d in dicts[:batch]]


def _opts(size: int, batch: int, device: str) -> List[Any]:
    return ["SOLVER.IMS_PER_BATCH", batch, "MODEL.DEVICE", device,
            "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", size,
            "MODEL.FNA.SEARCH.COST_INPUT_SIZE", f"({size}, {size})"]


def build_seed(size: int, batch: int, device: str):
    """(SimpleTrainer of the seed RetinaNet, batch)."""
    cfg = C.demo_cfg("configs/demo/trees_baseline.yaml", _opts(size, batch, device))
    model = FNATrainer.build_model(cfg)
    opt = FNATrainer.build_optimizer(cfg, model)
    data = _batch(cfg, size, batch)
    return SimpleTrainer(model, _FixedStream(data), opt), data


def build_search(size: int, batch: int, device: str):
    """(SearchStepRunner of the demo super network, batch); warm-up 0 (set per variant)."""
    cfg = C.demo_cfg("configs/demo/trees_search.yaml", _opts(size, batch, device)
                     + ["MODEL.FNA.SEARCH.WARMUP_ITERS", 0])
    model = SearchTrainer.build_model(cfg)
    net = SearchTrainer.find_supernet(model)
    opt = SearchTrainer.build_optimizer(cfg, model)
    arch_opt = SearchTrainer.build_arch_optimizer(cfg, net)
    table = op_cost_table(net.space, (size, size), "madds")
    data = _batch(cfg, size, batch)
    stream = _FixedStream(data)
    runner = SearchStepRunner(model, net, stream, _FixedStream(data), opt, arch_opt, table,
                              SearchSchedule.from_config(cfg), rng_seed=0)
    return runner, data


def _set_warmup(runner, warmup: int) -> None:
    runner.schedule = dataclasses.replace(runner.schedule, warmup_iters=warmup)


def _step(variant: str, seed_tr, runner) -> None:
    if variant == "seed":
        seed_tr.run_step()
    elif variant == "iteration":
        _set_warmup(runner, 0)
        runner.run_step()
    elif variant == "weight":
        _set_warmup(runner, 10 ** 9)
        runner.run_step()
    elif variant == "arch":
        runner.arch_step()
    else:
        raise ValueError(variant)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- timing
def time_interleaved(seed_tr, runner, rounds: int, warmup: int, device: str
                     ) -> Dict[str, Dict[str, List[float]]]:
    """{"wall": {variant: [s, ...]}, "cpu": {variant: [s, ...]}} (process CPU time)."""
    times: Dict[str, Dict[str, List[float]]] = {c: {v: [] for v in VARIANTS}
                                                for c in ("wall", "cpu")}
    with EventStorage(0) as storage:
        for r in range(warmup + rounds):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
            for v in order:
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                _step(v, seed_tr, runner)
                _sync(device)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                if r >= warmup:
                    times["wall"][v].append(dt)
                    times["cpu"][v].append(dc)
            runner.iter += 1
            seed_tr.iter += 1
            storage.iter = r + 1
            if r >= warmup:
                print(f"[search_step] round {r + 1 - warmup}/{rounds} (wall / cpu s): " + ", ".join(
                    f"{v} {times['wall'][v][-1]:.2f}/{times['cpu'][v][-1]:.2f}"
                    for v in VARIANTS), flush=True)
    return times


# ----------------------------------------------------------------------------- memory
def mem_worker(variant: str, size: int, batch: int, steps: int, device: str,
               threads: int) -> Dict[str, Any]:
    torch.set_num_threads(threads)
    C.quiet_logs()
    if variant == "seed":
        seed_tr, runner = build_seed(size, batch, device)[0], None
    else:
        seed_tr, runner = None, build_search(size, batch, device)[0]
    rss_built = _status_kb("VmRSS")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with EventStorage(0):
        for _ in range(steps):
            _step(variant, seed_tr, runner)
    # VmHWM is the peak RSS of this process image; ru_maxrss would also do, except that Linux
    # carries the forking parent's peak across execve, so a worker spawned by a large driver
    # reports the driver's size. Both are recorded; the driver spawns the workers before it
    # builds anything, which keeps ru_maxrss meaningful too.
    res = {"variant": variant, "maxrss_mb": _status_kb("VmHWM") / 1024,
           "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_after_build_mb": rss_built / 1024}
    res["step_increase_mb"] = res["maxrss_mb"] - res["rss_after_build_mb"]
    if device.startswith("cuda"):
        res["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return res


def _status_kb(key: str) -> float:
    with open("/proc/self/status", "r", encoding="utf-8") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return float("nan")


def measure_memory(size: int, batch: int, steps: int, device: str, threads: int
                   ) -> Dict[str, Any]:
    out = {}
    for v in ("seed", "iteration", "weight"):
        proc = C.run_python([os.path.abspath(__file__), "--mem-worker", v, "--size", str(size),
                             "--batch", str(batch), "--steps", str(steps), "--device", device,
                             "--threads", str(threads)])
        if proc.returncode != 0:
            raise RuntimeError(f"memory worker {v} failed:\n{proc.stdout[-3000:]}"
                               f"\n{proc.stderr[-3000:]}")
        out[v] = C.last_json_line(proc.stdout)
        print(f"[search_step] memory {v}: peak RSS {out[v]['maxrss_mb']:.0f} MB "
              f"(+{out[v]['step_increase_mb']:.0f} MB over the built model)", flush=True)
    return out


# ----------------------------------------------------------------------------- verdicts
def checks(doc: Dict[str, Any], default: Optional[Dict[str, Any]] = None
           ) -> List[Dict[str, Any]]:
    """The targets on the headline clock: search iteration <= 3x the seed training step,
    weight step alone <= 1.3x. ``default`` is unused (one result per run)."""
    g, t = doc["figures"], doc.get("targets") or TARGETS
    return [C.check(k, g[k], f"<= {t[k]:g}x", g[k] <= t[k],
                    f"{what} {g[k]:.2f}x the seed training step ({g.get('clock')} time)")
            for k, what in (("iteration_ratio", "search iteration"),
                            ("weight_ratio", "weight step alone"))]


# ----------------------------------------------------------------------------- main
def plot(times: Dict[str, List[float]], mem: Dict[str, Any], path: str, clock: str) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    labels = ["seed step", "weight step", "arch step", "iteration\n(arch+weight)"]
    keys = ["seed", "weight", "arch", "iteration"]
    ax = axes[0]
    ax.boxplot([times[k] for k in keys], showfliers=False)
    ax.set_xticks(range(1, 5), labels, fontsize=8)
    ax.set_ylabel(f"seconds per step ({clock} time)")
    ax.set_title("time per step (interleaved)", fontsize=9)
    ax = axes[1]
    mk = ["seed", "weight", "iteration"]
    ax.bar(range(3), [mem[k]["maxrss_mb"] for k in mk], color=["#888", "#4a8", "#48c"])
    ax.bar(range(3), [mem[k]["rss_after_build_mb"] for k in mk], color="none", edgecolor="k",
           hatch="//", label="RSS after build")
    ax.set_xticks(range(3), ["seed step", "weight step", "iteration"], fontsize=8)
    ax.set_ylabel("peak RSS (MB)")
    ax.legend(fontsize=7)
    ax.set_title("peak memory (separate processes)", fontsize=9)
    return C.finish_fig(fig, path)


def main(argv=None) -> int:
    ap = C.arg_parser(__doc__, "smoke mode: small images, 2 rounds")
    ap.add_argument("--size", type=int, default=None, help="image side (default 320; quick 128)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7; quick 1)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: stable ratios on a shared machine)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=3, help="steps per memory subprocess")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--mem-worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    size = args.size or (128 if args.quick else 320)
    os.chdir(C.REPO)
    if args.mem_worker:
        print(json.dumps(mem_worker(args.mem_worker, size, args.batch, args.steps, args.device,
                                    args.threads)))
        return 0
    t_start = time.perf_counter()
    rounds = args.rounds or (1 if args.quick else 7)
    warm = 1
    mem_steps = 1 if args.quick else args.steps
    # memory first: the workers are spawned before this process builds any model
    mem = measure_memory(size, args.batch, mem_steps, args.device, args.threads)
    torch.set_num_threads(args.threads)
    C.quiet_logs()
    machine = C.machine_info(args.threads)
    print(f"[search_step] {size}x{size}, batch {args.batch}, {args.threads} thread(s), "
          f"{rounds} timed rounds after {warm} warm-up round(s)", flush=True)
    seed_tr, _ = build_seed(size, args.batch, args.device)
    runner, _ = build_search(size, args.batch, args.device)
    both = time_interleaved(seed_tr, runner, rounds, warm, args.device)
    # headline clock: process CPU time with 1 thread on a CPU (immune to other processes'
    # load, which inflates wall time by whatever share of the cores they take), wall time
    # otherwise (GPU, or several threads)
    clock = "cpu" if args.threads == 1 and args.device == "cpu" else "wall"
    fig: Dict[str, Any] = {"clock": clock}
    for c, times in both.items():
        med = {v: C.median(times[v]) for v in VARIANTS}
        per_round = {v: [a / b for a, b in zip(times[v], times["seed"])] for v in VARIANTS}
        f = {"seed_step_s": med["seed"], "iteration_s": med["iteration"],
             "weight_step_s": med["weight"], "arch_step_s": med["arch"],
             "iteration_ratio": med["iteration"] / med["seed"],
             "weight_ratio": med["weight"] / med["seed"],
             "arch_ratio": med["arch"] / med["seed"],
             "iteration_ratio_per_round": C.summary(per_round["iteration"]),
             "weight_ratio_per_round": C.summary(per_round["weight"]),
             "times_s": {v: C.summary(times[v]) for v in VARIANTS}}
        fig[c] = f
        for k in ("iteration", "weight", "arch"):
            print(f"[search_step] {c} clock: {k} {med[k]:.3f} s = {f[k + '_ratio']:.2f}x the "
                  f"seed step ({med['seed']:.3f} s)", flush=True)
    for k in ("iteration_ratio", "weight_ratio", "arch_ratio", "seed_step_s", "iteration_s",
              "weight_step_s", "arch_step_s"):
        fig[k] = fig[clock][k]
    times = both[clock]
    fig["memory_mb"] = mem
    fig["memory_ratio_iteration"] = mem["iteration"]["maxrss_mb"] / mem["seed"]["maxrss_mb"]
    fig["memory_ratio_weight"] = mem["weight"]["maxrss_mb"] / mem["seed"]["maxrss_mb"]
    fig["memory_increase_ratio_iteration"] = (mem["iteration"]["step_increase_mb"]
                                              / max(1e-9, mem["seed"]["step_increase_mb"]))
    fig["memory_increase_ratio_weight"] = (mem["weight"]["step_increase_mb"]
                                           / max(1e-9, mem["seed"]["step_increase_mb"]))
    prof = None
    if not args.no_profile:
        print("[search_step] profiling one step of each variant", flush=True)
        prof = profile(lambda v: _step(v, seed_tr, runner),
                       {"seed": seed_tr.model, "arch": runner.model, "weight": runner.model},
                       args.device)
        for v, p in prof.items():
            print(f"[search_step] profile {v}: forward breakdown (ms) "
                  + ", ".join(f"{k} {x:.0f}" for k, x in p["forward_breakdown_ms"].items()))
            print(f"[search_step]   groups (self CPU ms): "
                  + ", ".join(f"{k} {x:.0f}" for k, x in p["groups_ms"].items()))
    img = plot(times, mem, os.path.join(C.img_dir(args.quick), "bench_search_step.png"), clock)
    doc = {
        "machine": machine, "wall_time_s": time.perf_counter() - t_start,
        "settings": {"image_size": [size, size], "batch": args.batch, "threads": args.threads,
                     "device": args.device, "rounds": rounds, "warmup_rounds": warm,
                     "memory_steps": mem_steps,
                     "seed_config": "configs/demo/trees_baseline.yaml",
                     "search_config": "configs/demo/trees_search.yaml"},
        "figures": fig, "targets": TARGETS, "profile": prof,
        "plot": os.path.relpath(img, C.REPO)}
    doc["checks"] = checks(doc)
    C.write_result(NAME, args.quick, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
