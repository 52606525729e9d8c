"""Seed, super and derived backbones (detectron2 :class:`Backbone` s) and their builders.

* :class:`MobileNetV2Seed`: torchvision's ``mobilenet_v2().features`` parameter names
  (``features.{i}...``), so a torchvision state dict loads directly. ``features.18`` (the
  320->1280 conv) is **not built**: FNA's backbones never use it; loading a full torchvision
  checkpoint reports ``features.18.*`` and ``classifier.*`` as unused (detectron2's
  checkpointer logs them; ``load_state_dict(strict=False)`` lists them as unexpected).
* :class:`DerivedNet`: an :class:`~fna_d2.arch.Arch` with skips moved to the end of their stage,
  canonical names ``stem.*`` / ``stages.{s}.{l}.{expand,dw,project}.{conv,bn}.*``.
* :class:`SuperNet`: a :class:`~fna_d2.arch.SearchSpace`; each searchable layer is a
  :class:`MixedOp` (``stages.{s}.{l}.ops.{op}.*`` and ``stages.{s}.{l}.alpha``).

Outputs: ``c2`` after stage 1, ``c3`` after stage 2, ``c4`` after stage 4, ``c5`` after the last
stage. All stages are always built (the names and the search space stay whole); stages after
the last requested output are skipped in ``forward`` (their parameters then get no gradient).
With ``output_stride`` 16 / 8 the later stages are dilated (DeepLab rule) and
``output_shape()`` reports the real strides.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from ..arch import (SKIP, Arch, ArchError, SearchSpace, SearchStage, Stage, detection_space,
                    load_arch, mobilenetv2_arch, segmentation_space, space_from_seed)
from ..seeds_arch import seed_arch
from .ops import SEARCH_BN, ConvBN, NormSpec, build_op, make_norm

__all__ = ["FEATURE_NAMES", "MobileNetV2Seed", "DerivedNet", "SuperNet", "MixedOp",
           "find_supernet", "build_fna_backbone", "build_fna_retinanet_fpn_backbone",
           "check_macro_structure", "arch_from_config", "space_from_config"]

#: output names, in order; c2/c3/c4 are taken after stages 1/2/4, c5 after the last stage
FEATURE_NAMES: Tuple[str, ...] = ("c2", "c3", "c4", "c5")
_SPACES = {"detection": detection_space, "segmentation": segmentation_space}
_NETWORKS = ("seed", "super", "derived")


def _tap_stages(num_stages: int) -> Dict[str, int]:
    return {"c2": 1, "c3": 2, "c4": 4, "c5": num_stages - 1}


def _check_out_features(out_features: Sequence[str], num_stages: int) -> Dict[str, int]:
    """name -> stage index for the requested outputs; ValueError naming the config key."""
    taps = _tap_stages(num_stages)
    if isinstance(out_features, str) or not out_features:
        raise ValueError(f"MODEL.FNA.OUT_FEATURES (out_features) must be a non-empty list of "
                         f"{list(FEATURE_NAMES)}, got {out_features!r}")
    for name in out_features:
        if name not in taps:
            raise ValueError(f"MODEL.FNA.OUT_FEATURES (out_features): unknown feature {name!r}; "
                             f"known: {', '.join(FEATURE_NAMES)}")
    if len(set(taps.values())) != len(taps):
        raise ValueError(f"an architecture with {num_stages} stages cannot give the outputs "
                         f"{list(FEATURE_NAMES)} (needs at least 6 stages)")
    return {n: taps[n] for n in out_features}


def _freeze(module: nn.Module) -> nn.Module:
    """Stop gradients of ``module`` and turn its (affine, tracking) BNs into FrozenBN.
    Returns the module to use in its place."""
    for p in module.parameters():
        p.requires_grad_(False)
    bn_types = (nn.BatchNorm2d, nn.SyncBatchNorm)
    if isinstance(module, bn_types):
        if not (module.affine and module.track_running_stats):
            return module  # batch-statistics BN of the super net: nothing to freeze
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = _freeze(child)
        if new is not child:
            setattr(module, name, new)
    return module


class _StagedBackbone(Backbone):
    """Shared output bookkeeping of the three backbones."""

    def _setup_outputs(self, arch_like, out_features: Sequence[str]) -> None:
        """``arch_like``: an Arch/SearchSpace **after** the output-stride rule."""
        stages = arch_like.stages
        taps = _check_out_features(out_features, len(stages))
        stride, strides = 2, []
        for st in stages:
            stride *= st.stride
            strides.append(stride)
        self._out_features: List[str] = [n for n in FEATURE_NAMES if n in taps]
        self._out_feature_strides = {n: strides[taps[n]] for n in self._out_features}
        self._out_feature_channels = {n: stages[taps[n]].cout for n in self._out_features}
        names = [""] * len(stages)
        for n, s in taps.items():
            names[s] = n
        self._stage_names: List[str] = names
        self._num_run: int = max(taps.values()) + 1
        self._size_div: int = max(self._out_feature_strides.values())

    @property
    def size_divisibility(self) -> int:
        return self._size_div

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``self.stem`` then ``self.stages`` up to the last requested output (subclasses with
        another layout override this)."""
        outputs: Dict[str, torch.Tensor] = {}
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i < self._num_run:
                x = stage(x)
                name = self._stage_names[i]
                if name != "":
                    outputs[name] = x
        return outputs


