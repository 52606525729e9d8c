"""Synthetic COCO-size detection data for ``bench/gpu_check.py``: JPEGs of the commonest COCO
image shapes (640x480, 640x427, 480x640, 500x375) with random boxes of 80 classes (about as many
per image as COCO's average of 7), registered with detectron2 as ``fna_gpu_check_synth``. The
configs' own mapper resizes them (shortest edge 800, longest <= 1333), so the networks see the
paper's 1333x800-class inputs. The pixels are noise: compute time does not depend on them.
``--quick``: 96x72-class images (see :data:`QUICK_SIZE`)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

__all__ = ["DATASET", "COCO_SHAPES", "QUICK_SIZE", "image_shapes", "register_synthetic"]

DATASET = "fna_gpu_check_synth"
#: (width, height) of the commonest COCO train2017 image shapes
COCO_SHAPES: Tuple[Tuple[int, int], ...] = ((640, 480), (640, 427), (480, 640), (500, 375))
#: shortest edge of the --quick inputs (images and INPUT.MIN_SIZE_TRAIN). Above 64 so that,
#: padded to the FPN's multiple of 32, every stride-2 convolution (P6 and P7 included) reads an
#: input at least 2 pixels wide: torch 2.14.1's CPU (oneDNN) bfloat16 convolution returns NaN
#: weight gradients for a stride-2 conv whose input is 1 pixel wide, which a 64-pixel portrait
#: image gives P7 (docs/gpu.md).
QUICK_SIZE = 72
NUM_CLASSES = 80
BOXES_PER_IMAGE = 7


def image_shapes(quick: bool) -> List[Tuple[int, int]]:
    """(width, height) of the synthetic images, in turn (COCO's commonest; --quick: scaled so
    the shortest edge is QUICK_SIZE)."""
    if not quick:
        return list(COCO_SHAPES)
    return [(max(QUICK_SIZE, w * QUICK_SIZE // min(w, h)), max(QUICK_SIZE, h * QUICK_SIZE
                                                              // min(w, h)))
            for w, h in COCO_SHAPES]


def _record(i: int, path: str, w: int, h: int, rng: np.random.Generator) -> Dict[str, Any]:
    anns = []
    for _ in range(BOXES_PER_IMAGE):
        bw, bh = rng.uniform(0.05, 0.6) * w, rng.uniform(0.05, 0.6) * h
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        anns.append({"bbox": [float(x), float(y), float(bw), float(bh)],
                     "bbox_mode": BoxMode.XYWH_ABS, "category_id": int(rng.integers(NUM_CLASSES)),
                     "iscrowd": 0})
    return {"file_name": path, "image_id": i, "width": w, "height": h, "annotations": anns}


def register_synthetic(root: str, n: int, quick: bool = False, seed: int = 0
                       ) -> Tuple[str, Dict[str, Any]]:
    """Write ``n`` images under ``root`` (kept when already there) and register them;
    returns (dataset name, description for the result file)."""
    rng = np.random.default_rng(seed)
    shapes = image_shapes(quick)
    dicts = []
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        w, h = shapes[i % len(shapes)]
        path = os.path.join(root, f"synth_{i:04d}_{w}x{h}.jpg")
        if not os.path.exists(path):
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            tmp = path + ".tmp.jpg"
            Image.fromarray(pixels).save(tmp, quality=90)
            os.replace(tmp, path)
        dicts.append(_record(i, path, w, h, rng))
    if DATASET in DatasetCatalog.list():
        DatasetCatalog.remove(DATASET)
        MetadataCatalog.remove(DATASET)
    DatasetCatalog.register(DATASET, lambda: [dict(d) for d in dicts])
    MetadataCatalog.get(DATASET).set(thing_classes=[f"class{k}" for k in range(NUM_CLASSES)])
    return DATASET, {"dataset": DATASET, "images": n, "shapes_wh": [list(s) for s in shapes],
                     "boxes_per_image": BOXES_PER_IMAGE, "classes": NUM_CLASSES,
                     "pixels": "uniform noise (JPEG, quality 90)"}
