"""The one walk over the layers of an :class:`~.types.Arch` or :class:`~.types.SearchSpace`
with their shapes (widths, stride, dilation, input and output size): what cost, latency and
remapping iterate over instead of their own loops."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Tuple

from .types import Stage

__all__ = ["Layer", "iter_layers"]


@dataclass(frozen=True)
class Layer:
    """One layer of an :class:`Arch` or :class:`SearchSpace` as the network builds it.

    ``ops``: the layer's op (an ``Arch``) or candidates (a ``SearchSpace``); ``in_hw`` /
    ``out_hw``: its input and output (H, W) for the network input given to
    :func:`iter_layers` (None when no input size was given). Every op of a layer keeps the
    same output shape ("same" padding: ``ceil(size / stride)``)."""

    stage: int
    index: int
    cin: int
    cout: int
    stride: int
    dilation: int
    ops: Tuple[str, ...]
    in_hw: Optional[Tuple[int, int]] = None
    out_hw: Optional[Tuple[int, int]] = None

    @property
    def searchable(self) -> bool:
        return len(self.ops) > 1


def _same_out(size: int, stride: int) -> int:
    return -(-int(size) // int(stride))


def iter_layers(net: Any, input_size: Optional[Sequence[int]] = None) -> Iterator[Layer]:
    """Every layer of ``net`` (an :class:`Arch` or :class:`SearchSpace`, as given: apply
    ``with_output_stride`` first for a dilated network) in network order, with its widths,
    stride, dilation and, when ``input_size = (H, W)`` of the image is given, its input and
    output sizes after the stride-2 stem. The one walk that cost, latency and remapping use."""
    hw = None
    if input_size is not None:
        hw = (_same_out(input_size[0], 2), _same_out(input_size[1], 2))
    for s, st in enumerate(net.stages):
        per_layer = ([(op,) for op in st.ops] if isinstance(st, Stage)
                     else list(st.candidates))
        for i, ops in enumerate(per_layer):
            cin, cout, stride = st.layer_io(i)
            out = None if hw is None else (_same_out(hw[0], stride), _same_out(hw[1], stride))
            yield Layer(s, i, cin, cout, stride, st.dilation, tuple(ops), hw, out)
            hw = out
