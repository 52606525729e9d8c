"""SSDLite's prediction head: :class:`SSDLiteHead`. Per level, two depthwise-separable 3x3
branches (depthwise conv + BN + ReLU6, then a pointwise conv + BN, linear; with
``output_norm`` False (``MODEL.SSDLITE.HEAD_OUTPUT_NORM``) a plain pointwise conv with bias,
no norm), one for the class
logits (``A * (C + 1)`` channels, background last as detectron2 numbers classes) and one for the
box deltas (``A * 4``). Convs are initialised normal(0, ``MODEL.SSDLITE.INIT_STD``)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from ..ops import ConvBN, NormSpec
from .backbone import init_normal

__all__ = ["SeparablePredictor", "SSDLiteHead", "flatten_predictions"]


class SeparablePredictor(nn.Sequential):
    """``dw`` (3x3 depthwise + norm + ReLU6) then ``pw``: 1x1 to ``cout``, linear, + norm
    (``output_norm``, the authors') or with a bias instead."""

    def __init__(self, cin: int, cout: int, norm: NormSpec, bn_eps: float,
                 output_norm: bool = True) -> None:
        super().__init__()
        self.add_module("dw", ConvBN(cin, cin, 3, 1, groups=cin, norm=norm, bn_eps=bn_eps))
        self.add_module("pw", ConvBN(cin, cout, 1, norm=norm, act=False, bn_eps=bn_eps)
                        if output_norm else nn.Conv2d(cin, cout, 1, bias=True))


def flatten_predictions(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, A * k, H, W) -> (N, H * W * A, k): location major, anchor minor (as the anchors)."""
    n, _, h, w = x.shape
    return x.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)


class SSDLiteHead(nn.Module):
    """``cls_heads[i]`` / ``box_heads[i]``: the two predictors of level ``i``."""

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int,
                 norm: NormSpec = "BN", bn_eps: float = 1e-3, init_std: float = 0.03,
                 output_norm: bool = True) -> None:
        super().__init__()
        if len(in_channels) != len(num_anchors):
            raise ValueError(f"{len(in_channels)} feature maps but anchors for "
                             f"{len(num_anchors)} levels")
        self.num_classes = int(num_classes)
        self.cls_heads = nn.ModuleList([
            SeparablePredictor(c, a * (self.num_classes + 1), norm, bn_eps, output_norm)
            for c, a in zip(in_channels, num_anchors)])
        self.box_heads = nn.ModuleList([
            SeparablePredictor(c, a * 4, norm, bn_eps, output_norm) for c, a in zip(in_channels, num_anchors)])
        init_normal(self, init_std)

    def forward(self, features: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N, R, C + 1) class logits and (N, R, 4) box deltas over all R anchors."""
        cls = [flatten_predictions(h(f), self.num_classes + 1)
               for h, f in zip(self.cls_heads, features)]
        box = [flatten_predictions(h(f), 4) for h, f in zip(self.box_heads, features)]
        return torch.cat(cls, dim=1), torch.cat(box, dim=1)
