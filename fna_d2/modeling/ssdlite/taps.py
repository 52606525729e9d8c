"""SSDLite's backbone taps on an FNA network: :class:`SSDLiteDerivedNet` and
:class:`SSDLiteSuperNet` are the derived / super networks plus the seed's 1x1 conv to 1280
(``head.conv`` / ``head.bn``, canonical names, so :func:`fna_d2.remap.remap` fills it from the
seed's ``head.*``), with two outputs:

* ``"tap"``: the expansion output (expand conv + BN + ReLU6) of the first layer of the stride-2
  stage entered at stride 16 (:func:`~fna_d2.arch.ssdlite_tap_stage`; MobileNetV2: 96->160,
  576 channels, stride 16). In the super network that layer is a :class:`MixedOp` over e6 ops
  only (:func:`~fna_d2.arch.ssdlite_space`): in mixed mode the tap is the expansion outputs
  mixed with the layer's own weights softmax(alpha / T), in path mode the chosen op's;
* ``"head"``: the 1280-channel output of the 1x1 conv (+ BN + ReLU6) after the last stage
  (stride 32).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec

from ...arch import ArchError, parse_op, ssdlite_space, ssdlite_tap_stage
from ...errors import ConfigError
from ..derived import DerivedNet
from ..ops import ConvBN, MBConv
from ..supernet import MixedOp, SuperNet

__all__ = ["HEAD_CHANNELS", "SSDLiteDerivedNet", "SSDLiteSuperNet", "tap_forward"]

#: width of the seed's last 1x1 conv, kept by SSDLite
HEAD_CHANNELS = 1280


def _mbconv_tap(op: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(op, MBConv) or op.expand is None:
        raise ArchError("SSDLite's tap layer must be an MBConv with an expansion (e3/e6), got "
                        f"{type(op).__name__}")
    e = op.expand(x)
    y = op.project(op.dw(e))
    return e, (y + x if op.use_residual else y)


def tap_forward(layer: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(expansion output, layer output) of the tap layer (an MBConv or a MixedOp of them)."""
    if not isinstance(layer, MixedOp):
        return _mbconv_tap(layer, x)
    if layer.mode == "path":
        return _mbconv_tap(layer.ops[layer.names[layer.index]], x)
    tap = out = None
    for w, op in zip(layer.weights(), layer.ops.values()):
        e, y = _mbconv_tap(op, x)
        tap = w * e if tap is None else tap + w * e
        out = w * y if out is None else out + w * y
    return tap, out


class _Taps:
    """What both nets add: the ``head`` conv, the tap position, ``forward`` and the shapes."""

    def _add_taps(self, net_like, norm, bn_eps: float, bn_momentum: float,
                  output_stride: int) -> None:
        if output_stride != 32:
            raise ConfigError(f"MODEL.FNA.OUTPUT_STRIDE must be 32 for SSDLite (it taps the "
                              f"stride-16 and stride-32 maps), got {output_stride}")
        self._tap_stage = ssdlite_tap_stage(net_like)
        st = net_like.stages[self._tap_stage]
        first = st.ops[0] if hasattr(st, "ops") else st.candidates[0][0]
        kernel_expansion = parse_op(first)
        expansions = {parse_op(op)[1] for op in ([first] if hasattr(st, "ops")
                                                 else st.candidates[0])}
        if kernel_expansion is None or len(expansions) != 1 or 1 in expansions:
            raise ArchError(f"SSDLite taps the expansion of stage {self._tap_stage}, layer 0, "
                            f"so its op(s) must share one expansion > 1, got "
                            f"{st.ops[:1] if hasattr(st, 'ops') else st.candidates[0]}")
        self.tap_channels = expansions.pop() * st.cin
        last = net_like.stages[-1].cout
        self.head = ConvBN(last, HEAD_CHANNELS, 1, norm=norm, bn_eps=bn_eps,
                           bn_momentum=bn_momentum)
        self._out_features = ["tap", "head"]
        self._out_feature_strides = {"tap": 16, "head": 32}
        self._out_feature_channels = {"tap": self.tap_channels, "head": HEAD_CHANNELS}

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.stem(x)
        tap = None
        for s, stage in enumerate(self.stages):
            if s != self._tap_stage:
                x = stage(x)
                continue
            tap, x = tap_forward(stage[0], x)
            for layer in list(stage)[1:]:
                x = layer(x)
        return {"tap": tap, "head": self.head(x)}


def _kwargs(kw: dict) -> dict:
    return dict(kw, out_features=["c5"])


class SSDLiteDerivedNet(_Taps, DerivedNet):
    """A :class:`DerivedNet` with SSDLite's taps and the seed's 1280 conv (``head``)."""

    @configurable
    def __init__(self, arch, **kwargs) -> None:
        super().__init__(arch, **_kwargs(kwargs))
        self._add_taps(self.arch, kwargs.get("norm", "BN"), kwargs.get("bn_eps", 1e-3),
                       kwargs.get("bn_momentum", 0.1), kwargs.get("output_stride", 32))

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        return DerivedNet.from_config(cfg, input_shape)


class SSDLiteSuperNet(_Taps, SuperNet):
    """A :class:`SuperNet` over :func:`~fna_d2.arch.ssdlite_space` of the configured space,
    with SSDLite's taps and the seed's 1280 conv (``head``, normal BN)."""

    @configurable
    def __init__(self, space, **kwargs) -> None:
        super().__init__(space, **_kwargs(kwargs))
        self._add_taps(self.space, kwargs.get("norm", "BN"), kwargs.get("bn_eps", 1e-3),
                       kwargs.get("bn_momentum", 0.1), kwargs.get("output_stride", 32))

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        kw = SuperNet.from_config(cfg, input_shape)
        kw["space"] = ssdlite_space(kw["space"])
        return kw
