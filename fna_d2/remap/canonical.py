"""Renaming between seed layouts and fna_d2's canonical names: :func:`to_canonical` (any of
:data:`~fna_d2.remap.layouts.LAYOUTS` -> ``stem.*``, ``stages.{s}.{l}.{expand,dw,project}.
{conv,bn}.*``, ``head.*`` for the 1x1 conv to 1280, ``classifier.*``; plus the seed's
inferred :class:`~fna_d2.arch.Arch`) and its inverse :func:`from_canonical`.

Flat layouts (torchvision, EfficientNet-Lite0) are cut into stages where the width changes
(a block with ``cin != cout`` starts a stage), which is exact for MobileNetV2 and
EfficientNet-Lite0; grouped layouts (timm, FNA authors) name each block's stage.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor

from ..arch import Arch, iter_layers, parse_op
from ..errors import RemapError
from ..seeds.files import unwrap_state_dict
from .infer import infer_arch
from .layouts import (LAYOUTS, NAME_ORDERS, Block, Module, block_io, block_roles,
                      conv_bn_pairs, detect_layout, module_kind, parse_layout)

__all__ = ["to_canonical", "from_canonical", "check_canonical", "CANON_ROLES"]

#: the roles of an MBConv's conv+BN units, in block order (``expand`` absent when e == 1)
CANON_ROLES: Tuple[str, ...] = ("expand", "dw", "project")


def to_canonical(state_dict: Mapping[str, Any], layout: str = "auto", *,
                 strides: Optional[Sequence[int]] = None
                 ) -> Tuple["OrderedDict[str, Tensor]", Arch]:
    """Convert a seed state dict (any of :data:`LAYOUTS`, or ``"auto"``) to canonical names.

    Returns ``(canonical_state_dict, seed_arch)``; the arch is inferred from tensor shapes
    (see :func:`~fna_d2.remap.infer.infer_arch`) and carries ``meta["layout"]``."""
    sd = unwrap_state_dict(state_dict)
    if layout == "auto":
        layout = detect_layout(sd)
    if layout not in LAYOUTS:
        raise RemapError(f"unknown seed layout {layout!r}; supported: auto, {', '.join(LAYOUTS)}")
    if layout == "fna_d2":
        out = check_canonical(sd)
    else:
        out = _canonicalize(*parse_layout(sd, layout), layout=layout)
    arch = infer_arch(out, strides=strides)
    return out, Arch(arch.stages, arch.stem_channels, dict(arch.meta, layout=layout))


def _emit_module(out: Dict[str, Tensor], prefix: str, mod: Module) -> None:
    for param, t in mod[1].items():
        out[f"{prefix}.{param}"] = t


def _canonicalize(stem: List[Module], blocks: List[Block], head: List[Module],
                  classifier: List[Module], layout: str) -> "OrderedDict[str, Tensor]":
    out: "OrderedDict[str, Tensor]" = OrderedDict()
    if not stem:
        raise RemapError(f"{layout} layout: no stem conv found")
    s_conv, s_bn = conv_bn_pairs(stem, "stem")[0] if len(stem) == 2 else (None, None)
    if s_conv is None:
        raise RemapError(f"{layout} layout: the stem must be one conv + one BN, found "
                         f"{[p for p, _ in stem]}")
    _emit_module(out, "stem.conv", s_conv)
    _emit_module(out, "stem.bn", s_bn)
    stage, layer, prev_hint = -1, 0, object()
    for block in blocks:
        roles = block_roles(block)
        cin, cout = block_io(roles)
        new_stage = (block.stage_hint != prev_hint) if block.stage_hint is not None \
            else (stage < 0 or cin != cout)
        if new_stage:
            stage, layer, prev_hint = stage + 1, 0, block.stage_hint
        for role, conv, bn in roles:
            _emit_module(out, f"stages.{stage}.{layer}.{role}.conv", conv)
            _emit_module(out, f"stages.{stage}.{layer}.{role}.bn", bn)
        layer += 1
    if head:
        pairs = conv_bn_pairs(head, "head")
        if len(pairs) != 1:
            raise RemapError(f"{layout} layout: the head must be one conv + one BN")
        _emit_module(out, "head.conv", pairs[0][0])
        _emit_module(out, "head.bn", pairs[0][1])
    linears = [m for m in classifier if module_kind(m[1]) == "linear"]
    if classifier and len(linears) != len(classifier) or len(linears) > 1:
        raise RemapError(f"{layout} layout: the classifier must be one linear layer, found "
                         f"{[p for p, _ in classifier]}")
    for mod in linears:
        _emit_module(out, "classifier", mod)
    return out


def _canonical_slot(parts: List[str]) -> bool:
    """True if ``parts`` (a key split on '.') is a canonical seed key."""
    if parts[0] in ("stem", "head"):
        return len(parts) == 3 and parts[1] in ("conv", "bn")
    if parts[0] == "classifier":
        return len(parts) == 2
    return (len(parts) == 6 and parts[0] == "stages" and parts[1].isdigit()
            and parts[2].isdigit() and parts[3] in CANON_ROLES and parts[4] in ("conv", "bn"))


def check_canonical(sd: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """``sd`` as an ordered dict if every key is a canonical seed key; otherwise
    :class:`RemapError` naming the first bad keys (a super network's weights say so)."""
    bad = [k for k in sd if not _canonical_slot(k.split("."))]
    if bad:
        hint = (" (a super network's weights are not a seed: remap from the seed instead)"
                if any(".ops." in k or k.endswith(".alpha") for k in bad) else "")
        raise RemapError(f"fna_d2 layout: unexpected keys {bad[:5]}{hint}")
    return OrderedDict(sd)


# ----------------------------------------------------------------------- canonical -> layout
_TOP = {  # stem conv, stem BN, classifier
    "torchvision": ("features.0.0", "features.0.1", "classifier.1"),
    "timm": ("conv_stem", "bn1", "classifier"),
    "fna_authors": ("blocks.0.0", "blocks.0.1", "classifier"),
    "efficientnet_lite0": ("_conv_stem", "_bn0", "_fc"),
}


def _layout_names(arch: Arch, layout: str) -> Dict[str, str]:
    """Canonical module path -> module path in ``layout`` for ``arch``."""
    names: Dict[str, str] = {}
    names["stem.conv"], names["stem.bn"], names["classifier"] = _TOP[layout]
    layers = list(iter_layers(arch))
    for g, layer in enumerate(layers):  # g: the global block index
        s, l = layer.stage, layer.index
        e = parse_op(layer.ops[0])[1]
        roles = ("dw", "project") if e == 1 else CANON_ROLES
        for pos, role in enumerate(roles):
            for j, part in enumerate(("conv", "bn")):
                names[f"stages.{s}.{l}.{role}.{part}"] = _block_module(
                    layout, s, l, g, e, pos, role, j)
    n_blocks, n_stages = len(layers), len(arch.stages)
    head = {"torchvision": (f"features.{n_blocks + 1}.0", f"features.{n_blocks + 1}.1"),
            "timm": ("conv_head", "bn2"),
            "fna_authors": (f"blocks.{n_stages + 1}.conv.0", f"blocks.{n_stages + 1}.conv.1"),
            "efficientnet_lite0": ("_conv_head", "_bn1")}[layout]
    names["head.conv"], names["head.bn"] = head
    return names


def _block_module(layout: str, s: int, l: int, g: int, e: int, pos: int, role: str, j: int
                  ) -> str:
    """Module path of (conv if j == 0 else BN) of ``role`` in block (s, l), global index g."""
    if layout == "torchvision":
        tv = ({"dw": ("0.0", "0.1"), "project": ("1", "2")} if e == 1 else
              {"expand": ("0.0", "0.1"), "dw": ("1.0", "1.1"), "project": ("2", "3")})
        return f"features.{g + 1}.conv.{tv[role][j]}"
    if layout == "timm":
        tm = ({"dw": ("conv_dw", "bn1"), "project": ("conv_pw", "bn2")} if e == 1 else
              {"expand": ("conv_pw", "bn1"), "dw": ("conv_dw", "bn2"),
               "project": ("conv_pwl", "bn3")})
        return f"blocks.{s}.{l}.{tm[role][j]}"
    if layout == "fna_authors":
        # op.{i}: conv, BN, ReLU6 per unit in module order -> conv at 3*pos, BN at 3*pos + 1
        return f"blocks.{s + 1}.layers.{l}.op.{3 * pos + j}"
    names = NAME_ORDERS["efficientnet_lite0"][1 if e == 1 else 0]
    return f"_blocks.{g}.{names[2 * pos + j]}"


def from_canonical(canonical: Mapping[str, Tensor], layout: str = "torchvision",
                   arch: Optional[Arch] = None) -> "OrderedDict[str, Tensor]":
    """Rename a canonical state dict into ``layout`` (inverse of :func:`to_canonical`)."""
    sd = check_canonical(unwrap_state_dict(canonical))
    if layout == "fna_d2":
        return sd
    if layout not in LAYOUTS:
        raise RemapError(f"unknown layout {layout!r}; supported: {', '.join(LAYOUTS)}")
    names = _layout_names(arch or infer_arch(sd), layout)
    out: "OrderedDict[str, Tensor]" = OrderedDict()
    for k, t in sd.items():
        path, param = k.rsplit(".", 1)
        if path not in names:
            raise RemapError(f"{k}: no {layout} name for this tensor in the given architecture")
        out[f"{names[path]}.{param}"] = t
    return out
