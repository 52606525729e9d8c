"""What the seed, derived and super backbones share: the output taps (``c2`` .. ``c5``), their
strides and channels, the stem, building ``stages`` from the layer walk, and ``forward``.

Outputs: ``c2`` after stage 1, ``c3`` after stage 2, ``c4`` after stage 4, ``c5`` after the last
stage. All stages are always built (the names and the search space stay whole); stages after
the last requested output are skipped in ``forward`` (their parameters then get no gradient).
With ``output_stride`` 16 / 8 the later stages are dilated (DeepLab rule) and
``output_shape()`` reports the real strides.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple, Union

import torch
from torch import nn

from detectron2.modeling.backbone import Backbone

from ..arch import Arch, Layer, SearchSpace, iter_layers
from .freeze import freeze_blocks
from .ops import ConvBN, NormSpec

__all__ = ["FEATURE_NAMES", "tap_stages", "check_out_features", "StagedBackbone"]

#: output names, in order; c2/c3/c4 are taken after stages 1/2/4, c5 after the last stage
FEATURE_NAMES: Tuple[str, ...] = ("c2", "c3", "c4", "c5")


def tap_stages(num_stages: int) -> Dict[str, int]:
    """Output name -> index of the stage it is taken after, for ``num_stages`` stages."""
    return {"c2": 1, "c3": 2, "c4": 4, "c5": num_stages - 1}


def check_out_features(out_features: Sequence[str], num_stages: int) -> Dict[str, int]:
    """name -> stage index for the requested outputs; ValueError naming the config key."""
    taps = tap_stages(num_stages)
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


class StagedBackbone(Backbone):
    """A stem and stages with outputs tapped after some stages: the output bookkeeping of the
    three backbones, and the ``stem`` / ``stages`` layout of the derived and super nets."""

    def _setup_outputs(self, arch_like: Union[Arch, SearchSpace],
                       out_features: Sequence[str]) -> None:
        """``arch_like``: an Arch/SearchSpace **after** the output-stride rule."""
        stages = arch_like.stages
        taps = check_out_features(out_features, len(stages))
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

    def _build_stem_and_stages(self, built: Union[Arch, SearchSpace],
                               build_layer: Callable[[Layer], nn.Module], *, in_channels: int,
                               norm: NormSpec, bn_eps: float, bn_momentum: float,
                               out_features: Sequence[str], freeze_at: int) -> None:
        """Give the net ``stem`` (3x3 stride-2 :class:`ConvBN`) and ``stages`` (stage ``s`` is
        an ``nn.Sequential`` of ``build_layer(layer)`` for its layers, from
        :func:`~fna_d2.arch.iter_layers`), its outputs and its frozen blocks.
        ``built``: the Arch / SearchSpace after the output-stride rule."""
        self.stem = ConvBN(in_channels, built.stem_channels, 3, 2, norm=norm, bn_eps=bn_eps,
                           bn_momentum=bn_momentum)
        layers: List[List[nn.Module]] = [[] for _ in built.stages]
        for layer in iter_layers(built):
            layers[layer.stage].append(build_layer(layer))
        self.stages = nn.ModuleList([nn.Sequential(*stage) for stage in layers])
        self._setup_outputs(built, out_features)
        freeze_blocks([(self, "stem", self.stem)]
                      + [(self.stages, str(s), m) for s, m in enumerate(self.stages)], freeze_at)

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
