"""The depth, width and kernel rules of remapping (FNA sec. 4) and their ablation variants,
as pure functions on tensors.

Depth (:func:`depth_map`): target layer ``i`` of a stage inherits seed layer
``min(i, L_seed - 1)``.
Width strategies (``width=``, :func:`select_channels`): ``first_k`` (FNA) keeps channels
``[:k]``; ``bn_gamma``, ``std`` and ``l1`` keep the top-k hidden channels of an MBConv ranked
by |gamma| of the BN after the expand conv, by the expand conv filters' standard deviation,
or by their L1 norm, indices sorted ascending.
Kernel strategies (``kernel=``, :func:`fit_kernel`): ``center`` pads the seed kernel with
zeros around it (function-preserving) or centre-crops; ``dilated`` spreads a smaller kernel's
taps over the larger one (3x3 -> 5x5 at rows/cols 0,2,4; 3x3 -> 7x7 at 0,3,6; falls back to
``center`` when ``(k_t - 1)`` is not a multiple of ``(k_s - 1)``) and centre-crops smaller
targets.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..errors import RemapError

__all__ = ["WIDTH_STRATEGIES", "KERNEL_STRATEGIES", "select_channels", "fit_kernel",
           "depth_map"]

WIDTH_STRATEGIES: Tuple[str, ...] = ("first_k", "bn_gamma", "std", "l1")
KERNEL_STRATEGIES: Tuple[str, ...] = ("center", "dilated")


def select_channels(n_keep: int, strategy: str, conv_weight: Optional[Tensor] = None,
                    bn_gamma: Optional[Tensor] = None) -> Tensor:
    """Indices (ascending) of the ``n_keep`` output channels to keep.

    ``first_k``: ``0..n_keep-1``; ``bn_gamma``: largest |gamma|; ``std``: largest standard
    deviation of the conv filter; ``l1``: largest L1 norm of the conv filter. Ties keep the
    lower index. ``n_keep`` >= the number of channels keeps all of them."""
    if strategy not in WIDTH_STRATEGIES:
        raise RemapError(f"unknown width strategy {strategy!r}; choose from {WIDTH_STRATEGIES}")
    ref = conv_weight if conv_weight is not None else bn_gamma
    n = int(ref.shape[0]) if ref is not None else n_keep
    if strategy == "first_k" or n_keep >= n:
        return torch.arange(min(n_keep, n))
    if strategy == "bn_gamma":
        if bn_gamma is None:
            raise RemapError("width strategy 'bn_gamma' needs the BN weight (gamma) after the "
                             "conv, and the seed has none")
        score = bn_gamma.detach().float().abs()
    else:
        if conv_weight is None:
            raise RemapError(f"width strategy {strategy!r} needs the conv weight")
        flat = conv_weight.detach().float().flatten(1)
        score = flat.std(dim=1, unbiased=False) if strategy == "std" else flat.abs().sum(dim=1)
    order = torch.argsort(score, descending=True, stable=True)[:n_keep]
    return torch.sort(order).values


def fit_kernel(w: Tensor, k: int, mode: str = "center") -> Tensor:
    """Fit the spatial size of a conv weight ``(..., ks, ks)`` to ``k x k``.

    Larger: ``center`` puts ``w`` in the middle of zeros (function-preserving); ``dilated``
    spreads its taps with step ``(k-1)/(ks-1)`` when that is an integer (else ``center``).
    Smaller: centre crop."""
    if mode not in KERNEL_STRATEGIES:
        raise RemapError(f"unknown kernel strategy {mode!r}; choose from {KERNEL_STRATEGIES}")
    ks = int(w.shape[-1])
    if w.shape[-2] != ks:
        raise RemapError(f"non-square kernel {tuple(w.shape)} is not supported")
    if ks == k:
        return w.clone()
    if (ks - k) % 2:
        raise RemapError(f"cannot centre a {ks}x{ks} kernel in {k}x{k} (sizes must have the "
                         "same parity)")
    if k < ks:
        o = (ks - k) // 2
        return w[..., o:o + k, o:o + k].clone()
    out = w.new_zeros(w.shape[:-2] + (k, k))
    if mode == "dilated" and ks > 1 and (k - 1) % (ks - 1) == 0:
        d = (k - 1) // (ks - 1)
        out[..., ::d, ::d] = w
    else:
        o = (k - ks) // 2
        out[..., o:o + ks, o:o + ks] = w
    return out


def depth_map(seed_depth: int, target_depth: int) -> List[int]:
    """FNA's depth rule: target layer ``i`` <- seed layer ``min(i, seed_depth - 1)``."""
    return [min(i, seed_depth - 1) for i in range(target_depth)]
