"""What a config asks the backbones for: the architecture (``MODEL.FNA.ARCH``, checked against
the seed's macro structure), the search space (``MODEL.FNA.SEARCH_SPACE`` /
``SEARCH_DEPTHS``) and the keyword arguments every backbone takes from ``MODEL.FNA``."""
from __future__ import annotations

import os
from typing import Optional

from detectron2.layers import ShapeSpec

from ..arch import (Arch, ArchError, SearchSpace, detection_space, load_arch, segmentation_space,
                    space_from_seed)
from ..arch import seed_arch

__all__ = ["backbone_kwargs", "check_macro_structure", "arch_from_config",
           "space_from_config"]

#: ``MODEL.FNA.SEARCH_SPACE`` name -> the space built from a seed
_SPACES = {"detection": detection_space, "segmentation": segmentation_space}


def backbone_kwargs(cfg, input_shape: Optional[ShapeSpec]) -> dict:
    """The keyword arguments of every FNA backbone, from ``MODEL.FNA`` and the input shape."""
    f = cfg.MODEL.FNA
    channels = input_shape.channels if input_shape is not None and input_shape.channels else 3
    return dict(out_features=list(f.OUT_FEATURES), norm=f.NORM, bn_eps=f.BN_EPS,
                bn_momentum=f.BN_MOMENTUM, output_stride=f.OUTPUT_STRIDE,
                freeze_at=f.FREEZE_AT, in_channels=channels)


def check_macro_structure(arch: Arch, seed: Arch, where: str = "") -> Arch:
    """Raise :class:`ArchError` unless ``arch`` has ``seed`` 's stem, stage count, widths and
    strides (depths and ops may differ)."""
    w = f"{where}: " if where else ""
    name = seed.meta.get("name", "seed")
    if arch.stem_channels != seed.stem_channels:
        raise ArchError(f"{w}stem width {arch.stem_channels} does not match seed {name!r} "
                        f"(MODEL.FNA.SEED) stem width {seed.stem_channels}")
    if len(arch.stages) != len(seed.stages):
        raise ArchError(f"{w}{len(arch.stages)} stages, but seed {name!r} (MODEL.FNA.SEED) has "
                        f"{len(seed.stages)}")
    for s, (a, b) in enumerate(zip(arch.stages, seed.stages)):
        if (a.cin, a.cout, a.stride) != (b.cin, b.cout, b.stride):
            raise ArchError(f"{w}stage {s}: {a.cin}->{a.cout} stride {a.stride} does not match "
                            f"seed {name!r} (MODEL.FNA.SEED) stage {s}: {b.cin}->{b.cout} "
                            f"stride {b.stride}")
    return arch


def arch_from_config(cfg) -> Arch:
    """``MODEL.FNA.ARCH`` (or the seed if empty), checked against ``MODEL.FNA.SEED``."""
    seed = seed_arch(cfg.MODEL.FNA.SEED)
    path = cfg.MODEL.FNA.ARCH
    if not path:
        return seed
    if not os.path.isfile(path):
        raise ArchError(f"MODEL.FNA.ARCH: arch file {path!r} does not exist")
    try:
        arch = load_arch(path)
    except ArchError as e:
        raise ArchError(f"MODEL.FNA.ARCH={path!r}: {e}") from None
    return check_macro_structure(arch, seed, f"MODEL.FNA.ARCH={path!r}")


def space_from_config(cfg) -> SearchSpace:
    """The search space ``MODEL.FNA.SEARCH_SPACE`` expanded from ``MODEL.FNA.SEED``."""
    name = cfg.MODEL.FNA.SEARCH_SPACE
    if name not in _SPACES:
        raise ValueError(f"MODEL.FNA.SEARCH_SPACE: unknown search space {name!r}; known: "
                         f"{', '.join(sorted(_SPACES))}")
    seed = seed_arch(cfg.MODEL.FNA.SEED)
    depths = tuple(cfg.MODEL.FNA.SEARCH_DEPTHS)
    if not depths:
        return _SPACES[name](seed)
    try:
        return space_from_seed(seed, depths, f"{name}{list(depths)}")
    except ArchError as e:
        raise ArchError(f"MODEL.FNA.SEARCH_DEPTHS={list(depths)}: {e}") from None
