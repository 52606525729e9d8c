"""``python -m fna_d2.quant``: int8 post-training quantization of a trained model. ::

    python -m fna_d2.quant --config-file output/demo/nuclei/adapt/config.yaml \\
        --calib-images 64 --output quant/nuclei [--eval] \\
        MODEL.WEIGHTS output/demo/nuclei/adapt/model_final.pth [KEY VALUE ...]

Writes ``OUTPUT/model_int8.ts`` (TorchScript, same input and outputs as ``python -m
fna_d2.export``'s) and ``OUTPUT/quant.json``; prints the CPU latency of float and int8 and,
with ``--eval``, the test metric of both. Exit code 0: written; 2: bad input (an
:class:`~fna_d2.errors.FNAError`, one line).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from detectron2.utils.logger import setup_logger

from ..config import get_fna_cfg
from ..errors import FNAError
from .core import quantize_trained_model
from .fx import BACKEND, BACKENDS

__all__ = ["parse_args", "main"]

PROG = "python -m fna_d2.quant"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description="int8 post-training quantization of a "
                                 "trained fna_d2 model (torch.ao FX, x86), TorchScript out")
    ap.add_argument("--config-file", required=True,
                    help="the config the model was trained with (e.g. its config.yaml)")
    ap.add_argument("--output", required=True, help="folder for model_int8.ts and quant.json")
    ap.add_argument("--calib-images", type=int, default=64,
                    help="calibration images, the first N of DATASETS.TRAIN[0] (default 64)")
    ap.add_argument("--eval", action="store_true",
                    help="also evaluate float and int8 on DATASETS.TEST[0]")
    ap.add_argument("--backend", default=BACKEND, choices=BACKENDS,
                    help=f"torch's int8 engine and its qconfig mapping (default {BACKEND})")
    ap.add_argument("--latency-seconds", type=float, default=2.0,
                    help="minimum timing per model (torch.utils.benchmark, default 2)")
    ap.add_argument("opts", nargs=argparse.REMAINDER,
                    help="KEY VALUE overrides, MODEL.WEIGHTS among them")
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logger(name="fna_d2")
    try:
        cfg = get_fna_cfg(args.config_file, args.opts)
        info = quantize_trained_model(cfg, args.output, args.calib_images, args.eval,
                                      args.latency_seconds, args.config_file,
                                      args.backend)
    except FNAError as e:
        print(f"fna_d2.quant: error: {e}", file=sys.stderr)
        return 2
    lat = info["latency"]
    line = (f"[quant] {os.path.join(args.output, info['file'])}: CPU latency float "
            f"{lat['float']['median_ms']:.2f} ms, int8 {lat['int8']['median_ms']:.2f} ms "
            f"({lat['speedup']:.2f}x)")
    if "eval" in info:
        ev = info["eval"]
        line += (f"; {ev['metric']} float {ev['float']:.2f}, int8 {ev['int8']:.2f} "
                 f"({ev['delta']:+.2f})")
    print(line)
    return 0
