"""The ops of the backbones: :mod:`fna_d2.blocks` (``k{3,5,7}_e{1,3,6}`` MBConv blocks and
``skip``, :func:`build_op`, :class:`ConvBN`, the norms, :func:`make_norm`; plain torch modules
that latency tables also time), re-exported here, and :func:`naive_sync_bn`, which turns every
``nn.SyncBatchNorm`` of a built model into detectron2's ``NaiveSyncBatchNorm`` (the trainers'
fallback for CPU processes).
"""
from __future__ import annotations

from torch import nn

from detectron2.layers import NaiveSyncBatchNorm

from ..blocks import SEARCH_BN, ConvBN, MBConv, NormSpec, build_op, make_norm

__all__ = ["SEARCH_BN", "NormSpec", "make_norm", "naive_sync_bn", "ConvBN", "MBConv",
           "build_op"]


def naive_sync_bn(module: nn.Module) -> int:
    """Replace every ``nn.SyncBatchNorm`` inside ``module`` (in place) by detectron2's
    ``NaiveSyncBatchNorm`` with the same settings, parameters, buffers and train/eval mode;
    returns how many were replaced. ``nn.SyncBatchNorm`` refuses CPU modules in a multi-process
    run; the naive one all-reduces the batch mean and mean square over the default group, which
    works on CPU (gloo), weighting every process equally. The state-dict keys are unchanged."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.SyncBatchNorm):
            new = NaiveSyncBatchNorm(child.num_features, eps=child.eps, momentum=child.momentum,
                                     affine=child.affine,
                                     track_running_stats=child.track_running_stats)
            tensors = list(child.parameters()) + list(child.buffers())
            if tensors:
                new.to(tensors[0].device)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
            count += 1
        else:
            count += naive_sync_bn(child)
    return count
