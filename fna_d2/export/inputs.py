"""The sample image an export is traced with and checked on: a file, or the first image of
the config's first test set, resized as at test time (``INPUT.MIN_SIZE_TEST`` /
``MAX_SIZE_TEST``, as detectron2's ``DefaultPredictor`` does) into the ``3 x H x W`` float
tensor (0-255, ``INPUT.FORMAT`` channel order) the exported model takes."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils
from detectron2.data import transforms as T

from ..errors import ExportError

__all__ = ["sample_image_path", "load_sample"]


def sample_image_path(cfg: CfgNode, path: Optional[str] = None) -> str:
    """``path``, or the first image of ``DATASETS.TEST[0]``."""
    if path:
        if not os.path.isfile(path):
            raise ExportError(f"--sample-image {path}: file not found")
        return path
    if not cfg.DATASETS.TEST:
        raise ExportError("DATASETS.TEST is empty: give an image with --sample-image")
    name = cfg.DATASETS.TEST[0]
    if name not in DatasetCatalog.list():
        raise ExportError(f"DATASETS.TEST[0] = {name!r} is not a registered dataset; give an "
                          "image with --sample-image (or register the dataset)")
    records = DatasetCatalog.get(name)
    if not records:
        raise ExportError(f"DATASETS.TEST[0] = {name!r} is empty; give --sample-image")
    return records[0]["file_name"]


def load_sample(cfg: CfgNode, path: str) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(the ``3 x H x W`` float tensor of the image at ``path`` resized for testing, its
    original ``(height, width)``)."""
    try:
        img = detection_utils.read_image(path, format=cfg.INPUT.FORMAT)
    except (OSError, ValueError) as e:
        raise ExportError(f"sample image {path}: cannot be read ({e})") from None
    h, w = img.shape[:2]
    size = cfg.INPUT.MIN_SIZE_TEST
    aug = T.ResizeShortestEdge([size, size], cfg.INPUT.MAX_SIZE_TEST)
    img = aug.get_transform(img).apply_image(img)
    return torch.as_tensor(img.astype("float32").transpose(2, 0, 1).copy()), (h, w)
