"""``python -m fna_d2.export``: a trained model to TorchScript or ONNX, checked against the
eager model. ::

    python -m fna_d2.export --config-file output/demo/trees/adapt/config.yaml \\
        --format onnx --output export/trees [--sample-image IMG] [--tolerance 1e-3] \\
        MODEL.WEIGHTS output/demo/trees/adapt/model_final.pth [KEY VALUE ...]

Writes ``OUTPUT/model.ts`` or ``OUTPUT/model.onnx`` and ``OUTPUT/export.json``; prints the
parity (max abs difference of every output against the eager model on the sample image).
Exit code 0: exported, parity within the tolerance; 1: exported, parity outside it (the file
is kept, ``export.json`` says so); 2: bad input (an :class:`~fna_d2.errors.FNAError`, one line:
missing weights file, weights that do not fit the config's model, no sample image ...).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from detectron2.utils.logger import setup_logger

from ..config import get_fna_cfg
from ..errors import FNAError
from .core import DEFAULT_TOLERANCE, export_trained_model
from .formats import FORMATS, ONNX_OPSET

__all__ = ["parse_args", "main"]

PROG = "python -m fna_d2.export"


def _tolerance(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description="Export a trained fna_d2 model "
                                 "(TorchScript or ONNX) and check it against the eager model")
    ap.add_argument("--config-file", required=True,
                    help="the config the model was trained with (e.g. its config.yaml)")
    ap.add_argument("--format", required=True, choices=FORMATS)
    ap.add_argument("--output", required=True, help="folder for the model and export.json")
    ap.add_argument("--sample-image", default=None,
                    help="image to trace with and check on (default: the first image of "
                         "DATASETS.TEST[0])")
    ap.add_argument("--tolerance", type=_tolerance, default=DEFAULT_TOLERANCE,
                    help="parity limit, relative to each output's magnitude: max |exported - "
                         "eager| <= tolerance * max(1, max |eager|)")
    ap.add_argument("--opset", type=int, default=ONNX_OPSET, help="ONNX opset")
    ap.add_argument("opts", nargs=argparse.REMAINDER,
                    help="KEY VALUE overrides, MODEL.WEIGHTS among them")
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logger(name="fna_d2")
    try:
        cfg = get_fna_cfg(args.config_file, args.opts)
        info = export_trained_model(cfg, args.format, args.output, args.sample_image,
                                    args.tolerance, args.opset, args.config_file)
    except FNAError as e:
        print(f"fna_d2.export: error: {e}", file=sys.stderr)
        return 2
    par = info["parity"]
    diffs = ", ".join(f"{o['name']} {o['max_abs_diff']:.3g} (limit {o['limit']:.3g})"
                      for o in par["outputs"])
    verdict = "ok" if par["ok"] else "OUTSIDE the tolerance"
    unmatched = f", {par['unmatched']} unmatched detections" if par["unmatched"] else ""
    print(f"[export] {os.path.join(args.output, info['file'])}: max abs diff vs eager: {diffs}"
          f"{unmatched}: {verdict} (--tolerance {args.tolerance:g})")
    return 0 if par["ok"] else 1
