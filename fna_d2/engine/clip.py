"""Gradient clipping of the weight optimizers (``SOLVER.CLIP_GRADIENTS.*``).

Detectron2's ``CLIP_TYPE`` "value" and "norm" clip **each parameter tensor** on its own; the
paper (mmcv's ``grad_clip``) clips the **global** norm of all gradients together. fna_d2 adds
``CLIP_TYPE "full_model"``: before every step, the ``NORM_TYPE``-norm of all the optimizer's
gradients taken as one vector is scaled down to at most ``CLIP_VALUE``
(``torch.nn.utils.clip_grad_norm_`` over every parameter that has a gradient). "value" and
"norm" keep detectron2's per-tensor meaning. Both trainers' weight optimizers go through
:func:`add_gradient_clipping`; this module is the one place these keys are read and checked.

Under DDP the gradients are all-reduced before the step, so every rank computes the same total
norm and clips by the same factor. Under float16 AMP the loss is scaled, and the clip lives in
``step``: detectron2's ``AMPTrainer`` and the search's weight step call
``GradScaler.step(optimizer)``, which unscales the gradients before calling ``step``, so the
clip sees true values (and a step with overflowed gradients is skipped before any clipping).
"""
from __future__ import annotations

from typing import Dict, Type

import torch

from detectron2.config import CfgNode
from detectron2.solver.build import maybe_add_gradient_clipping

from ..errors import ConfigError

__all__ = ["CLIP_TYPES", "GLOBAL_NORM", "check_clip_cfg", "add_gradient_clipping",
           "clip_global_norm", "without_clipping"]

#: the global-norm clip type added by fna_d2 (Mask2Former's name for the same idea)
GLOBAL_NORM = "full_model"
#: every accepted ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE``: detectron2's per-tensor ones and fna_d2's
CLIP_TYPES = ("value", "norm", GLOBAL_NORM)

_CLASSES: Dict[type, type] = {}


def check_clip_cfg(cfg: CfgNode) -> None:
    """Raise :class:`ConfigError` naming the key when ``SOLVER.CLIP_GRADIENTS`` is enabled with
    an unknown ``CLIP_TYPE`` or a ``CLIP_VALUE`` that is not > 0."""
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return
    if c.CLIP_TYPE not in CLIP_TYPES:
        raise ConfigError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE: unknown clip type {c.CLIP_TYPE!r}; known: "
            f"{', '.join(repr(t) for t in CLIP_TYPES)} ('{GLOBAL_NORM}' clips the global norm "
            f"of all gradients, as the paper does; 'norm' and 'value' clip each tensor)")
    if not float(c.CLIP_VALUE) > 0:
        raise ConfigError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0, got {c.CLIP_VALUE}")
    if c.CLIP_TYPE != "value" and not float(c.NORM_TYPE) > 0:
        raise ConfigError(f"SOLVER.CLIP_GRADIENTS.NORM_TYPE must be > 0, got {c.NORM_TYPE}")


def without_clipping(cfg: CfgNode) -> CfgNode:
    """A copy of ``cfg`` with ``SOLVER.CLIP_GRADIENTS.ENABLED`` off (to build the plain
    optimizer with detectron2's builder before :func:`add_gradient_clipping`)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    cfg.freeze()
    return cfg


def _global_norm_class(base: Type[torch.optim.Optimizer]) -> type:
    """``base`` whose ``step`` first clips the global norm of all its gradients; the limit and
    norm type are the instance's ``clip_max_norm`` / ``clip_norm_type``."""
    if base not in _CLASSES:
        def step(self, closure=None):
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            if params:
                torch.nn.utils.clip_grad_norm_(params, self.clip_max_norm, self.clip_norm_type)
            return base.step(self, closure)

        _CLASSES[base] = type(base.__name__ + "WithGlobalNormClip", (base,), {"step": step})
    return _CLASSES[base]


def add_gradient_clipping(cfg: CfgNode, optimizer: torch.optim.Optimizer
                          ) -> torch.optim.Optimizer:
    """``optimizer`` with ``SOLVER.CLIP_GRADIENTS`` applied (checked first, see
    :func:`check_clip_cfg`): "full_model" makes its ``step`` clip the global gradient norm of
    all its parameters to ``CLIP_VALUE``; "value"/"norm" are detectron2's per-tensor clipping;
    disabled returns it unchanged. The optimizer keeps its state and ``state_dict`` layout."""
    check_clip_cfg(cfg)
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return optimizer
    if c.CLIP_TYPE != GLOBAL_NORM:
        return maybe_add_gradient_clipping(cfg, optimizer)
    return clip_global_norm(optimizer, float(c.CLIP_VALUE), float(c.NORM_TYPE))


def clip_global_norm(optimizer: torch.optim.Optimizer, max_norm: float,
                     norm_type: float = 2.0) -> torch.optim.Optimizer:
    """``optimizer`` (changed in place and returned) whose ``step`` first clips the global
    ``norm_type``-norm of all its parameters' gradients to ``max_norm``; state and
    ``state_dict`` layout unchanged. Used for "full_model" and for the alphas
    (``SOLVER.ARCH.CLIP_VALUE``)."""
    optimizer.__class__ = _global_norm_class(type(optimizer))
    optimizer.clip_max_norm = float(max_norm)
    optimizer.clip_norm_type = float(norm_type)
    return optimizer