def _check_freeze_at(freeze_at: int, num_blocks: int) -> None:
    if not 0 <= freeze_at <= num_blocks:
        raise ValueError(f"MODEL.FNA.FREEZE_AT (freeze_at) must be in [0, {num_blocks}] (stem "
                         f"+ {num_blocks - 1} stages), got {freeze_at}")


def _freeze_blocks(blocks: Sequence[Tuple[nn.Module, str, nn.Module]], freeze_at: int) -> None:
    """``blocks``: (parent, attribute, module) for stem, stage 0, stage 1, ...; freezes the
    first ``freeze_at`` of them."""
    _check_freeze_at(freeze_at, len(blocks))
    for parent, attr, mod in blocks[:freeze_at]:
        new = _freeze(mod)
        if new is not mod:
            setattr(parent, attr, new)


# ----------------------------------------------------------------------------- seed
class MobileNetV2Seed(_StagedBackbone):
    """MobileNetV2 1.0 with torchvision's parameter names (``features.0`` ... ``features.17``).

    Built from :func:`torchvision.models.mobilenet_v2` (``features.18`` dropped), with the
    given norm / BN eps / momentum and the output-stride dilation applied to its depthwise
    convs."""

    @configurable
    def __init__(self, *, out_features: Sequence[str] = ("c3", "c4", "c5"), norm: NormSpec = "BN",
                 bn_eps: float = 1e-3, bn_momentum: float = 0.1, output_stride: int = 32,
                 freeze_at: int = 0, in_channels: int = 3) -> None:
        super().__init__()
        from torchvision.models import mobilenet_v2

        arch = mobilenetv2_arch()
        dilated = arch.with_output_stride(output_stride)
        tv = mobilenet_v2(weights=None, norm_layer=lambda c: make_norm(norm, c, bn_eps,
                                                                        bn_momentum))
        features = list(tv.features.children())[:18]
        if in_channels != 3:
            old = features[0][0]
            features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, 2, 1, bias=False)
        self.features = nn.Sequential(*features)
        self.arch = arch
        # torchvision block index i >= 1 is (stage, layer); apply stride / dilation
        idx = 1
        for st in dilated.stages:
            for i in range(st.depth):
                block = self.features[idx]
                dw = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1][0]
                k = dw.kernel_size[0]
                stride = st.stride if i == 0 else 1
                dw.stride, dw.dilation = (stride, stride), (st.dilation, st.dilation)
                dw.padding = (st.dilation * (k - 1) // 2,) * 2
                block.stride = stride
                block.use_res_connect = stride == 1 and st.layer_io(i)[0] == st.cout
                idx += 1
        self._setup_outputs(dilated, out_features)
        ends = [sum(arch.depths[:s + 1]) for s in range(len(arch.stages))]
        names = [""] * len(self.features)
        for s, n in enumerate(self._stage_names):
            names[ends[s]] = n
        self._feature_names: List[str] = names
        self._num_features_run: int = ends[self._num_run - 1] + 1
        # freeze_at counts the stem (features.0) and then whole stages
        num_blocks = 1 if freeze_at <= 0 else (1 if freeze_at == 1 else
                                               1 + ends[min(freeze_at, len(ends) + 1) - 2])
        _check_freeze_at(freeze_at, len(arch.stages) + 1)
        _freeze_blocks([(self.features, str(i), self.features[i]) for i in range(num_blocks)],
                       freeze_at and num_blocks)

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        return _common_kwargs(cfg, input_shape)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs: Dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.features):
            if i < self._num_features_run:
                x = block(x)
                name = self._feature_names[i]
                if name != "":
                    outputs[name] = x
        return outputs


