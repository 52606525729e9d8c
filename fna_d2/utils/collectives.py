"""Collectives that are right on every backend: control-plane values (paths, flags, small ints,
the latency table, per-rank checkpoint state) broadcast from one rank or gathered from all, and
an in-place all-reduce mean of tensors.

Why a gloo group: detectron2's ``launch`` initialises the default group with NCCL whenever CUDA
is available, and NCCL runs collectives on CUDA tensors only (a CPU tensor raises ``No backend
type associated with device type cpu``); its object collectives copy the pickled bytes to the
current CUDA device. Control-plane values are small Python objects that every rank needs on the
host, so they travel through a gloo group of all ranks (:func:`control_group`), created once per
default group next to it — on a gloo-only run that is a second gloo group, on an NCCL run it is
what serves CPU tensors. This works the same with CUDA, without it, and for CPU models on a
CUDA host, needs no current CUDA device, and costs one host round trip per value (microseconds
next to an iteration). Tensors are reduced where they live: CPU tensors through the gloo group,
CUDA tensors through the default group (NCCL on a GPU server)."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist

__all__ = ["world_size", "control_group", "broadcast_object", "all_gather_object",
           "all_reduce_mean_"]

_CONTROL: Dict[str, Any] = {"world": None, "group": None}


def world_size() -> int:
    """The number of ranks (1 when torch.distributed is not initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def control_group() -> Optional[Any]:
    """The gloo group of all ranks for control-plane values (``None`` with one rank). Created on
    first use, which every rank reaches together (it is a collective call)."""
    if world_size() == 1:
        return None
    world = dist.group.WORLD
    if _CONTROL["world"] is not world:  # a new default group: its own control group
        _CONTROL["group"] = dist.new_group(backend="gloo")
        _CONTROL["world"] = world
    return _CONTROL["group"]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable value) on every rank; ``obj`` itself with one rank.
    Every rank must call it; the others' ``obj`` is ignored."""
    group = control_group()
    if group is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=group, device=torch.device("cpu"))
    return box[0]


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's ``obj`` (any picklable value), in rank order, on every rank; ``[obj]`` with
    one rank. Every rank must call it."""
    group = control_group()
    if group is None:
        return [obj]
    out: List[Any] = [None] * world_size()
    dist.all_gather_object(out, obj, group=group)
    return out


def all_reduce_mean_(tensors: Iterable[torch.Tensor]) -> None:
    """Replace every tensor by its mean over the ranks, in place. Tensors are coalesced per
    (device, dtype) into one flat buffer each (elementwise sums are unchanged by that); CPU
    buffers go through :func:`control_group`, the others through the default group."""
    n = world_size()
    if n == 1:
        return
    buckets: Dict[Tuple[torch.device, torch.dtype], List[torch.Tensor]] = {}
    for t in tensors:
        buckets.setdefault((t.device, t.dtype), []).append(t)
    for (device, _), ts in buckets.items():
        flat = torch.cat([t.detach().reshape(-1) for t in ts])
        group = control_group() if device.type == "cpu" else None
        dist.all_reduce(flat, group=group)
        flat.div_(n)
        offset = 0
        with torch.no_grad():
            for t in ts:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()
