"""The weight optimizer a config names (``SOLVER.OPTIMIZER``): detectron2's SGD, or RMSprop as
the authors trained SSDLite (lr 0.2, eps 1.0, momentum 0.9, wd 4e-5; torch's RMSprop with
``SOLVER.RMSPROP.ALPHA`` / ``EPS``). The trainers' ``build_optimizer`` hands it their parameter
groups (detectron2's ``get_default_optimizer_params``, alphas left out in the search)."""
from __future__ import annotations

from typing import Any, Dict, List

import torch

from ...errors import ConfigError

__all__ = ["OPTIMIZERS", "weight_optimizer"]

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
