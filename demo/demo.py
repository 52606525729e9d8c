#!/usr/bin/env python
"""Draw a trained fna_d2 model's predictions on one image and save a PNG.

Detection configs draw boxes (score >= ``--confidence-threshold``), segmentation configs the
per-pixel argmax, both with detectron2's ``Visualizer``. Examples (after the tree demo)::

    python demo/demo.py --config-file output/demo/trees/adapt/config.yaml \\
        --input fna_trees_val:0 --output trees_val0.png
    python demo/demo.py --config-file configs/demo/nuclei_adapt.yaml \\
        --input my_image.png --output out.png \\
        --opts MODEL.WEIGHTS output/demo/nuclei/adapt/model_final.pth \\
               MODEL.FNA.ARCH output/demo/nuclei/derive/arch.json

``--input`` is an image file or ``DATASET:INDEX`` (an image of a registered dataset). When
``MODEL.WEIGHTS`` is empty, ``OUTPUT_DIR/model_final.pth`` is used if it exists (the stage
config a pipeline run writes, ``OUTPUT_DIR/<stage>/config.yaml``, has the right OUTPUT_DIR).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image

import fna_d2  # noqa: F401  (registers backbones, the head and the demo datasets)
from fna_d2.config import get_fna_cfg

logger = logging.getLogger("fna_d2.demo")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="fna_d2 inference demo")
    ap.add_argument("--config-file", required=True, help="fna_d2 config (e.g. a stage config)")
    ap.add_argument("--input", required=True, help="image file, or DATASET:INDEX")
    ap.add_argument("--output", required=True, help="PNG to write")
    ap.add_argument("--confidence-threshold", type=float, default=0.3,
                    help="minimum score of drawn boxes (detection)")
    ap.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                    help="config overrides KEY VALUE ...")
    return ap.parse_args(argv)


def resolve_input(spec: str) -> str:
    """An image path: ``spec`` itself, or the ``file_name`` of ``DATASET:INDEX``."""
    if os.path.isfile(spec):
        return spec
    if ":" in spec:
        name, _, idx = spec.rpartition(":")
        if name in DatasetCatalog.list() and idx.lstrip("-").isdigit():
            return DatasetCatalog.get(name)[int(idx)]["file_name"]
    raise FileNotFoundError(f"--input {spec!r}: no such file, and not DATASET:INDEX of a "
                            "registered dataset")


def setup_cfg(config_file: str, opts: List[str]):
    """Frozen config for inference on this machine (CPU unless CUDA is available)."""
    cfg = get_fna_cfg(config_file, opts)
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    for node in (cfg.MODEL.FNA, cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.FPN):
        if node.NORM == "SyncBN":  # SyncBN == BN in single-process eval
            node.NORM = "BN"
    if not cfg.MODEL.WEIGHTS:
        final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
        if os.path.isfile(final):
            cfg.MODEL.WEIGHTS = final
        else:
            logger.warning("MODEL.WEIGHTS is empty and %s does not exist: drawing the "
                           "predictions of an untrained head", final)
    cfg.freeze()
    return cfg


def draw(cfg, image_bgr: np.ndarray, threshold: float) -> np.ndarray:
    """Run the model on a BGR image and return the visualisation (RGB uint8)."""
    predictor = DefaultPredictor(cfg)
    outputs = predictor(image_bgr)
    name = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused"
    scale = max(1.0, 512.0 / min(image_bgr.shape[:2]))  # small demo crops: draw larger
    vis = Visualizer(image_bgr[:, :, ::-1], MetadataCatalog.get(name), scale=scale,
                     instance_mode=ColorMode.IMAGE)
    if "sem_seg" in outputs:
        labels = outputs["sem_seg"].argmax(dim=0).to("cpu")
        out = vis.draw_sem_seg(labels, alpha=0.5)
    else:
        inst = outputs["instances"].to("cpu")
        inst = inst[inst.scores >= threshold]
        logger.info("%d detections with score >= %.2f", len(inst), threshold)
        out = vis.draw_instance_predictions(inst)
    return out.get_image()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logger(name="fna_d2")
    cfg = setup_cfg(args.config_file, list(args.opts))
    path = resolve_input(args.input)
    image = read_image(path, format="BGR")
    vis = draw(cfg, image, args.confidence_threshold)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)) or ".", exist_ok=True)
    Image.fromarray(vis).save(args.output)
    print(f"wrote {args.output} ({path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