# ----------------------------------------------------------------------------- derived
def _stem(in_channels: int, channels: int, norm: NormSpec, eps: float, momentum: float) -> ConvBN:
    return ConvBN(in_channels, channels, 3, 2, norm=norm, bn_eps=eps, bn_momentum=momentum)


def _build_stem_and_stages(net: _StagedBackbone, built: Union[Arch, SearchSpace],
                           layer: Callable[[Union[Stage, SearchStage], int], nn.Module], *,
                           in_channels: int, norm: NormSpec, bn_eps: float, bn_momentum: float,
                           out_features: Sequence[str], freeze_at: int) -> None:
    """Give ``net`` (a DerivedNet or SuperNet) ``stem`` and ``stages`` (stage ``s`` is an
    ``nn.Sequential`` of ``layer(built.stages[s], i)``), its outputs and its frozen blocks.
    ``built``: the Arch / SearchSpace after the output-stride rule."""
    net.stem = _stem(in_channels, built.stem_channels, norm, bn_eps, bn_momentum)
    net.stages = nn.ModuleList()
    for st in built.stages:
        net.stages.append(nn.Sequential(*[layer(st, i) for i in range(st.depth)]))
    net._setup_outputs(built, out_features)
    _freeze_blocks([(net, "stem", net.stem)]
                   + [(net.stages, str(s), m) for s, m in enumerate(net.stages)], freeze_at)


class DerivedNet(_StagedBackbone):
    """The network of an :class:`Arch` (skips moved to the end of their stage)."""

    @configurable
    def __init__(self, arch: Arch, *, out_features: Sequence[str] = ("c3", "c4", "c5"),
                 norm: NormSpec = "BN", bn_eps: float = 1e-3, bn_momentum: float = 0.1,
                 output_stride: int = 32, freeze_at: int = 0, in_channels: int = 3) -> None:
        super().__init__()
        arch.validate("arch")
        self.arch = arch.skips_to_end()
        built = self.arch.with_output_stride(output_stride)
        _build_stem_and_stages(
            self, built, lambda st, i: build_op(st.ops[i], *st.layer_io(i), st.dilation, norm,
                                                bn_eps, bn_momentum),
            in_channels=in_channels, norm=norm, bn_eps=bn_eps, bn_momentum=bn_momentum,
            out_features=out_features, freeze_at=freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        return {"arch": arch_from_config(cfg), **_common_kwargs(cfg, input_shape)}



# ----------------------------------------------------------------------------- super
class MixedOp(nn.Module):
    """A searchable layer: candidates in ``ops`` (keyed by op name) and logits ``alpha``.

    ``mode == "mixed"``: sum of softmax(alpha)_i * op_i(x); ``mode == "path"``: only
    ``ops[names[index]]`` runs."""

    def __init__(self, names: Sequence[str], cin: int, cout: int, stride: int, dilation: int,
                 bn_eps: float = 1e-3, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.names: Tuple[str, ...] = tuple(names)
        self.ops = nn.ModuleDict({n: build_op(n, cin, cout, stride, dilation, SEARCH_BN, bn_eps,
                                              bn_momentum) for n in self.names})
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(self.names)))
        self.mode = "mixed"
        self.index = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "path":
            return self.ops[self.names[self.index]](x)
        weights = F.softmax(self.alpha, dim=0)
        out = None
        for i, op in enumerate(self.ops.values()):
            y = weights[i] * op(x)
            out = y if out is None else out + y
        return out

    def extra_repr(self) -> str:
        return f"mode={self.mode}, index={self.index}"


