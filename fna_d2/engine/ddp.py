"""Distributed data parallel helpers shared by the trainers: wrapping a model (CPU models too)
and averaging BN running statistics across ranks."""
from __future__ import annotations

from typing import Any

from torch import nn

from detectron2.engine import create_ddp_model

from ..utils.collectives import all_reduce_mean_

__all__ = ["ddp_model", "average_bn_buffers"]


def ddp_model(model: nn.Module, **kwargs: Any) -> nn.Module:
    """detectron2's ``create_ddp_model``, also for CPU models (it would pass
    ``device_ids=[local_rank]``, which DistributedDataParallel refuses for CPU modules)."""
    first = next(model.parameters(), None)
    if first is not None and first.device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return create_ddp_model(model, **kwargs)


def average_bn_buffers(model: nn.Module) -> None:
    """All-reduce (mean) BN running statistics so every rank keeps the same ones, where the
    buffers live (CPU buffers through the gloo control group, CUDA ones through the default
    group: :func:`fna_d2.utils.collectives.all_reduce_mean_`)."""
    all_reduce_mean_([buf for m in model.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                      for buf in (m.running_mean, m.running_var) if buf is not None])
