"""What a latency table times: every candidate op of every searchable layer of a
:class:`~fna_d2.arch.SearchSpace` at the op's input shape for a batch-1 image of
``input_size`` (:func:`measure_latency_table`), the layers the table leaves out (stem and
single-candidate layers, :func:`time_fixed_part`) and whole networks (:func:`time_networks`).
Ops are built with normal BN, i.e. as they run in the derived network at inference. The
shapes come from :func:`fna_d2.arch.iter_layers`.

Every measurement goes through :func:`fna_d2.latency.timing.time_module`, looked up when it
runs, so a benchmark may swap in another clock there."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..arch import Arch, Layer, SearchSpace, iter_layers
from ..modeling import DerivedNet
from ..modeling.ops import ConvBN, build_op
from . import timing
from .malloc import apply_malloc_tuning

__all__ = ["layer_shapes", "measure_latency_table", "time_fixed_part", "time_networks",
           "default_build"]


def layer_shapes(space: SearchSpace, input_size: Sequence[int]) -> List[Dict[str, Any]]:
    """Every layer of ``space`` (as built, i.e. with its dilations) with its input shape
    ``(C, H, W)`` for an image of ``input_size = (H, W)``, in network order."""
    return [{"stage": layer.stage, "layer": layer.index, "input": [layer.cin, *layer.in_hw],
             "cout": layer.cout, "stride": layer.stride, "dilation": layer.dilation,
             "candidates": list(layer.ops)} for layer in iter_layers(space, input_size)]


def _op(name: str, layer: Layer, device: str) -> nn.Module:
    return build_op(name, layer.cin, layer.cout, layer.stride, layer.dilation, "BN").to(device)


def _input(layer: Layer, device: str) -> torch.Tensor:
    return torch.randn(1, layer.cin, *layer.in_hw, device=device)


def measure_latency_table(space: SearchSpace, input_size: Sequence[int], repeats: int = 10,
                          device: str = "cpu", threads: Optional[int] = None,
                          tune_malloc: bool = True) -> List[List[float]]:
    """Time every candidate of every searchable layer (ms, raw: no calibration), no caching.
    ``tune_malloc``: :func:`~.malloc.apply_malloc_tuning` first."""
    apply_malloc_tuning(tune_malloc)
    table = []
    with timing.num_threads(threads):
        for layer in iter_layers(space, input_size):
            if layer.searchable:
                x = _input(layer, device)
                table.append([timing.time_module(_op(n, layer, device), x, repeats)
                              for n in layer.ops])
    return table


def time_fixed_part(space: SearchSpace, input_size: Sequence[int], repeats: int,
                    device: str) -> float:
    """Latency (ms) of the layers a table leaves out: the stem and every single-candidate
    layer, each timed alone at its input shape."""
    stem = ConvBN(3, space.stem_channels, 3, 2).to(device)
    total = timing.time_module(stem, torch.randn(1, 3, *input_size, device=device), repeats)
    for layer in iter_layers(space, input_size):
        if not layer.searchable:
            total += timing.time_module(_op(layer.ops[0], layer, device),
                                        _input(layer, device), repeats)
    return total


def default_build(arch: Arch) -> nn.Module:
    """The network whose latency a table predicts: a :class:`~fna_d2.modeling.DerivedNet`
    with output ``c5``."""
    return DerivedNet(arch, out_features=["c5"])


def time_networks(archs: Sequence[Arch], input_size: Sequence[int], repeats: int, device: str,
                  build: Optional[Callable[[Arch], nn.Module]] = None) -> List[float]:
    """Latency (ms) of ``build(arch)`` (default :func:`default_build`) for each of ``archs`` on
    a batch-1 ``input_size`` image."""
    build = build or default_build
    x = torch.randn(1, 3, *input_size, device=device)
    return [timing.time_module(build(a).to(device), x, repeats) for a in archs]