class SuperNet(_StagedBackbone):
    """The super network of a :class:`SearchSpace` (see ``docs/design.md``, SuperNet control).

    Layers with one candidate (stem, stage 0) are plain ops with ``norm``; searchable layers
    are :class:`MixedOp` s with batch-statistics BN. Starts in mixed mode."""

    @configurable
    def __init__(self, space: SearchSpace, *, out_features: Sequence[str] = ("c3", "c4", "c5"),
                 norm: NormSpec = "BN", bn_eps: float = 1e-3, bn_momentum: float = 0.1,
                 output_stride: int = 32, freeze_at: int = 0, in_channels: int = 3) -> None:
        super().__init__()
        space.validate("space")
        self.space = space
        built = space.with_output_stride(output_stride)

        def layer(st: SearchStage, i: int) -> nn.Module:
            cands, (cin, cout, stride) = st.candidates[i], st.layer_io(i)
            if len(cands) > 1:
                return MixedOp(cands, cin, cout, stride, st.dilation, bn_eps, bn_momentum)
            return build_op(cands[0], cin, cout, stride, st.dilation, norm, bn_eps, bn_momentum)

        _build_stem_and_stages(self, built, layer, in_channels=in_channels, norm=norm,
                               bn_eps=bn_eps, bn_momentum=bn_momentum,
                               out_features=out_features, freeze_at=freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        return {"space": space_from_config(cfg), **_common_kwargs(cfg, input_shape)}

    # -- control API
    def mixed_ops(self) -> List[MixedOp]:
        """The searchable layers, in :meth:`SearchSpace.searchable_layers` order."""
        return [m for m in self.modules() if isinstance(m, MixedOp)]

    def arch_parameters(self) -> List[nn.Parameter]:
        return [m.alpha for m in self.mixed_ops()]

    def weight_parameters(self) -> List[nn.Parameter]:
        alphas = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in alphas]

    def set_mixed(self) -> None:
        for m in self.mixed_ops():
            m.mode = "mixed"

    def set_path(self, path: Sequence[int]) -> None:
        ops = self.mixed_ops()
        path = [int(i) for i in path]
        if len(path) != len(ops):
            raise ValueError(f"path has {len(path)} entries, the super net has {len(ops)} "
                             "searchable layers")
        for j, (m, i) in enumerate(zip(ops, path)):
            if not 0 <= i < len(m.names):
                raise ValueError(f"path[{j}] = {i} out of range for {len(m.names)} candidates")
        for m, i in zip(ops, path):
            m.mode, m.index = "path", i

    def current_path(self) -> Optional[List[int]]:
        """The path set by :meth:`set_path`, or None in mixed mode."""
        ops = self.mixed_ops()
        if any(m.mode != "path" for m in ops):
            return None
        return [m.index for m in ops]

    def sample_path(self, mode: str = "softmax", generator: Optional[torch.Generator] = None
                    ) -> List[int]:
        """One candidate index per searchable layer, drawn from softmax(alpha) ("softmax") or
        uniformly ("uniform"). Exactly one ``torch.rand`` draw per layer is taken from
        ``generator`` whatever the mode, so ranks seeded alike stay in step."""
        if mode not in ("softmax", "uniform"):
            raise ValueError(f"sample_path mode must be 'softmax' or 'uniform', got {mode!r}")
        ops = self.mixed_ops()
        u = torch.rand(len(ops), generator=generator, dtype=torch.float64)
        path = []
        for m, ui in zip(ops, u):
            n = len(m.names)
            if mode == "uniform":
                probs = torch.full((n,), 1.0 / n, dtype=torch.float64)
            else:
                probs = F.softmax(m.alpha.detach().to("cpu", torch.float64), dim=0)
            idx = int(torch.searchsorted(torch.cumsum(probs, 0), ui.reshape(1), right=True))
            path.append(min(idx, n - 1))
        return path

    def path_arch(self, path: Sequence[int], meta: Optional[dict] = None) -> Arch:
        """The :class:`Arch` of ``path`` (skips not moved)."""
        ops = iter(path)
        choices = [[next(ops) if len(c) > 1 else 0 for c in st.candidates]
                   for st in self.space.stages]
        return self.space.arch_from_choices(choices, meta)

    def derive(self) -> Arch:
        """Per-layer argmax of alpha (skips not moved)."""
        path = [int(torch.argmax(a.detach())) for a in self.arch_parameters()]
        return self.path_arch(path, {"name": f"derived_{self.space.name}",
                                     "space": self.space.name})



