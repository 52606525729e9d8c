"""What the trainers read: dataset checks and train-time mapping.

* :func:`check_datasets`: a clear :class:`~fna_d2.errors.DatasetNotRegisteredError` when
  ``DATASETS.TRAIN`` / ``DATASETS.TEST`` names an unregistered dataset (with close names and
  how to register one); demo datasets (``fna_d2.data.demo.DEMO_DATASETS``) are built on first
  use.
* :func:`train_augmentations` / :func:`train_mapper`: detectron2's resize / crop / flip, with
  DeepLab's category-area constrained crop for segmentation.
* :func:`load_sem_seg_gt`: a NumPy-2-safe label loader for ``SemSegEvaluator``.
"""
from __future__ import annotations

import difflib
from typing import List, Sequence

import numpy as np
from PIL import Image

import detectron2.data.transforms as T
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.utils.file_io import PathManager

from ..data import demo
from ..errors import DatasetNotRegisteredError
from ..tasks import is_semantic

__all__ = ["check_datasets", "load_sem_seg_gt", "train_augmentations", "train_mapper"]


def check_datasets(cfg: CfgNode, train: bool = True, test: bool = True) -> None:
    """Build demo datasets that are missing and raise :class:`DatasetNotRegisteredError`
    (listing a few registered names and how to register) for unknown names."""
    keys = ([("DATASETS.TRAIN", cfg.DATASETS.TRAIN)] if train else []) + \
           ([("DATASETS.TEST", cfg.DATASETS.TEST)] if test else [])
    registered = set(DatasetCatalog.list())
    for key, names in keys:
        for name in names:
            if name not in registered:
                raise DatasetNotRegisteredError(_unregistered_message(key, name, registered))
            if name in demo.DEMO_DATASETS:
                demo.ensure_demo_data(name)


def _unregistered_message(key: str, name: str, registered: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, sorted(registered), n=5, cutoff=0.4)
    fna = sorted(n for n in registered if n.startswith("fna_"))
    shown = list(dict.fromkeys(close + fna))[:8] or sorted(registered)[:8]
    return (f"{key}: dataset {name!r} is not registered with Detectron2. Registered datasets "
            f"include {', '.join(repr(n) for n in shown)} ({len(registered)} in total; "
            f"DatasetCatalog.list() shows all). Register yours before building the trainer, "
            f"e.g. detectron2.data.datasets.register_coco_instances(name, {{}}, json_file, "
            f"image_root) for COCO-format data or DatasetCatalog.register + MetadataCatalog."
            f"get(name).set(evaluator_type=...) otherwise; Detectron2's builtin names (coco_*, "
            f"cityscapes_*) read their files under $DETECTRON2_DATASETS.")


def load_sem_seg_gt(filename: str, dtype=int) -> np.ndarray:
    """Read a label image as an integer array (``np.asarray``: works with NumPy 1 and 2)."""
    with PathManager.open(filename, "rb") as f:
        return np.asarray(Image.open(f), dtype=dtype)


def train_augmentations(cfg: CfgNode, augment: bool = True) -> List[T.Augmentation]:
    """Train-time augmentations. ``augment``: random resize (``INPUT.MIN_SIZE_TRAIN``), crop
    (``INPUT.CROP``; category-area constrained for segmentation, DeepLab-style) and flip;
    otherwise the nominal (test-size) resize, plus the crop for segmentation (it bounds
    memory), and no flip."""
    semantic = is_semantic(cfg)
    if augment:
        augs: List[T.Augmentation] = [T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    else:
        augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    if cfg.INPUT.CROP.ENABLED:
        if semantic:
            augs.append(T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE))
        elif augment:  # detectron2's order for detection: crop the original image, then resize
            augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if augment and cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                 vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    return augs


def train_mapper(cfg: CfgNode, augment: bool = True) -> DatasetMapper:
    """The train :class:`DatasetMapper` with :func:`train_augmentations`."""
    return DatasetMapper(cfg, is_train=True, augmentations=train_augmentations(cfg, augment))
