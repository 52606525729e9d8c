"""The architecture a checkpoint carries, seen from the model: :func:`fna_backbones` finds the
FNA backbones inside a model, :func:`backbone_record` is the record (``fna_d2.arch.files``)
a checkpoint of one carries, and :func:`check_record` raises
:class:`~fna_d2.errors.ArchMismatchError`, naming both architectures and where each came from,
when a checkpoint's record is not the backbone's: fvcore would otherwise skip every tensor of
another shape and leave a silently broken model."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from torch import nn

from ..arch import NETWORK_KINDS, arch_record, record_arch, to_authors_format
from ..errors import ArchMismatchError
from ..utils import unwrap_model
from .derived import DerivedNet
from .seed import MobileNetV2Seed
from .supernet import SuperNet

__all__ = ["FNA_BACKBONES", "fna_backbones", "backbone_record", "describe_record",
           "check_record"]

#: the backbone classes fna_d2 builds, in order of the record's "network"
FNA_BACKBONES = (DerivedNet, MobileNetV2Seed, SuperNet)


def fna_backbones(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(module path, module)`` of every FNA backbone inside ``model`` (DDP unwrapped)."""
    return [(n, m) for n, m in unwrap_model(model).named_modules()
            if isinstance(m, FNA_BACKBONES)]


def backbone_record(backbone: nn.Module) -> Dict[str, Any]:
    """The architecture record of an FNA backbone (see ``fna_d2.arch.arch_record``); its
    ``source`` says where the architecture came from."""
    if isinstance(backbone, SuperNet):
        name = backbone.space.name
        return arch_record("super", search_space=name, source=f"MODEL.FNA.SEARCH_SPACE={name!r}")
    if isinstance(backbone, MobileNetV2Seed):
        return arch_record("seed", backbone.arch, source="MODEL.FNA.NETWORK='seed'")
    if isinstance(backbone, DerivedNet):
        arch = backbone.arch
        source = arch.meta.get("source") or f"the seed {arch.meta.get('name', '?')!r}"
        return arch_record("derived", arch, source=source)
    raise TypeError(f"not an FNA backbone: {type(backbone).__name__}")


def describe_record(record: Dict[str, Any], where: str = "checkpoint") -> str:
    """``derived network [[32, 16], ['k3_e1'], 1]|...`` (the authors' one-line form), or
    ``super network of search space 'detection'``."""
    kind = NETWORK_KINDS[record["network"]]
    arch = record_arch(record, where)
    if arch is None:
        return f"{kind} of search space {record.get('search_space')!r}"
    return f"{kind} {to_authors_format(arch)}"


def _same(a: Dict[str, Any], b: Dict[str, Any], where: str) -> bool:
    if a["network"] != b["network"]:
        return False
    arch_a, arch_b = record_arch(a, where), record_arch(b, "model")
    if arch_a is None or arch_b is None:
        return arch_a is arch_b and a.get("search_space") == b.get("search_space")
    # skips sit at the end of their stage in a built net (the paper's rule); meta is not compared
    return arch_a.skips_to_end() == arch_b.skips_to_end()


def check_record(record: Dict[str, Any], backbone: nn.Module, where: str, fix: str = "") -> None:
    """Raise :class:`ArchMismatchError` unless the checkpoint record ``record`` (read from
    ``where``, e.g. ``MODEL.WEIGHTS='...'``) describes ``backbone``. The message names both
    architectures, the checkpoint and the source of the model's architecture; ``fix`` is
    appended (what to do)."""
    mine = backbone_record(backbone)
    if _same(record, mine, where):
        return
    theirs = record.get("source")
    raise ArchMismatchError(
        f"architecture mismatch: {where} holds the {describe_record(record, where)}"
        f"{f' (from {theirs})' if theirs else ''}, but the model built from the config is the "
        f"{describe_record(mine, 'model')} (from {mine['source']}); loading it would skip "
        f"every tensor of another shape. {fix or _default_fix(record, mine)}")


def _default_fix(record: Dict[str, Any], mine: Dict[str, Any]) -> str:
    net, parts = record["network"], []
    if net != mine["network"]:
        parts.append(f"set MODEL.FNA.NETWORK {net!r}")
    if net == "derived":
        parts.append("set MODEL.FNA.ARCH to the checkpoint's architecture, or to '' to build "
                     "the network from the checkpoint")
    elif net == "super":
        parts.append(f"set MODEL.FNA.SEARCH_SPACE / SEARCH_DEPTHS to the checkpoint's "
                     f"({record.get('search_space')!r})")
    return "To load it, " + " and ".join(parts) + "."
