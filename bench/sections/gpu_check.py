"""Section 6 of ``docs/benchmarks.md``: the GPU check (``bench/gpu_check.py``): seconds per
iteration, peak GPU memory and projected GPU-days of the COCO RetinaNet search and adaptation.
Without a stored GPU result it says so; a CPU / ``--quick`` result is labelled as one."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .fmt import f, status

__all__ = ["section", "summary"]

#: the paper's costs (FNA.md sec. 7), shown as the paper's
PAPER_GPU_DAYS = {"search": 6.0, "adapt": 3.2}
_COMMAND = "bash bench/gpu_check.sh"


def _is_gpu(r: Dict[str, Any]) -> bool:
    return bool((r.get("machine") or {}).get("gpu")) and not r.get("quick")


def _not_run() -> List[str]:
    return [
        "**Not run on a GPU yet.** No GPU has been available to fna_d2's development so far: "
        "nothing on this page was measured on a GPU, and this section has no numbers of its "
        "own. What the check will measure, on one GPU in under 8 minutes "
        f"(`{_COMMAND}`, see `docs/gpu.md`): the COCO RetinaNet search and adaptation configs "
        "at the paper's input size (shortest edge 800, longest <= 1333) and per-GPU batch "
        "(search 8 images / 8 GPUs = 1, adaptation 32 / 8 = 4), in fp32 and mixed precision "
        "(fp16, bf16); seconds per iteration, peak GPU memory, and the GPU-days of the full "
        "schedules projected from them next to the paper's own cost, **6 GPU-days of search "
        "and 3.2 GPU-days of training** (the paper's numbers, FNA spec sec. 7). Its `--quick` "
        "CPU smoke run is part of the test suite (`tests/test_gpu_check.py`), so the code "
        "path is exercised; its numbers are not stored.", ""]


def _machine(r: Dict[str, Any]) -> str:
    m = r.get("machine") or {}
    g = m.get("gpu")
    gpu = (f"GPU {g['name']} ({g['memory_gb']} GB, compute capability {g['capability']}), "
           f"CUDA {m.get('cuda_version')}, cuDNN {g.get('cudnn')}" if g else "no GPU")
    return (f"{gpu}; CPU {m.get('cpu')} ({m.get('logical_cores')} logical cores); torch "
            f"{m.get('torch')}; {r.get('date')}, commit `{m.get('git')}`")


def _times(rec: Dict[str, Any]) -> str:
    s = rec.get("s_per_iter") or {}
    if "step" in s:
        return f"step {f(s['step']['median'], 3)}"
    return " / ".join(f"{lbl} {f(s[k]['median'], 3)}" for k, lbl in
                      (("weight_step", "warm-up weight step"),
                       ("iteration", "arch + weight iteration")) if k in s) or "-"


def section(r: Optional[Dict[str, Any]], doc: str) -> List[str]:
    out = ["## 6. GPU check (`bench/gpu_check.py`)", ""]
    if not r:
        return out + _not_run()
    if not _is_gpu(r):
        out += ["**CPU smoke result (`--quick` or no GPU), not a GPU measurement: these "
                "numbers mean nothing for a GPU server.**", ""]
    st = r["settings"]
    out += [f"Machine: {_machine(r)}. Command: `{st.get('command')}`; {st['cold_steps']} "
            f"untimed and {st['timed_steps']} timed steps per phase (medians), on "
            f"{st['data']['images']} synthetic COCO-size images ({st['data']['pixels']}, "
            f"{st['data']['boxes_per_image']} random boxes each), {st['weights']}. The whole "
            f"check took {r['wall_time_s'] / 60:.1f} min.", ""]
    out += ["| config | precision | status | per-GPU batch | input (HxW) | s / iteration | "
            "data time (s, median) | peak GPU memory (MiB) | compute dtype | projected GPU-days | "
            "paper's GPU-days |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rec in r["runs"]:
        p = rec.get("projection") or {}
        sizes = rec.get("input_sizes_hw") or []
        hw = ", ".join(f"{h}x{w}" for h, w in sizes[:4]) + (", ..." if len(sizes) > 4 else "")
        dt = rec.get("data_time_s") or {}
        out.append(
            f"| {rec['config']} | {rec['precision']} | {rec['status']} | "
            f"{rec['per_gpu_batch']} | {hw or '-'} | "
            f"{_times(rec) if rec['status'] == 'ok' else '-'} | "
            f"{f(max(dt.values()), 3) if dt else '-'} | {f(rec.get('peak_memory_mb'), 0)} | "
            f"{', '.join(d.replace('torch.', '') for d in rec.get('observed_dtypes') or []) or '-'}"
            f" | {f(p.get('gpu_days'))} | {PAPER_GPU_DAYS[rec['config']]:g} |")
    out.append("")
    for rec in r["runs"]:
        if rec.get("reason"):
            out.append(f"- {rec['config']} {rec['precision']}: {rec['status']}: {rec['reason']}")
    sch = r["schedules"]
    out += ["", "Projection (GPU-hours of the full paper schedule, every GPU's time counted; "
            "perfect data-parallel scaling assumed, since one GPU cannot measure the gradient "
            "all-reduce and SyncBN traffic, so it is a lower bound):", "",
            f"- search: `{r['formulas']['search']}` with WARMUP_ITERS = "
            f"{sch['search']['warmup_iters']}, MAX_ITER = {sch['search']['max_iter']} "
            f"(`{sch['search']['config']}`), GPUS = {sch['search']['paper_gpus']};",
            f"- adaptation: `{r['formulas']['adapt']}` with MAX_ITER = "
            f"{sch['adapt']['max_iter']} (`{sch['adapt']['config']}`), GPUS = "
            f"{sch['adapt']['paper_gpus']}.", "",
            "The paper's 6 GPU-days (search) and 3.2 GPU-days (training) are its own figures "
            "(FNA spec sec. 7) on its own GPUs, which the spec does not name.", ""]
    out += ["| check | value | target | status |", "|---|---|---|---|"]
    for c in r.get("checks") or []:
        v = f(c["value"]) if isinstance(c["value"], float) else c["value"]
        out.append(f"| {c['text']} | {v} | {c['target'] or '-'} | {status(c['met'])} |")
    out.append("")
    out += [f"Note: {n}." for n in r.get("notes") or []]
    return out + [""]


def summary(r: Optional[Dict[str, Any]]) -> List[str]:
    if not r or not _is_gpu(r):
        return ["| GPU check | projected GPU-days, search / adaptation (paper: 6 / 3.2) | "
                "not run on a GPU yet | - | |"]
    gpu = r["machine"]["gpu"]["name"]
    return [f"| GPU check | {rec['config']} {rec['precision']}: projected GPU-days on {gpu} | "
            f"{f(rec['projection']['gpu_days'])} | paper {PAPER_GPU_DAYS[rec['config']]:g} | |"
            for rec in r["runs"] if rec.get("projection")]