def find_supernet(model: nn.Module) -> Optional[SuperNet]:
    """The :class:`SuperNet` inside ``model`` (e.g. a meta-architecture, DDP-wrapped or not)."""
    for m in model.modules():
        if isinstance(m, SuperNet):
            return m
    return None


# ----------------------------------------------------------------------------- config
def _common_kwargs(cfg, input_shape: Optional[ShapeSpec]) -> dict:
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


@BACKBONE_REGISTRY.register()
def build_fna_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """``MODEL.FNA.NETWORK``: "seed" (torchvision-layout MobileNetV2; for other seeds the seed
    architecture in canonical layout), "super" or "derived"."""
    network = cfg.MODEL.FNA.NETWORK
    if network == "seed":
        if cfg.MODEL.FNA.SEED == "mobilenetv2":
            return MobileNetV2Seed(cfg, input_shape)
        return DerivedNet(seed_arch(cfg.MODEL.FNA.SEED), **_common_kwargs(cfg, input_shape))
    if network == "super":
        return SuperNet(cfg, input_shape)
    if network == "derived":
        return DerivedNet(cfg, input_shape)
    raise ValueError(f"MODEL.FNA.NETWORK: unknown network {network!r}; known: "
                     f"{', '.join(_NETWORKS)}")


@BACKBONE_REGISTRY.register()
def build_fna_retinanet_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """FPN over c3, c4, c5 (or ``MODEL.FPN.IN_FEATURES`` if set) of :func:`build_fna_backbone`,
    with P6 from C5 and P7 from P6 (``LastLevelP6P7(c5_channels, MODEL.FPN.OUT_CHANNELS,
    "c5")``), as in FNA's RetinaNet."""
    bottom_up = build_fna_backbone(cfg, input_shape)
    in_features = list(cfg.MODEL.FPN.IN_FEATURES) or ["c3", "c4", "c5"]
    shapes = bottom_up.output_shape()
    for name in in_features + ["c5"]:
        if name not in shapes:
            raise ValueError(f"MODEL.FNA.OUT_FEATURES {list(cfg.MODEL.FNA.OUT_FEATURES)} must "
                             f"contain {name!r} (used by the FPN: MODEL.FPN.IN_FEATURES "
                             f"{in_features} and P6 from c5)")
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(bottom_up=bottom_up, in_features=in_features, out_channels=out_channels,
               norm=cfg.MODEL.FPN.NORM,
               top_block=LastLevelP6P7(shapes["c5"].channels, out_channels, "c5"),
               fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
