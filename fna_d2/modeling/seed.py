"""The seed backbone in torchvision's layout: :class:`MobileNetV2Seed`.

Parameter names are torchvision's ``mobilenet_v2().features`` names (``features.{i}...``), so
a torchvision state dict loads directly. ``features.18`` (the 320->1280 conv) is **not
built**: FNA's backbones never use it; loading a full torchvision checkpoint reports
``features.18.*`` and ``classifier.*`` as unused (detectron2's checkpointer logs them;
``load_state_dict(strict=False)`` lists them as unexpected).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from detectron2.config import configurable
from detectron2.layers import ShapeSpec

from ..arch import iter_layers, mobilenetv2_arch
from .arch_config import backbone_kwargs
from .freeze import check_freeze_at, freeze_blocks
from .ops import NormSpec, make_norm
from .staged import StagedBackbone

__all__ = ["MobileNetV2Seed"]


class MobileNetV2Seed(StagedBackbone):
    """MobileNetV2 1.0 with torchvision's parameter names (``features.0`` ... ``features.17``).

    Built from :func:`torchvision.models.mobilenet_v2` (``features.18`` dropped), with the
    given norm / BN eps / momentum and the output-stride dilation applied to its depthwise
    convs."""

    @configurable
    def __init__(self, *, out_features: Sequence[str] = ("c3", "c4", "c5"), norm: NormSpec = "BN",
                 bn_eps: float = 1e-3, bn_momentum: float = 0.1, output_stride: int = 32,
                 freeze_at: int = 0, in_channels: int = 3) -> None:
        super().__init__()
        arch = mobilenetv2_arch()
        dilated = arch.with_output_stride(output_stride)
        tv = mobilenet_v2(weights=None, norm_layer=lambda c: make_norm(norm, c, bn_eps,
                                                                        bn_momentum))
        features = list(tv.features.children())[:18]
        if in_channels != 3:
            old = features[0][0]
            features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, 2, 1, bias=False)
        self.features = nn.Sequential(*features)
        self.arch = arch
        # torchvision block i >= 1 is the i-th layer of the walk: apply its stride / dilation;
        # ends[s]: index of stage s's last block
        ends = [0] * len(arch.stages)
        for i, layer in enumerate(iter_layers(dilated), start=1):
            block = self.features[i]
            dw = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1][0]
            k = dw.kernel_size[0]
            dw.stride, dw.dilation = (layer.stride,) * 2, (layer.dilation,) * 2
            dw.padding = (layer.dilation * (k - 1) // 2,) * 2
            block.stride = layer.stride
            block.use_res_connect = layer.stride == 1 and layer.cin == layer.cout
            ends[layer.stage] = i
        self._setup_outputs(dilated, out_features)
        names = [""] * len(self.features)
        for s, n in enumerate(self._stage_names):
            names[ends[s]] = n
        self._feature_names: List[str] = names
        self._num_features_run: int = ends[self._num_run - 1] + 1
        # freeze_at counts the stem (features.0) and then whole stages
        check_freeze_at(freeze_at, len(arch.stages) + 1)
        num_blocks = 0 if freeze_at == 0 else 1 if freeze_at == 1 else ends[freeze_at - 2] + 1
        freeze_blocks([(self.features, str(i), self.features[i]) for i in range(num_blocks)],
                      num_blocks)

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        return backbone_kwargs(cfg, input_shape)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs: Dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.features):
            if i < self._num_features_run:
                x = block(x)
                name = self._feature_names[i]
                if name != "":
                    outputs[name] = x
        return outputs
