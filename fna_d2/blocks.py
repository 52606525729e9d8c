"""The ops as plain torch modules: ``k{3,5,7}_e{1,3,6}`` MBConv blocks and ``skip``
(:func:`build_op`), :class:`ConvBN` and the norms (:func:`make_norm`). Importing this module
needs torch only (no detectron2), so what latency tables time can be built on a box that has
only torch and fna_d2 (``python -m fna_d2.latency``); :mod:`fna_d2.modeling.ops` re-exports
all of it for the backbones.

Submodule names follow ``docs/design.md``: an MBConv has ``expand`` (absent when e == 1),
``dw`` and ``project``, each a :class:`ConvBN` with ``conv`` and ``bn``. Convs have no bias;
activations are ReLU6; ``project`` is linear; the residual is added iff cin == cout and the
stride is 1. Depthwise convs use "same" padding ``dilation * (k - 1) // 2``.

Norms: ``"BN"`` (``nn.BatchNorm2d``), ``"SyncBN"``, ``"FrozenBN"`` and detectron2's other names
(detectron2 :func:`get_norm`, imported when one of them is asked for), all with the given BN
eps / momentum; ``"GN"`` (gcd(32, channels) groups: detectron2's fixed 32 groups do not divide
MobileNet widths such as 16 or 24), :data:`SEARCH_BN` (``BatchNorm2d(affine=False,
track_running_stats=False)``: the searchable layers of the super network), or a callable
``channels -> nn.Module``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
from torch import nn

from .arch import ArchError, parse_op

__all__ = ["SEARCH_BN", "NormSpec", "make_norm", "ConvBN", "MBConv", "build_op"]

#: norm name of the super network's searchable layers: non-affine, batch statistics only
SEARCH_BN = "SearchBN"

NormSpec = Union[str, Callable[[int], nn.Module], None]


def make_norm(norm: NormSpec, channels: int, eps: float = 1e-3, momentum: float = 0.1
              ) -> nn.Module:
    """Build the norm layer for ``channels``; BN-like layers get ``eps`` / ``momentum``."""
    if norm == SEARCH_BN:
        return nn.BatchNorm2d(channels, eps=eps, momentum=momentum, affine=False,
                              track_running_stats=False)
    if norm is None or norm == "":
        return nn.Identity()
    if norm == "GN":  # detectron2's GN has 32 groups, which 16/24/144... channels do not allow
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if callable(norm):
        layer = norm(channels)
    elif norm == "BN":  # what detectron2's get_norm("BN") builds, without detectron2
        layer = nn.BatchNorm2d(channels)
    else:  # SyncBN, FrozenBN, naiveSyncBN...: detectron2's (only imported for them)
        from detectron2.layers import get_norm

        layer = get_norm(norm, channels)
    if isinstance(layer, nn.modules.batchnorm._NormBase):
        layer.eps = eps
        layer.momentum = momentum
    elif hasattr(layer, "eps") and not isinstance(layer, nn.GroupNorm):
        layer.eps = eps  # FrozenBatchNorm2d: no momentum
    return layer


class ConvBN(nn.Module):
    """``conv`` (no bias) -> ``bn`` -> optional ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, dilation: int = 1,
                 groups: int = 1, norm: NormSpec = "BN", act: bool = True, bn_eps: float = 1e-3,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, dilation * (kernel - 1) // 2,
                              dilation=dilation, groups=groups, bias=False)
        self.bn = make_norm(norm, cout, bn_eps, bn_momentum)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()
        # torchvision's MobileNetV2 init, so a randomly initialised net keeps O(1) activations
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> kxk depthwise -> 1x1 linear project (+ residual)."""

    def __init__(self, cin: int, cout: int, kernel: int, expansion: int, stride: int = 1,
                 dilation: int = 1, norm: NormSpec = "BN", bn_eps: float = 1e-3,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        mid = cin * expansion
        kw = dict(norm=norm, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.kernel, self.expansion = kernel, expansion
        self.stride, self.dilation = stride, dilation
        self.expand: Optional[ConvBN] = ConvBN(cin, mid, 1, **kw) if expansion != 1 else None
        self.dw = ConvBN(mid, mid, kernel, stride, dilation, groups=mid, **kw)
        self.project = ConvBN(mid, cout, 1, act=False, **kw)
        self.use_residual = cin == cout and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand is not None:
            y = self.expand(y)
        y = self.project(self.dw(y))
        if self.use_residual:
            y = y + x
        return y


def build_op(name: str, cin: int, cout: int, stride: int = 1, dilation: int = 1,
             norm: NormSpec = "BN", bn_eps: float = 1e-3, bn_momentum: float = 0.1) -> nn.Module:
    """Build op ``name`` (``k{3,5,7}_e{1,3,6}`` or ``skip``, as :func:`~fna_d2.arch.parse_op`
    reads them) mapping ``cin -> cout`` with ``stride`` and ``dilation``. Unknown names raise
    KeyError naming the known ops; ``skip`` needs ``cin == cout`` and stride 1 (ValueError)."""
    try:
        kernel_expansion = parse_op(name)
    except ArchError as e:
        raise KeyError(str(e)) from None
    if kernel_expansion is None:  # skip
        if cin != cout or stride != 1:
            raise ValueError(f"'skip' needs cin == cout and stride 1, got {cin}->{cout} "
                             f"stride {stride}")
        return nn.Identity()
    kernel, expansion = kernel_expansion
    return MBConv(cin, cout, kernel, expansion, stride, dilation, norm, bn_eps, bn_momentum)
