"""A process-group condition that behaves as NCCL does towards CPU tensors, on CPU processes.

detectron2's ``launch`` initialises NCCL whenever CUDA is available, and NCCL runs collectives
on CUDA tensors only: a CPU tensor given to ``torch.distributed.broadcast``/``all_reduce``/...
on the default group raises ``RuntimeError: No backend type associated with device type cpu``.
Gloo (what ``launch`` uses without CUDA) accepts them, so a gloo-only test cannot see the bug.
:func:`install_nccl_like` (called in each spawned worker, after ``launch`` made the default
gloo group) replaces the public tensor collectives of ``torch.distributed`` with ones that
raise that error for a CPU tensor on the default group and pass everything else through: CPU
tensors on another group (a gloo group, as under NCCL) work. DDP's own gradient and buffer
traffic does not go through these functions (on a GPU server it is CUDA tensors on NCCL), nor
do the object collectives (under NCCL they copy to the current CUDA device, which detectron2's
``launch`` sets)."""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

NCCL_CPU_ERROR = "No backend type associated with device type cpu"
TENSOR_COLLECTIVES = ("broadcast", "all_reduce", "reduce", "all_gather", "all_gather_into_tensor",
                      "gather", "scatter", "reduce_scatter", "reduce_scatter_tensor",
                      "all_to_all", "all_to_all_single", "send", "recv", "isend", "irecv")


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def _refusing_cpu_on_default(fn: Callable) -> Callable:
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(*args, **kwargs)
        group = bound.arguments.get("group")
        if group is None or group is dist.group.WORLD:
            if any(t.device.type == "cpu" for v in bound.arguments.values()
                   for t in _tensors(v)):
                raise RuntimeError(NCCL_CPU_ERROR)
        return fn(*args, **kwargs)

    wrapper.nccl_like = True
    return wrapper


def install_nccl_like() -> None:
    """Make CPU-tensor collectives on the default group raise as under NCCL (this process)."""
    for name in TENSOR_COLLECTIVES:
        fn = getattr(dist, name, None)
        if fn is not None and not getattr(fn, "nccl_like", False):
            setattr(dist, name, _refusing_cpu_on_default(fn))
