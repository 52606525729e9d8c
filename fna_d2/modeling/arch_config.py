"""What a config asks the backbones for: the architecture (``MODEL.FNA.ARCH``, or the one a
trained checkpoint in ``MODEL.WEIGHTS`` carries; checked against the seed's macro structure),
the search space (``MODEL.FNA.SEARCH_SPACE`` / ``SEARCH_DEPTHS``) and the keyword arguments
every backbone takes from ``MODEL.FNA``."""
from __future__ import annotations

import logging
import os
from typing import Optional

from detectron2.layers import ShapeSpec

from ..arch import (Arch, ArchError, SearchSpace, detection_space, load_arch,
                    read_checkpoint_arch, record_arch, segmentation_space, space_from_seed)
from ..arch import seed_arch

__all__ = ["backbone_kwargs", "check_macro_structure", "arch_from_config",
           "space_from_config", "PUBLISHED_ARCH"]

logger = logging.getLogger(__name__)
#: an arch file shipped with fna_d2's configs: FNA's published RetinaNet architecture
PUBLISHED_ARCH = "configs/archs/fna_retinanet_coco.json"

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
    """The architecture of a derived network, checked against ``MODEL.FNA.SEED``:

    * ``MODEL.FNA.ARCH``, when it names an existing arch file;
    * otherwise (empty, or the file is missing) the architecture stored in the checkpoint
      ``MODEL.WEIGHTS`` names, if fna_d2 wrote it for a derived network: a trained model
      needs nothing but itself;
    * otherwise the seed (``ARCH`` empty), or an :class:`ArchError` saying how to get the
      missing file.

    The result's ``meta["source"]`` says which; a checkpoint of another architecture is
    refused after building (``fna_d2.modeling.stored_arch.check_record``)."""
    seed = seed_arch(cfg.MODEL.FNA.SEED)
    path, weights = cfg.MODEL.FNA.ARCH, cfg.MODEL.WEIGHTS
    if path and os.path.isfile(path):
        try:
            arch = load_arch(path)
        except ArchError as e:
            raise ArchError(f"MODEL.FNA.ARCH={path!r}: {e}") from None
        where = f"MODEL.FNA.ARCH={path!r}"
        return _with_source(check_macro_structure(arch, seed, where), where)
    stored = _weights_arch(weights)
    if stored is not None:
        where = f"MODEL.WEIGHTS={weights!r}"
        if path:
            logger.warning("MODEL.FNA.ARCH: arch file %r does not exist; building the "
                           "architecture stored in %s", path, where)
        else:
            logger.info("MODEL.FNA.ARCH is empty: building the architecture stored in %s", where)
        return _with_source(check_macro_structure(stored, seed, where), where)
    if not path:
        return _with_source(seed, f"MODEL.FNA.SEED={cfg.MODEL.FNA.SEED!r} (MODEL.FNA.ARCH empty)")
    raise ArchError(
        f"MODEL.FNA.ARCH: arch file {path!r} does not exist. It is written by the architecture "
        f"search (MODEL.FNA.NETWORK 'super'; python train_net.py --config-file <search "
        f"config>, e.g. configs/fna_retinanet_search.yaml, or python -m fna_d2.pipeline, which "
        f"fills in MODEL.FNA.ARCH): run the search first, or set MODEL.FNA.ARCH to an existing "
        f"arch file, e.g. {PUBLISHED_ARCH} (the architecture FNA published for RetinaNet on "
        f"COCO)")


def _weights_arch(weights: str) -> Optional[Arch]:
    """The derived architecture a checkpoint ``MODEL.WEIGHTS`` carries, else None."""
    record = read_checkpoint_arch(weights) if weights else None
    if record is None or record.get("network") != "derived":
        return None
    return record_arch(record, f"MODEL.WEIGHTS={weights!r}")


def _with_source(arch: Arch, source: str) -> Arch:
    return Arch(arch.stages, arch.stem_channels, dict(arch.meta, source=source))


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
