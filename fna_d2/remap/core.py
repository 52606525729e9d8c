"""The remap itself (FNA sec. 4): :func:`remap` maps a canonical seed state dict into a target
:class:`~fna_d2.arch.Arch` (derived network) or :class:`~fna_d2.arch.SearchSpace` (super
network): depth first (target layer ``i`` of stage ``s`` <- seed layer
``min(i, L_seed - 1)``), then width and kernel together, and returns the target state dict
plus a :class:`~fna_d2.remap.report.RemapReport`.

Widths: the selected hidden channels of an MBConv (see
:func:`~fna_d2.remap.strategies.select_channels`) are applied to the expand conv's output
channels, its BN, the depthwise conv and its BN, and the project conv's input channels alike.
Stream widths (block inputs/outputs, stem) always use first-k, since one stream channel is
shared by every layer of a stage through the residuals. Wider targets: extra conv channels
are zero, extra 1-D entries keep their init (``target_init`` or the standard BN init).
Kernels: :func:`~fna_d2.remap.strategies.fit_kernel`.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..arch import SKIP, Arch, SearchSpace, iter_layers, parse_op
from ..errors import RemapError
from ..seeds.files import unwrap_state_dict
from .canonical import to_canonical
from .report import RemapReport, TensorRecord, status_of
from .strategies import KERNEL_STRATEGIES, WIDTH_STRATEGIES, depth_map, fit_kernel, \
    select_channels

__all__ = ["remap", "BN_PARAMS"]

BN_PARAMS: Tuple[str, ...] = ("weight", "bias", "running_mean", "running_var",
                              "num_batches_tracked")


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
        self.records.append(TensorRecord(tkey, status_of(changes), skey, tuple(s.shape),
                                         tuple(tshape), tuple(changes)))

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
    elif not isinstance(target, SearchSpace):
        raise RemapError(f"target must be an Arch or a SearchSpace, got {type(target).__name__}")
    n_seed, n_target = len(seed_arch.stages), len(target.stages)
    if n_seed < n_target:
        raise RemapError(f"the seed has {n_seed} stages but the target has {n_target}: every "
                         "target stage needs a seed stage to inherit from")
    if n_seed != n_target:
        raise RemapError(f"different number of stages: seed {n_seed}, target {n_target}")
    searchable_bn = {"auto": "if_present" if has_init else "no", "affine": "yes",
                     "non_affine": "no"}[target_bn]
    fixed_bn = "if_present" if has_init and target_bn == "auto" else "yes"
    sources = [depth_map(seed.depth, st.depth) for seed, st in zip(seed_arch.stages,
                                                                     target.stages)]
    layers: List[_Layer] = []
    dmap: Dict[int, List[Optional[int]]] = {s: [] for s in range(n_target)}
    for layer in iter_layers(target):
        s, i = layer.stage, layer.index
        src = sources[s][i]
        dmap[s].append(None if layer.ops == (SKIP,) else src)
        for op in layer.ops:
            if op == SKIP:
                continue
            k, e = parse_op(op)
            prefix = f"stages.{s}.{i}" + (f".ops.{op}" if layer.searchable else "")
            layers.append(_Layer(prefix, layer.cin, layer.cout, k, e,
                                 searchable_bn if layer.searchable else fixed_bn, (s, src)))
    return target, layers, dmap


def _remap_layer(ctx: _Ctx, t: _Layer, seed_arch: Arch, width: str) -> None:
    """Width + kernel remapping of one MBConv from its seed layer (see module doc)."""
    ss, sl = t.seed
    s_cin = seed_arch.stages[ss].layer_io(sl)[0]
    s_e = parse_op(seed_arch.stages[ss].ops[sl])[1]
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
