"""FNA's DeepLabv3 head (spec section 3) for detectron2's ``SemanticSegmentor``.

``FNADeepLabV3Head`` (registered in ``SEM_SEG_HEADS_REGISTRY``) is::

    c5 (320 ch, stride = output stride)
      -> ASPP, 256 ch each: 1x1 | 3 depthwise-separable 3x3 atrous (6/12/18 at OS16,
         12/24/36 at OS8) | image pooling (global average pool -> 1x1 conv)
      -> concat (1280 ch) -> 1x1 conv to 256 + BN + ReLU -> Dropout(0.1)
      -> 1x1 classifier -> bilinear upsample to the input resolution

It reuses ``detectron2.layers.ASPP`` (``use_depthwise_separable_conv=True``) and, for
``LOSS_TYPE: hard_pixel_mining``, ``detectron2.projects.deeplab.DeepLabCE``.

Where it differs from the paper / the usual DeepLabv3 head, and why:

- **No BN in the image-pooling branch.** detectron2's ``ASPP`` uses a biased 1x1 conv + ReLU
  there (the TF DeepLab and the FNA release put BN on that 1x1 map). With one image per GPU
  a BN over a 1x1 map has a single value per channel and cannot train; we keep detectron2's
  choice.
- **Dropout placement** is as in the paper: after the 1x1 projection's BN + ReLU, before the
  classifier (detectron2's ``ASPP(dropout=0.1)`` does exactly that).
- **Global image pooling**, always. detectron2's ``DeepLabV3Head`` average-pools over a window
  of the training crop size instead, and requires crops divisible by the output stride; FNA's
  769x769 crops are not (769 = 48 * 16 + 1), and the paper pools globally.
- The depthwise-separable branches have BN + ReLU after both the depthwise and the pointwise
  conv (detectron2's ``DepthwiseSeparableConv2d``, as in DeepLabv3+); the paper does not say.
- The output stride is read from the backbone's ``output_shape()`` (no ``COMMON_STRIDE``
  needed); the loss upsamples the logits to the (padded) target size, so crops need not be
  divisible by the output stride.
- The head itself sees whatever the meta-architecture gives it: whole images with
  ``SemanticSegmentor``, 769x769 windows averaged over overlaps with ``FNASemanticSegmentor``
  (``MODEL.FNA.SEG.SLIDING_WINDOW_SIZE``, the paper's Cityscapes protocol; see
  ``docs/pipeline.md``).
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ASPP, Conv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

__all__ = ["FNADeepLabV3Head"]


@SEM_SEG_HEADS_REGISTRY.register()
class FNADeepLabV3Head(nn.Module):
    """DeepLabv3 ASPP head on one backbone feature (FNA: ``c5``, 320 ch)."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_feature: str,
        num_classes: int,
        aspp_channels: int = 256,
        aspp_dilations: Sequence[int] = (6, 12, 18),
        aspp_dropout: float = 0.1,
        norm: str = "BN",
        use_depthwise_separable_conv: bool = True,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        loss_type: str = "cross_entropy",
    ):
        """
        Args:
            input_shape: the backbone's output shapes; ``input_shape[in_feature]`` is used.
            in_feature: name of the feature the ASPP reads (``"c5"``).
            num_classes: classes of the 1x1 classifier.
            aspp_channels: width of every ASPP branch and of the projection.
            aspp_dilations: rates of the three atrous branches (6/12/18 at OS16).
            aspp_dropout: dropout after the projection.
            norm: detectron2 norm name for the ASPP ("BN", "SyncBN", ...).
            use_depthwise_separable_conv: separable atrous branches (FNA: True).
            ignore_value: label ignored by the loss (and used to pad targets).
            loss_weight: factor on the loss.
            loss_type: "cross_entropy" or "hard_pixel_mining" (DeepLab's top-20% CE).
        """
        super().__init__()
        if in_feature not in input_shape:
            raise ValueError(f"FNADeepLabV3Head: backbone has no feature {in_feature!r} "
                             f"(it outputs {sorted(input_shape)}); check "
                             "MODEL.SEM_SEG_HEAD.IN_FEATURES and MODEL.FNA.OUT_FEATURES")
        shape = input_shape[in_feature]
        self.in_feature = in_feature
        self.common_stride = int(shape.stride or 1)
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.aspp = ASPP(
            shape.channels,
            aspp_channels,
            list(aspp_dilations),
            norm=norm,
            # a module, not F.relu: TorchScript cannot compile a function attribute
            activation=nn.ReLU(),
            pool_kernel_size=None,  # global image pooling
            dropout=aspp_dropout,
            use_depthwise_separable_conv=use_depthwise_separable_conv,
        )
        self.predictor = Conv2d(aspp_channels, num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, 0, 0.001)
        nn.init.constant_(self.predictor.bias, 0)
        if loss_type == "cross_entropy":
            self.loss = nn.CrossEntropyLoss(reduction="mean", ignore_index=ignore_value)
        elif loss_type == "hard_pixel_mining":
            from detectron2.projects.deeplab.loss import DeepLabCE

            self.loss = DeepLabCE(ignore_label=ignore_value, top_k_percent_pixels=0.2)
        else:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.LOSS_TYPE: unknown loss {loss_type!r} "
                             "(use 'cross_entropy' or 'hard_pixel_mining')")

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        h = cfg.MODEL.SEM_SEG_HEAD
        if len(h.IN_FEATURES) != 1:
            raise ValueError("FNADeepLabV3Head reads exactly one feature; "
                             f"MODEL.SEM_SEG_HEAD.IN_FEATURES is {list(h.IN_FEATURES)}")
        return dict(
            input_shape=input_shape,
            in_feature=h.IN_FEATURES[0],
            num_classes=h.NUM_CLASSES,
            aspp_channels=h.ASPP_CHANNELS,
            aspp_dilations=tuple(h.ASPP_DILATIONS),
            aspp_dropout=h.ASPP_DROPOUT,
            norm=h.NORM,
            use_depthwise_separable_conv=h.USE_DEPTHWISE_SEPARABLE_CONV,
            ignore_value=h.IGNORE_VALUE,
            loss_weight=h.LOSS_WEIGHT,
            loss_type=h.LOSS_TYPE,
        )

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits at the feature's resolution (before upsampling)."""
        return self.predictor(self.aspp(features[self.in_feature]))

    def forward(
        self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
    ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        """Training: ``(None, {"loss_sem_seg": ...})``; inference: ``(N x K x H x W logits,
        {})`` at ``common_stride`` times the feature resolution (the padded input size)."""
        x = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("FNADeepLabV3Head: training needs 'sem_seg' targets")
            return None, self.losses(x, targets)
        size = (x.shape[-2] * self.common_stride, x.shape[-1] * self.common_stride)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False), {}

    def losses(self, predictions: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Upsample the logits to the target size and apply the configured loss."""
        predictions = F.interpolate(predictions, size=targets.shape[-2:], mode="bilinear",
                                    align_corners=False)
        return {"loss_sem_seg": self.loss(predictions, targets) * self.loss_weight}
