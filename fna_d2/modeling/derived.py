"""The network of an architecture: :class:`DerivedNet`, with the canonical parameter names
``stem.*`` / ``stages.{s}.{l}.{expand,dw,project}.{conv,bn}.*`` (``docs/design.md``)."""
from __future__ import annotations

from typing import Optional, Sequence

from detectron2.config import configurable
from detectron2.layers import ShapeSpec

from ..arch import Arch
from .arch_config import arch_from_config, backbone_kwargs
from .ops import NormSpec, build_op
from .staged import StagedBackbone

__all__ = ["DerivedNet"]


class DerivedNet(StagedBackbone):
    """The network of an :class:`Arch` (skips moved to the end of their stage)."""

    @configurable
    def __init__(self, arch: Arch, *, out_features: Sequence[str] = ("c3", "c4", "c5"),
                 norm: NormSpec = "BN", bn_eps: float = 1e-3, bn_momentum: float = 0.1,
                 output_stride: int = 32, freeze_at: int = 0, in_channels: int = 3) -> None:
        super().__init__()
        arch.validate("arch")
        self.arch = arch.skips_to_end()
        self._build_stem_and_stages(
            self.arch.with_output_stride(output_stride),
            lambda layer: build_op(layer.ops[0], layer.cin, layer.cout, layer.stride,
                                   layer.dilation, norm, bn_eps, bn_momentum),
            in_channels=in_channels, norm=norm, bn_eps=bn_eps, bn_momentum=bn_momentum,
            out_features=out_features, freeze_at=freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        return {"arch": arch_from_config(cfg), **backbone_kwargs(cfg, input_shape)}
