"""What a latency table times: every candidate op of every searchable layer of a
:class:`~fna_d2.arch.SearchSpace` at the op's input shape for a batch of ``batch`` images of
``input_size`` (:func:`measure_latency_table`), the layers the table leaves out (stem and
single-candidate layers, :func:`time_fixed_part`) and whole networks (:func:`time_networks`).
Ops are built with normal BN, i.e. as they run in the derived network at inference. The
shapes come from :func:`fna_d2.arch.iter_layers`; :func:`timed_inputs` lists them, batch
included, in the order they are timed.

Every measurement goes through :func:`fna_d2.latency.timing.time_module`, looked up when it
runs, so a benchmark may swap in another clock there. ``progress`` (a
:class:`~.progress.Progress`) is told after each timed module."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..arch import Arch, Layer, SearchSpace, iter_layers
from ..blocks import ConvBN, build_op
from . import timing
from .malloc import apply_malloc_tuning
from .progress import Progress

__all__ = ["layer_shapes", "timed_inputs", "measure_latency_table", "time_fixed_part",
           "InferenceNet", "default_build", "time_networks"]


def layer_shapes(space: SearchSpace, input_size: Sequence[int]) -> List[Dict[str, Any]]:
    """Every layer of ``space`` (as built, i.e. with its dilations) with its input shape
    ``(C, H, W)`` for an image of ``input_size = (H, W)``, in network order."""
    return [{"stage": layer.stage, "layer": layer.index, "input": [layer.cin, *layer.in_hw],
             "cout": layer.cout, "stride": layer.stride, "dilation": layer.dilation,
             "candidates": list(layer.ops)} for layer in iter_layers(space, input_size)]


def timed_inputs(space: SearchSpace, input_size: Sequence[int], batch: int = 1
                 ) -> Dict[str, List[Tuple[int, ...]]]:
    """The input shapes ``(N, C, H, W)`` a table of ``space`` at ``input_size`` and ``batch``
    times: ``"table"`` one per searchable layer (all its candidates get that input),
    ``"fixed"`` the stem's then each single-candidate layer's, ``"network"`` the whole
    networks'."""
    size = [int(v) for v in input_size]
    table, fixed = [], [(batch, 3, *size)]
    for layer in iter_layers(space, size):
        (table if layer.searchable else fixed).append((batch, layer.cin, *layer.in_hw))
    return {"table": table, "fixed": fixed, "network": [(batch, 3, *size)]}


def _op(name: str, layer: Layer, device: str) -> nn.Module:
    return build_op(name, layer.cin, layer.cout, layer.stride, layer.dilation, "BN").to(device)


def _input(layer: Layer, device: str, batch: int) -> torch.Tensor:
    return torch.randn(batch, layer.cin, *layer.in_hw, device=device)


def _tick(progress: Optional[Progress], what: str) -> None:
    if progress is not None:
        progress.step(what)


def measure_latency_table(space: SearchSpace, input_size: Sequence[int], repeats: int = 10,
                          device: str = "cpu", threads: Optional[int] = None,
                          tune_malloc: bool = True, *, batch: int = 1,
                          progress: Optional[Progress] = None) -> List[List[float]]:
    """Time every candidate of every searchable layer on ``batch`` inputs (ms, raw: no
    calibration), no caching. ``tune_malloc``: :func:`~.malloc.apply_malloc_tuning` first."""
    apply_malloc_tuning(tune_malloc)
    table = []
    with timing.num_threads(threads):
        for layer in iter_layers(space, input_size):
            if layer.searchable:
                x = _input(layer, device, batch)
                row = []
                for n in layer.ops:
                    row.append(timing.time_module(_op(n, layer, device), x, repeats))
                    _tick(progress, f"stage {layer.stage} layer {layer.index} {n}")
                table.append(row)
    return table


def time_fixed_part(space: SearchSpace, input_size: Sequence[int], repeats: int,
                    device: str, batch: int = 1, progress: Optional[Progress] = None) -> float:
    """Latency (ms) of the layers a table leaves out: the stem and every single-candidate
    layer, each timed alone at its input shape."""
    stem = ConvBN(3, space.stem_channels, 3, 2).to(device)
    x = torch.randn(batch, 3, *input_size, device=device)
    total = timing.time_module(stem, x, repeats)
    _tick(progress, "stem")
    for layer in iter_layers(space, input_size):
        if not layer.searchable:
            total += timing.time_module(_op(layer.ops[0], layer, device),
                                        _input(layer, device, batch), repeats)
            _tick(progress, f"stage {layer.stage} layer {layer.index} (fixed)")
    return total


class InferenceNet(nn.Module):
    """The network of an :class:`~fna_d2.arch.Arch` as a latency table predicts it: the stem
    and every layer in order (skips moved to the end of their stage), plain torch modules with
    :class:`~fna_d2.modeling.DerivedNet`'s parameter names (``stem.*``, ``stages.{s}.{l}.*``)
    and BN, returning the last feature map (DerivedNet's ``c5``)."""

    def __init__(self, arch: Arch, bn_eps: float = 1e-3) -> None:
        super().__init__()
        built = arch.validate("arch").skips_to_end().with_output_stride(32)
        self.stem = ConvBN(3, built.stem_channels, 3, 2, norm="BN", bn_eps=bn_eps)
        layers: List[List[nn.Module]] = [[] for _ in built.stages]
        for layer in iter_layers(built):
            layers[layer.stage].append(build_op(layer.ops[0], layer.cin, layer.cout,
                                                layer.stride, layer.dilation, "BN", bn_eps))
        self.stages = nn.ModuleList(nn.Sequential(*stage) for stage in layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


def default_build(arch: Arch) -> nn.Module:
    """The network whose latency a table predicts: :class:`InferenceNet` (the computation of a
    :class:`~fna_d2.modeling.DerivedNet` with output ``c5``, without detectron2)."""
    return InferenceNet(arch)


def time_networks(archs: Sequence[Arch], input_size: Sequence[int], repeats: int, device: str,
                  build: Optional[Callable[[Arch], nn.Module]] = None, batch: int = 1,
                  progress: Optional[Progress] = None) -> List[float]:
    """Latency (ms) of ``build(arch)`` (default :func:`default_build`) for each of ``archs`` on
    a batch of ``batch`` ``input_size`` images."""
    build = build or default_build
    x = torch.randn(batch, 3, *input_size, device=device)
    out = []
    for k, a in enumerate(archs):
        out.append(timing.time_module(build(a).to(device), x, repeats))
        _tick(progress, f"network {a.meta.get('name', k)}")
    return out
