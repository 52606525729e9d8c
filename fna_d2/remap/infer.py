"""A seed's architecture from the tensor shapes of its canonical state dict
(:func:`infer_arch`): widths, kernels, expansions and depths.

Strides are not stored in weights: 7-stage seeds get MobileNetV2's (1, 2, 2, 2, 1, 2, 1)
(EfficientNet-Lite0 has the same), others stride 1 for stage 0 and 2 after, unless
``strides=`` is given; strides do not affect remapping.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

from torch import Tensor

from ..arch import EXPANSIONS, KERNELS, Arch, ArchError, Stage, op_name
from ..errors import RemapError

__all__ = ["infer_arch"]

#: MobileNetV2's stage strides; EfficientNet-Lite0 has the same ones
_SEVEN_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


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
