"""Analytic Params / MAdds of ops and architectures (no model is built), the search's MAdds
table and its differentiable expectation under the architecture distribution.

MAdds convention (the paper's): a conv costs ``k*k*cin*cout/groups*Hout*Wout``; an op's BN
adds 2 parameters per channel to Params and nothing to MAdds. :func:`arch_cost` equals the
hook count of :func:`fna_d2.cost.model_cost` on the built backbone."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..arch import Arch, SearchSpace, iter_layers, parse_op

__all__ = ["Cost", "conv_out_size", "op_cost", "arch_cost", "op_cost_table", "expected_cost"]


@dataclass
class Cost:
    """Parameter count and multiply-adds (plain counts, not millions / billions)."""

    params: int = 0
    madds: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.madds + other.madds)


def conv_out_size(size: int, kernel: int, stride: int = 1, dilation: int = 1,
                  padding: Optional[int] = None) -> int:
    """Output length of a conv along one axis ("same" padding ``dilation*(k-1)//2`` default)."""
    if padding is None:
        padding = dilation * (kernel - 1) // 2
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _conv(hw: Tuple[int, int], cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1,
          groups: int = 1, norm_params: bool = True) -> Tuple[Cost, Tuple[int, int]]:
    ho = conv_out_size(hw[0], k, stride, dilation)
    wo = conv_out_size(hw[1], k, stride, dilation)
    weights = k * k * cin // groups * cout
    return Cost(weights + (2 * cout if norm_params else 0), weights * ho * wo), (ho, wo)


def op_cost(op: str, cin: int, cout: int, stride: int, dilation: int,
            input_hw: Tuple[int, int], norm_params: bool = True) -> Tuple[Cost, Tuple[int, int]]:
    """Cost of op ``op`` on a ``cin x H x W`` input and its output ``(H, W)``.

    Params count the BN affine parameters (2 per channel) unless ``norm_params`` is False
    (the super network's searchable BNs have none)."""
    parsed = parse_op(op)
    if parsed is None:  # skip
        return Cost(), tuple(input_hw)  # type: ignore[return-value]
    k, e = parsed
    mid = cin * e
    total, hw = Cost(), tuple(input_hw)
    if e != 1:
        c, hw = _conv(hw, cin, mid, 1, norm_params=norm_params)
        total += c
    c, hw = _conv(hw, mid, mid, k, stride, dilation, groups=mid, norm_params=norm_params)
    total += c
    c, hw = _conv(hw, mid, cout, 1, norm_params=norm_params)
    return total + c, hw


def arch_cost(arch: Arch, input_size: Tuple[int, int], output_stride: Optional[int] = None
              ) -> Cost:
    """Analytic cost of :class:`~fna_d2.modeling.DerivedNet` (stem + all stages) at
    ``input_size`` (H, W); equals :func:`~fna_d2.cost.model_cost` of that backbone."""
    built = arch.with_output_stride(output_stride)
    total, _ = _conv(tuple(input_size), 3, built.stem_channels, 3, 2)  # the stem
    for layer in iter_layers(built, input_size):
        total += op_cost(layer.ops[0], layer.cin, layer.cout, layer.stride, layer.dilation,
                         layer.in_hw)[0]
    return total


def op_cost_table(space: SearchSpace, input_size: Tuple[int, int] = (800, 1088),
                  cost: str = "madds", output_stride: Optional[int] = None
                  ) -> List[List[float]]:
    """Per searchable layer (``space.searchable_layers()`` order), per candidate: the GMAdds
    (the paper's cost) of that op at its input shape when the network input is ``input_size``
    (H, W) and the space is built with ``output_stride``'s dilations (as the super network
    builds it). ``cost`` must be "madds": the search's latency table is measured by
    :func:`fna_d2.latency.latency_table`."""
    if cost != "madds":
        raise ValueError(f"op_cost_table: unknown cost type {cost!r}; it computes 'madds' only "
                         f"(MODEL.FNA.SEARCH.COST 'latency' is fna_d2.latency.latency_table)")
    built = space.with_output_stride(output_stride)
    return [[op_cost(op, layer.cin, layer.cout, layer.stride, layer.dilation,
                     layer.in_hw)[0].madds / 1e9 for op in layer.ops]
            for layer in iter_layers(built, input_size) if layer.searchable]


def expected_cost(alphas: Sequence[torch.Tensor], table: Sequence[Sequence[float]],
                  temperature: float = 1.0) -> torch.Tensor:
    """sum over layers of ``softmax(alpha_l / temperature) . table[l]`` (differentiable in the
    alphas; ``temperature``: the super network's, 1 except FNA's SSDLite search)."""
    if len(alphas) != len(table):
        raise ValueError(f"{len(alphas)} alpha vectors but a cost table of {len(table)} layers")
    total = None
    for l, (a, row) in enumerate(zip(alphas, table)):
        if a.numel() != len(row):
            raise ValueError(f"searchable layer {l}: {a.numel()} alphas but {len(row)} costs")
        c = (F.softmax(a / temperature, dim=-1) * torch.as_tensor(row, dtype=a.dtype, device=a.device)).sum()
        total = c if total is None else total + c
    if total is None:
        return torch.zeros(())
    return total
