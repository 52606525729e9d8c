"""The super network of a search space: :class:`SuperNet`, its searchable layers
(:class:`MixedOp`) and the control API the search trainer drives (``docs/design.md``,
SuperNet control); :func:`find_supernet` locates it inside a meta-architecture.

Each searchable layer is ``stages.{s}.{l}.ops.{op}.*`` (candidates with batch-statistics BN)
and ``stages.{s}.{l}.alpha`` (its architecture logits)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec

from ..arch import Arch, Layer, SearchSpace
from ..errors import ConfigError
from .arch_config import backbone_kwargs, space_from_config
from .ops import SEARCH_BN, NormSpec, build_op
from .staged import StagedBackbone

__all__ = ["MixedOp", "SuperNet", "find_supernet"]


class MixedOp(nn.Module):
    """A searchable layer: candidates in ``ops`` (keyed by op name) and logits ``alpha``.

    ``mode == "mixed"``: sum of softmax(alpha / temperature)_i * op_i(x); ``mode == "path"``:
    only ``ops[names[index]]`` runs."""

    def __init__(self, names: Sequence[str], cin: int, cout: int, stride: int, dilation: int,
                 bn_eps: float = 1e-3, bn_momentum: float = 0.1, temperature: float = 1.0
                 ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"MODEL.FNA.SEARCH.TEMPERATURE must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.names: Tuple[str, ...] = tuple(names)
        self.ops = nn.ModuleDict({n: build_op(n, cin, cout, stride, dilation, SEARCH_BN, bn_eps,
                                              bn_momentum) for n in self.names})
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(self.names)))
        self.mode = "mixed"
        self.index = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "path":
            return self.ops[self.names[self.index]](x)
        weights = self.weights()
        out = None
        for i, op in enumerate(self.ops.values()):
            y = weights[i] * op(x)
            out = y if out is None else out + y
        return out

    def weights(self) -> torch.Tensor:
        """softmax(alpha / temperature): the mixing weights, also the sampling distribution."""
        return F.softmax(self.alpha / self.temperature, dim=0)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, index={self.index}"


class SuperNet(StagedBackbone):
    """The super network of a :class:`SearchSpace` (see ``docs/design.md``, SuperNet control).

    Layers with one candidate (stem, stage 0) are plain ops with ``norm``; searchable layers
    are :class:`MixedOp` s with batch-statistics BN, mixing and sampling by
    softmax(alpha / ``temperature``) (FNA's SSDLite search: 0.9). Starts in mixed mode."""

    @configurable
    def __init__(self, space: SearchSpace, *, out_features: Sequence[str] = ("c3", "c4", "c5"),
                 norm: NormSpec = "BN", bn_eps: float = 1e-3, bn_momentum: float = 0.1,
                 output_stride: int = 32, freeze_at: int = 0, in_channels: int = 3,
                 temperature: float = 1.0) -> None:
        super().__init__()
        space.validate("space")
        self.space = space
        self.temperature = float(temperature)

        def build_layer(layer: Layer) -> nn.Module:
            if layer.searchable:
                return MixedOp(layer.ops, layer.cin, layer.cout, layer.stride, layer.dilation,
                               bn_eps, bn_momentum, temperature)
            return build_op(layer.ops[0], layer.cin, layer.cout, layer.stride, layer.dilation,
                            norm, bn_eps, bn_momentum)

        self._build_stem_and_stages(space.with_output_stride(output_stride), build_layer,
                                    in_channels=in_channels, norm=norm, bn_eps=bn_eps,
                                    bn_momentum=bn_momentum, out_features=out_features,
                                    freeze_at=freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        return {"space": space_from_config(cfg), **backbone_kwargs(cfg, input_shape),
                "temperature": cfg.MODEL.FNA.SEARCH.TEMPERATURE}

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
        """One candidate index per searchable layer, drawn from softmax(alpha / temperature)
        ("softmax") or
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
                probs = F.softmax(m.alpha.detach().to("cpu", torch.float64) / m.temperature,
                                  dim=0)
            idx = int(torch.searchsorted(torch.cumsum(probs, 0), ui.reshape(1), right=True))
            path.append(min(idx, n - 1))
        return path

    def path_arch(self, path: Sequence[int], meta: Optional[dict] = None) -> Arch:
        """The :class:`Arch` of ``path`` (skips not moved)."""
        return self.space.arch_from_path(path, meta)

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
