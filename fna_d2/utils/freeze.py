"""Freezing context managers for alternating optimisation (the search's arch and weight
steps): :func:`frozen` stops gradients to some parameters, :func:`frozen_bn_statistics` leaves
BatchNorm running statistics as they were. Both restore the previous state on exit, errors
included."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

__all__ = ["frozen", "frozen_bn_statistics"]


@contextmanager
def frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """No gradient flows to ``params`` inside the block (``requires_grad`` is restored after)."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


@contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[None]:
    """BN running statistics (mean, var, batch count) of ``model`` are restored after the
    block; inside it, training-mode BNs still normalise with batch statistics."""
    saved = [(b, b.detach().clone()) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)
