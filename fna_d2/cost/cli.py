"""The paper's RetinaNet config and the command line.

``python -m fna_d2.cost --config-file CFG [--input-size H W] [KEY VALUE ...]`` prints the
backbone / FPN / head / total Params and MAdds of the model a config builds;
``python -m fna_d2.cost --paper`` builds the paper's two RetinaNets and compares them with its
table (exit status 1 if either is more than 0.5% off), and its MobileNetV2 SSDLite at 320x320
against Table 3 as the table rounds it (4.3M / 0.8B; exit status 1 otherwise). Bad input (an :class:`~fna_d2.errors.
FNAError`: config key, arch file...) is reported on one line, exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Dict, Optional, Sequence

from detectron2.config import get_cfg
from detectron2.modeling import build_model

from .. import modeling  # noqa: F401  (registers the FNA backbones for build_model)
from ..arch import fna_retinanet_arch, save_arch
from ..config import add_fna_config, get_fna_cfg
from ..errors import FNAError
from .analytic import Cost
from .counting import config_cost, detectron2_model_cost

__all__ = ["PAPER_RETINANET", "PAPER_SSDLITE", "paper_retinanet_cfg", "paper_ssdlite_cfg",
           "main"]

#: the paper's RetinaNet table (Params in M, MAdds in B at 800x1088)
PAPER_RETINANET = {"mobilenetv2": (11.49, 133.05), "fna": (11.73, 133.03)}
#: the paper's MobileNetV2 SSDLite (Table 3: Params in M, MAdds in B at 320x320, 1 decimal)
PAPER_SSDLITE = {"mobilenetv2": (4.3, 0.8)}


def paper_retinanet_cfg(network: str = "seed", arch: str = "", num_classes: int = 80):
    """A minimal config of the paper's RetinaNet (FPN 256, P6 from C5, 4 convs of 256 per
    branch, 9 anchors) on an FNA backbone, on CPU. ``arch``: arch file for "derived"."""
    cfg = get_cfg()
    add_fna_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    cfg.MODEL.BACKBONE.NAME = "build_fna_retinanet_fpn_backbone"
    cfg.MODEL.FNA.NETWORK = network
    cfg.MODEL.FNA.ARCH = arch
    cfg.MODEL.FPN.IN_FEATURES = ["c3", "c4", "c5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 256
    cfg.MODEL.RETINANET.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    cfg.MODEL.RETINANET.NUM_CONVS = 4
    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)]
                                        for s in (32, 64, 128, 256, 512)]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def paper_ssdlite_cfg(num_classes: int = 80):
    """The paper's MobileNetV2 SSDLite (as ``configs/Base-FNA-SSDLite.yaml``: the seed
    architecture, SSD300 anchors, 320x320) on CPU."""
    cfg = get_cfg()
    add_fna_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "FNASSDLite"
    cfg.MODEL.BACKBONE.NAME = "build_fna_ssdlite_backbone"
    cfg.MODEL.FNA.NETWORK = "derived"
    cfg.MODEL.SSDLITE.NUM_CLASSES = num_classes
    cfg.MODEL.SSDLITE.INPUT_SIZE = (320, 320)
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "SSDAnchorGenerator"
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[30, 60], [60, 114], [114, 168], [168, 222],
                                        [222, 276], [276, 330]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _print_report(title: str, report: Dict[str, Cost], input_size, file=None) -> None:
    print(f"{title} at {input_size[0]}x{input_size[1]}:", file=file)
    print(f"  {'part':<10}{'Params (M)':>12}{'MAdds (B)':>12}", file=file)
    for name, c in report.items():
        print(f"  {name:<10}{c.params / 1e6:>12.3f}{c.madds / 1e9:>12.3f}", file=file)


def _paper(size) -> int:
    """Build the paper's two RetinaNets, print them beside its table; 0 if within 0.5%."""
    worst = 0.0
    with tempfile.TemporaryDirectory() as d:
        arch = save_arch(fna_retinanet_arch(), os.path.join(d, "fna.json"))
        for key, network, path in (("mobilenetv2", "seed", ""), ("fna", "derived", arch)):
            rep = detectron2_model_cost(build_model(paper_retinanet_cfg(network, path)), size)
            _print_report(f"RetinaNet, {key} backbone", rep, size)
            pp, pm = PAPER_RETINANET[key]
            got_p, got_m = rep["total"].params / 1e6, rep["total"].madds / 1e9
            dp, dm = (got_p / pp - 1) * 100, (got_m / pm - 1) * 100
            worst = max(worst, abs(dp), abs(dm))
            print(f"  paper     {pp:>12.2f}{pm:>12.2f}   (measured {dp:+.2f}% / {dm:+.2f}%)")
    ssd = (320, 320)
    rep = detectron2_model_cost(build_model(paper_ssdlite_cfg()), ssd)
    _print_report("SSDLite, mobilenetv2 backbone", rep, ssd)
    pp, pm = PAPER_SSDLITE["mobilenetv2"]
    got = (round(rep["total"].params / 1e6, 1), round(rep["total"].madds / 1e9, 1))
    print(f"  paper     {pp:>12.1f}{pm:>12.1f}   (measured, rounded as the table: "
          f"{got[0]:.1f} / {got[1]:.1f})")
    return 0 if worst <= 0.5 and got == (pp, pm) else 1


def _config(config_file: str, opts: Sequence[str], size) -> int:
    """Print the cost report of the model ``config_file`` + ``opts`` builds (CPU, no weights)."""
    cfg = get_fna_cfg(config_file, [o for o in opts if o != "--"])
    rep = config_cost(cfg, size)
    _print_report(f"{cfg.MODEL.META_ARCHITECTURE} ({config_file})", rep, size)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fna_d2.cost",
        description="Params / MAdds (conv layers; see the fna_d2.cost docstring) of the model a "
                    "config builds: backbone, FPN, head, total.")
    parser.add_argument("--config-file", default="", help="detectron2 / fna_d2 YAML config")
    parser.add_argument("--input-size", nargs=2, type=int, default=(800, 1088),
                        metavar=("H", "W"), help="input size (default: 800 1088, the paper's)")
    parser.add_argument("--paper", action="store_true",
                        help="build the paper's RetinaNets (MobileNetV2 and FNA) and compare "
                             "with its table")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    size = tuple(args.input_size)
    if not args.paper and not args.config_file:
        parser.error("--config-file is required (or use --paper)")
    try:
        return _paper(size) if args.paper else _config(args.config_file, args.opts, size)
    except FNAError as e:
        print(f"fna_d2.cost: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        return 2
