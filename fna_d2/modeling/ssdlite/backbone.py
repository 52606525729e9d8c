"""SSDLite's feature extractor as a detectron2 :class:`Backbone` (:class:`SSDLiteBackbone`,
built by the registered ``build_fna_ssdlite_backbone``): an FNA network with SSDLite's taps
(``bottom_up``, :mod:`.taps`) and the four extra layers (``extras``), six maps in all.

Extra layer ``i``: 1x1 conv ``cin -> mid`` + BN + ReLU6, then a depthwise-separable 3x3 stride-2
conv (depthwise + BN + ReLU6, pointwise ``mid -> out`` + BN + ReLU6), with
(mid, out) = (256, 512), (128, 256), (128, 256), (64, 128) as the authors' SSDLite; convs
initialised normal(0, ``MODEL.SSDLITE.INIT_STD``). For a 320x320 input the maps are
576 @ 20, 1280 @ 10, 512 @ 5, 256 @ 3, 256 @ 2, 128 @ 1.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone

from ...errors import ConfigError
from ..ops import ConvBN, NormSpec
from .taps import SSDLiteDerivedNet, SSDLiteSuperNet

__all__ = ["EXTRA_CHANNELS", "FEATURES", "ExtraLayer", "SSDLiteBackbone",
           "build_fna_ssdlite_backbone", "init_normal"]

#: (mid, out) channels of the four extra layers
EXTRA_CHANNELS: Tuple[Tuple[int, int], ...] = ((256, 512), (128, 256), (128, 256), (64, 128))
#: output names, in head order
FEATURES: Tuple[str, ...] = tuple(f"ssd{i}" for i in range(2 + len(EXTRA_CHANNELS)))


def init_normal(module: nn.Module, std: float) -> None:
    """Every conv of ``module``: weight ~ normal(0, std), bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ExtraLayer(nn.Sequential):
    """``reduce`` (1x1), ``dw`` (3x3 depthwise, stride 2), ``project`` (1x1); each conv + norm
    + ReLU6."""

    def __init__(self, cin: int, mid: int, cout: int, norm: NormSpec, bn_eps: float) -> None:
        kw = dict(norm=norm, bn_eps=bn_eps)
        super().__init__()
        self.add_module("reduce", ConvBN(cin, mid, 1, **kw))
        self.add_module("dw", ConvBN(mid, mid, 3, 2, groups=mid, **kw))
        self.add_module("project", ConvBN(mid, cout, 1, **kw))


class SSDLiteBackbone(Backbone):
    """``bottom_up`` (an :class:`SSDLiteDerivedNet` / :class:`SSDLiteSuperNet`) then
    ``extras``; outputs ``ssd0`` .. ``ssd5``."""

    @configurable
    def __init__(self, bottom_up: nn.Module, *, norm: NormSpec = "BN", bn_eps: float = 1e-3,
                 init_std: float = 0.03,
                 extra_channels: Sequence[Tuple[int, int]] = EXTRA_CHANNELS) -> None:
        super().__init__()
        self.bottom_up = bottom_up
        shapes = bottom_up.output_shape()
        cin = shapes["head"].channels
        extras: List[nn.Module] = []
        channels = [shapes["tap"].channels, cin]
        for mid, cout in extra_channels:
            extras.append(ExtraLayer(cin, mid, cout, norm, bn_eps))
            channels.append(cout)
            cin = cout
        self.extras = nn.ModuleList(extras)
        init_normal(self.extras, init_std)
        names = FEATURES[:len(channels)]
        self._out_features = list(names)
        self._out_feature_channels = dict(zip(names, channels))
        self._out_feature_strides = {n: 16 * 2 ** i for i, n in enumerate(names)}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        network = cfg.MODEL.FNA.NETWORK
        if network == "super":
            bottom_up = SSDLiteSuperNet(cfg, input_shape)
        elif network == "derived":
            bottom_up = SSDLiteDerivedNet(cfg, input_shape)
        else:
            raise ConfigError(f"MODEL.FNA.NETWORK: SSDLite builds 'super' or 'derived' "
                              f"networks, got {network!r} (the seed itself is 'derived' with an "
                              "empty MODEL.FNA.ARCH)")
        s = cfg.MODEL.SSDLITE
        return {"bottom_up": bottom_up, "norm": s.NORM, "bn_eps": s.BN_EPS,
                "init_std": s.INIT_STD}

    @property
    def size_divisibility(self) -> int:
        return 0

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        taps = self.bottom_up(x)
        maps = [taps["tap"], taps["head"]]
        y = maps[-1]
        for layer in self.extras:
            y = layer(y)
            maps.append(y)
        return dict(zip(self._out_features, maps))


@BACKBONE_REGISTRY.register()
def build_fna_ssdlite_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """SSDLite's six maps over the FNA network of ``MODEL.FNA.NETWORK`` ("super" or
    "derived"); see :class:`SSDLiteBackbone`."""
    return SSDLiteBackbone(cfg, input_shape)
