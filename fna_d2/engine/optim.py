"""The weight optimizer a config names (``SOLVER.OPTIMIZER``): detectron2's SGD, or RMSprop as
the authors trained SSDLite (lr 0.2, eps 1.0, momentum 0.9, wd 4e-5; torch's RMSprop with
``SOLVER.RMSPROP.ALPHA`` / ``EPS``). The trainers' ``build_optimizer`` hands it their parameter
groups (detectron2's ``get_default_optimizer_params``, alphas left out in the search)."""
from __future__ import annotations

from typing import Any, Dict, List

import torch

from detectron2.solver.build import get_default_optimizer_params
from torch import nn

from ..errors import ConfigError

__all__ = ["OPTIMIZERS", "param_groups", "weight_optimizer"]

OPTIMIZERS = ("SGD", "RMSprop")


def weight_optimizer(cfg, groups: List[Dict[str, Any]]) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` over ``groups`` with ``SOLVER.BASE_LR`` / ``MOMENTUM`` /
    ``WEIGHT_DECAY`` (SGD also ``NESTEROV``; RMSprop ``RMSPROP.ALPHA`` / ``RMSPROP.EPS``)."""
    s = cfg.SOLVER
    name = s.OPTIMIZER
    if name == "SGD":
        return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV,
                               weight_decay=s.WEIGHT_DECAY)
    if name == "RMSprop":
        return torch.optim.RMSprop(groups, lr=s.BASE_LR, alpha=s.RMSPROP.ALPHA,
                                   eps=s.RMSPROP.EPS, momentum=s.MOMENTUM,
                                   weight_decay=s.WEIGHT_DECAY)
    raise ConfigError(f"SOLVER.OPTIMIZER: unknown optimizer {name!r}; known: "
                      f"{', '.join(OPTIMIZERS)}")


def param_groups(cfg, model: nn.Module, exclude=()) -> List[Dict[str, Any]]:
    """Detectron2's parameter groups of ``model`` (``BASE_LR``, ``WEIGHT_DECAY_NORM``,
    ``BIAS_LR_FACTOR``, ``WEIGHT_DECAY_BIAS``) without the parameters in ``exclude`` (the
    search's alphas); empty groups dropped."""
    s = cfg.SOLVER
    skip = {id(p) for p in exclude}
    groups = get_default_optimizer_params(
        model, base_lr=s.BASE_LR, weight_decay_norm=s.WEIGHT_DECAY_NORM,
        bias_lr_factor=s.BIAS_LR_FACTOR, weight_decay_bias=s.WEIGHT_DECAY_BIAS)
    for g in groups:
        g["params"] = [p for p in g["params"] if id(p) not in skip]
    return [g for g in groups if g["params"]]
