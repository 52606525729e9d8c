"""Freezing backbone blocks (``MODEL.FNA.FREEZE_AT``): no gradients, and affine tracking BNs
turned into detectron2's ``FrozenBatchNorm2d``."""
from __future__ import annotations

from typing import Sequence, Tuple

from torch import nn

from detectron2.layers import FrozenBatchNorm2d

__all__ = ["freeze_module", "check_freeze_at", "freeze_blocks"]


def freeze_module(module: nn.Module) -> nn.Module:
    """Stop gradients of ``module`` and turn its (affine, tracking) BNs into FrozenBN.
    Returns the module to use in its place."""
    for p in module.parameters():
        p.requires_grad_(False)
    bn_types = (nn.BatchNorm2d, nn.SyncBatchNorm)
    if isinstance(module, bn_types):
        if not (module.affine and module.track_running_stats):
            return module  # batch-statistics BN of the super net: nothing to freeze
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_module(child)
        if new is not child:
            setattr(module, name, new)
    return module


def check_freeze_at(freeze_at: int, num_blocks: int) -> None:
    """ValueError naming ``MODEL.FNA.FREEZE_AT`` unless ``0 <= freeze_at <= num_blocks`` (the
    stem and the stages)."""
    if not 0 <= freeze_at <= num_blocks:
        raise ValueError(f"MODEL.FNA.FREEZE_AT (freeze_at) must be in [0, {num_blocks}] (stem "
                         f"+ {num_blocks - 1} stages), got {freeze_at}")


def freeze_blocks(blocks: Sequence[Tuple[nn.Module, str, nn.Module]], freeze_at: int) -> None:
    """``blocks``: (parent, attribute, module) for stem, stage 0, stage 1, ...; freezes the
    first ``freeze_at`` of them (each replaced in its parent by its frozen version)."""
    check_freeze_at(freeze_at, len(blocks))
    for parent, attr, mod in blocks[:freeze_at]:
        new = freeze_module(mod)
        if new is not mod:
            setattr(parent, attr, new)
