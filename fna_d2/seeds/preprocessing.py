"""What a seed was trained with: its input normalisation (``MODEL.PIXEL_MEAN`` /
``MODEL.PIXEL_STD`` on 0-255 RGB input) and BatchNorm epsilon (``MODEL.FNA.BN_EPS``), by
parameter layout, and :func:`preprocessing_advice`, the settings a config left at the Keras
seed's values should change for a seed of another layout (a network fed inputs normalised
otherwise than in its training still trains, but starts worse and ends worse)."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

__all__ = ["KERAS_PREPROCESSING", "SEED_PREPROCESSING", "preprocessing_advice"]

_IMAGENET_MEAN = [123.675, 116.28, 103.53]
_IMAGENET_STD = [58.395, 57.12, 57.375]
#: the converted Keras MobileNetV2 (``fna_d2://keras_mobilenetv2``, fna_d2's default seed):
#: ``x / 127.5 - 1``, Keras' BN epsilon; fna_d2's base configs use these
KERAS_PREPROCESSING: Dict[str, Any] = {"MODEL.PIXEL_MEAN": [127.5] * 3,
                                       "MODEL.PIXEL_STD": [127.5] * 3, "MODEL.FNA.BN_EPS": 1e-3}
#: seed layout -> the settings its usual checkpoints were trained with (torchvision's and
#: timm's ImageNet weights; the FNA authors' release, trained with mmdetection's ImageNet
#: normalisation and BN eps 1e-3)
SEED_PREPROCESSING: Dict[str, Dict[str, Any]] = {
    "torchvision": {"MODEL.PIXEL_MEAN": _IMAGENET_MEAN, "MODEL.PIXEL_STD": _IMAGENET_STD,
                    "MODEL.FNA.BN_EPS": 1e-5},
    "timm": {"MODEL.PIXEL_MEAN": _IMAGENET_MEAN, "MODEL.PIXEL_STD": _IMAGENET_STD,
             "MODEL.FNA.BN_EPS": 1e-5},
    "fna_authors": {"MODEL.PIXEL_MEAN": _IMAGENET_MEAN, "MODEL.PIXEL_STD": _IMAGENET_STD,
                    "MODEL.FNA.BN_EPS": 1e-3},
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))


def preprocessing_advice(layout: str, seed_checkpoint: Any, settings: Mapping[str, Any]
                         ) -> Dict[str, Tuple[Any, Any]]:
    """``{key: (current value, value to set)}`` for every key of ``settings`` (the config's
    ``MODEL.PIXEL_MEAN``, ``MODEL.PIXEL_STD``, ``MODEL.FNA.BN_EPS``) that is still at the
    Keras seed's value although the seed, of layout ``layout``, was trained with another.
    Empty when the layout is not in :data:`SEED_PREPROCESSING` or the checkpoint says how it
    was preprocessed (the converted Keras seed's ``"meta"`` has ``"preprocessing"``)."""
    meta = seed_checkpoint.get("meta") if isinstance(seed_checkpoint, Mapping) else None
    if layout not in SEED_PREPROCESSING or (isinstance(meta, Mapping)
                                            and "preprocessing" in meta):
        return {}
    want = SEED_PREPROCESSING[layout]
    return {k: (v, want[k]) for k, v in settings.items()
            if k in want and _same(v, KERAS_PREPROCESSING[k]) and not _same(v, want[k])}
