#!/usr/bin/env python
"""One depthwise conv (+ BN + ReLU) in float and in int8 per backend, kernel and dilation, at
the shapes of the nuclei demo's backbone: the measurement behind ``fna_d2.quant``'s rule of
which depthwise convs stay float (``docs/quantization.md``, "Where int8 loses"). Prints one
line per case (float ms, int8 ms, torch.utils.benchmark medians); writes nothing. ::

    OMP_NUM_THREADS=1 python bench/int8_dw_kernels.py [--backends fbgemm,x86,qnnpack]
"""
from __future__ import annotations

import argparse
import itertools
import warnings

import torch
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
from torch.utils import benchmark

#: (channels, side) of the nuclei backbone's depthwise inputs: output stride 16 and 4
SHAPES = ((480, 8), (144, 32))


def median_ms(fn, x: torch.Tensor, min_run_time: float) -> float:
    with torch.no_grad():
        t = benchmark.Timer(stmt="fn(x)", globals={"fn": fn, "x": x}, num_threads=1)
        return t.blocked_autorange(min_run_time=min_run_time).median * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("::")[0])
    ap.add_argument("--backends", default="fbgemm,x86,qnnpack")
    ap.add_argument("--min-run-time", type=float, default=0.1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    for backend in args.backends.split(","):
        torch.backends.quantized.engine = backend
        for (c, side), k, d in itertools.product(SHAPES, (3, 5, 7), (1, 2, 4)):
            block = nn.Sequential(nn.Conv2d(c, c, k, 1, d * (k - 1) // 2, d, groups=c,
                                            bias=False), nn.BatchNorm2d(c), nn.ReLU()).eval()
            x = torch.randn(1, c, side, side)
            prepared = prepare_fx(block, get_default_qconfig_mapping(backend), (x,))
            prepared(x)
            qconv = convert_fx(prepared).get_submodule("0")  # the int8 conv-BN-ReLU
            qx = torch.quantize_per_tensor(x, 0.05, 64, torch.quint8)
            print(f"{backend:8s} depthwise {c}x{side}x{side} k{k} d{d}: float "
                  f"{median_ms(block, x, args.min_run_time):.3f} ms, int8 "
                  f"{median_ms(qconv, qx, args.min_run_time):.3f} ms", flush=True)


if __name__ == "__main__":
    main()
