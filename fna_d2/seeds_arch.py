"""Seed architectures selectable by ``cfg.MODEL.FNA.SEED`` (their macro structure, i.e. widths
and strides, defines the search spaces and is what derived architectures must match)."""
from __future__ import annotations

from typing import Callable, Dict

from .arch import Arch, ArchError, Stage, mobilenetv2_arch, op_name

__all__ = ["efficientnet_lite0_arch", "SEED_ARCHS", "seed_arch"]

#: EfficientNet-Lite0 stages as (e, c, n, s, k); stem 32; no SE, ReLU6 (the "lite" variant).
_EFFNET_LITE0 = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                 (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))


def efficientnet_lite0_arch() -> Arch:
    """EfficientNet-Lite0 as an :class:`Arch` (the 1280 head conv is not part of it)."""
    stages, cin = [], 32
    for e, c, n, s, k in _EFFNET_LITE0:
        stages.append(Stage(cin, c, s, (op_name(k, e),) * n))
        cin = c
    return Arch(tuple(stages), 32, {"name": "efficientnet_lite0"}).validate()


#: ``cfg.MODEL.FNA.SEED`` value -> seed architecture factory
SEED_ARCHS: Dict[str, Callable[[], Arch]] = {
    "mobilenetv2": mobilenetv2_arch,
    "efficientnet_lite0": efficientnet_lite0_arch,
}


def seed_arch(name: str) -> Arch:
    """The seed architecture called ``name`` (``ArchError`` naming MODEL.FNA.SEED otherwise)."""
    try:
        return SEED_ARCHS[name]()
    except KeyError:
        raise ArchError(f"MODEL.FNA.SEED: unknown seed {name!r}; known seeds: "
                        f"{', '.join(sorted(SEED_ARCHS))}") from None
