"""What the trainers read: dataset checks and train-time mapping.

* :func:`check_datasets`: a clear :class:`~fna_d2.errors.DatasetNotRegisteredError` when
  ``DATASETS.TRAIN`` / ``DATASETS.TEST`` names an unregistered dataset (with close names and
  how to register one), and a :class:`~fna_d2.errors.ConfigError` when the head's
  ``NUM_CLASSES`` is not the dataset's number of categories (before any training, instead of
  at the evaluation after it); demo datasets (``fna_d2.data.demo.DEMO_DATASETS``) are built on
  first use.
* :func:`train_augmentations` / :func:`train_mapper`: detectron2's resize / crop / flip, with
  DeepLab's category-area constrained crop for segmentation.
* :func:`load_sem_seg_gt`: a NumPy-2-safe label loader for ``SemSegEvaluator``.
"""
from __future__ import annotations

import difflib
import json
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

import detectron2.data.transforms as T
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.utils.file_io import PathManager

from ..data import demo
from ..errors import ConfigError, DatasetNotRegisteredError
from ..modeling.ssdlite import ssdlite_train_mapper
from ..tasks import is_semantic, is_ssdlite

__all__ = ["check_datasets", "num_classes_key", "dataset_classes", "load_sem_seg_gt",
           "train_augmentations", "train_mapper"]

#: the largest COCO json file :func:`dataset_classes` reads to count its categories
MAX_PEEK_BYTES = 64 * 2 ** 20


def check_datasets(cfg: CfgNode, train: bool = True, test: bool = True) -> None:
    """Build demo datasets that are missing and raise :class:`DatasetNotRegisteredError`
    (listing a few registered names and how to register) for unknown names, and
    :class:`ConfigError` for a ``NUM_CLASSES`` (:func:`num_classes_key`) other than the
    dataset's number of categories (:func:`dataset_classes`)."""
    keys = ([("DATASETS.TRAIN", cfg.DATASETS.TRAIN)] if train else []) + \
           ([("DATASETS.TEST", cfg.DATASETS.TEST)] if test else [])
    registered = set(DatasetCatalog.list())
    for key, names in keys:
        for name in names:
            if name not in registered:
                raise DatasetNotRegisteredError(_unregistered_message(key, name, registered))
            _check_num_classes(cfg, key, name)
            if name in demo.DEMO_DATASETS:
                demo.ensure_demo_data(name)


def num_classes_key(cfg: CfgNode) -> Optional[Tuple[str, int, str]]:
    """``(config key, its value, metadata field)`` of the head's class count:
    ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` / ``stuff_classes`` for segmentation,
    ``MODEL.RETINANET.NUM_CLASSES`` (RetinaNet) or ``MODEL.ROI_HEADS.NUM_CLASSES``
    (GeneralizedRCNN) / ``thing_classes`` for detection; None for other meta-architectures."""
    if is_semantic(cfg):
        return "MODEL.SEM_SEG_HEAD.NUM_CLASSES", cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, "stuff_classes"
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        return "MODEL.RETINANET.NUM_CLASSES", cfg.MODEL.RETINANET.NUM_CLASSES, "thing_classes"
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        return "MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES, "thing_classes"
    return None


def dataset_classes(name: str, field: str) -> Optional[List[str]]:
    """The dataset's categories: ``MetadataCatalog.get(name).<field>`` (``thing_classes`` /
    ``stuff_classes``), else, for COCO-format data registered with its ``json_file`` in the
    metadata (``register_coco_instances``, which sets ``thing_classes`` only when the data
    is loaded), the names in that file's ``categories`` if it is at most
    :data:`MAX_PEEK_BYTES` (a bigger one is left to the loader, not read twice). None when
    neither says."""
    meta = MetadataCatalog.get(name)
    classes = meta.get(field, None)
    if classes is not None:
        return list(classes)
    json_file = meta.get("json_file", None)
    if field != "thing_classes" or not json_file or not os.path.isfile(json_file) \
            or os.path.getsize(json_file) > MAX_PEEK_BYTES:
        return None
    try:
        with PathManager.open(json_file, "r") as f:
            cats = json.load(f).get("categories")
    except (OSError, ValueError, AttributeError):  # unreadable: loading the data will say
        return None
    return [c.get("name", "") for c in cats] if isinstance(cats, list) else None


def _check_num_classes(cfg: CfgNode, key: str, name: str) -> None:
    what = num_classes_key(cfg)
    if what is None:
        return
    cfg_key, value, field = what
    classes = dataset_classes(name, field)
    if classes is not None and len(classes) != value:
        shown = ", ".join(repr(c) for c in classes[:8]) + (", ..." if len(classes) > 8 else "")
        raise ConfigError(f"{cfg_key}={value} but dataset {name!r} ({key}) has "
                          f"{len(classes)} categories ({field}: {shown}): set {cfg_key} "
                          f"{len(classes)}")


def _unregistered_message(key: str, name: str, registered: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, sorted(registered), n=5, cutoff=0.4)
    fna = sorted(n for n in registered if n.startswith("fna_"))
    shown = list(dict.fromkeys(close + fna))[:8] or sorted(registered)[:8]
    return (f"{key}: dataset {name!r} is not registered with Detectron2. Registered datasets "
            f"include {', '.join(repr(n) for n in shown)} ({len(registered)} in total; "
            f"DatasetCatalog.list() shows all). Register yours before building the trainer, "
            f"e.g. detectron2.data.datasets.register_coco_instances(name, {{}}, json_file, "
            f"image_root) for COCO-format data or DatasetCatalog.register + MetadataCatalog."
            f"get(name).set(evaluator_type=...) otherwise, in a module that train_net.py, "
            f"python -m fna_d2.pipeline and python -m fna_d2.tools import with --import "
            f"MODULE_OR_FILE.py (docs/tools.md); Detectron2's builtin names (coco_*, "
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
    """The train :class:`DatasetMapper` with :func:`train_augmentations`; for SSDLite the
    authors' pipeline (:func:`fna_d2.modeling.ssdlite.ssdlite_train_mapper`: photometric
    distortion, expand, min-IoU crop, square resize, flip; ``augment=False``: the resize)."""
    if is_ssdlite(cfg):
        return ssdlite_train_mapper(cfg, augment)
    return DatasetMapper(cfg, is_train=True, augmentations=train_augmentations(cfg, augment))
