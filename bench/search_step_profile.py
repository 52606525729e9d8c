"""Where the time of a search / training step goes (``bench/bench_search_step.py``): one
profiled step per variant (torch.profiler self CPU times grouped by op kind) and the forward
time of backbone, FPN and head from module hooks."""
from __future__ import annotations

import time
from typing import Any, Callable, Dict

from detectron2.utils.events import EventStorage
from torch.profiler import ProfilerActivity, profile as tprofile

__all__ = ["profile"]


def profile(step: Callable[[str], None], models: Dict[str, Any], device: str, top: int = 12
            ) -> Dict[str, Any]:
    """torch.profiler of one step of each variant in ``models`` (``{variant: the model its
    step(variant) runs}``, e.g. seed, arch, weight): top ops by self CPU time, and forward time
    of backbone (bottom-up), FPN and head per variant."""
    out: Dict[str, Any] = {}
    with EventStorage(0):
        for v in models:  # warm
            step(v)
        for v, model in models.items():
            fwd = _forward_breakdown(model, lambda: step(v))
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                            if device.startswith("cuda") else [])
            with tprofile(activities=acts) as prof:
                step(v)
            ka = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in ka) / 1e3
            rows = sorted(ka, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
            groups: Dict[str, float] = {}
            for e in ka:
                groups[_op_group(e.key)] = groups.get(_op_group(e.key), 0.0) + \
                    e.self_cpu_time_total / 1e3
            out[v] = {"total_self_cpu_ms": total, "forward_breakdown_ms": fwd,
                      "groups_ms": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
                      "top_ops": [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                                   "calls": e.count} for e in rows]}
    return out


def _op_group(key: str) -> str:
    k = key.lower()
    if "convolution_backward" in k or "conv_depthwise2d_backward" in k:
        return "conv backward"
    if "conv" in k:
        return "conv forward"
    if "batch_norm" in k or "native_batch_norm" in k:
        return "batch norm (fwd+bwd)"
    if "hardtanh" in k or "relu" in k:
        return "ReLU6 (fwd+bwd)"
    if any(s in k for s in ("add", "mul", "sum", "copy_", "fill_", "zero_")):
        return "elementwise / copies"
    if "sgd" in k or "_foreach" in k or "norm" in k:
        return "optimizer / grad clipping"
    return "other"


def _forward_breakdown(model, step) -> Dict[str, float]:
    """Forward time (ms of process CPU time: with 1 thread the compute time, unaffected by
    other processes) of backbone.bottom_up, the FPN (rest of backbone) and the head during one
    ``step()``, from forward pre-/post-hooks; the rest is backward + optimizer + metrics."""
    spans: Dict[str, float] = {}
    starts: Dict[str, float] = {}
    handles = []
    parts = {"bottom_up": model.backbone.bottom_up, "backbone": model.backbone,
             "head": model.head}
    for name, mod in parts.items():
        def pre(m, i, name=name):
            starts[name] = time.process_time()

        def post(m, i, o, name=name):
            spans[name] = spans.get(name, 0.0) + (time.process_time() - starts[name]) * 1e3
        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    t0 = time.process_time()
    try:
        step()
    finally:
        for h in handles:
            h.remove()
    total = (time.process_time() - t0) * 1e3
    bu = spans.get("bottom_up", 0.0)
    return {"step_total": total, "backbone_bottom_up_fwd": bu,
            "fpn_fwd": spans.get("backbone", 0.0) - bu, "head_fwd": spans.get("head", 0.0),
            "backward_optimizer_rest": total - spans.get("backbone", 0.0)
            - spans.get("head", 0.0)}
