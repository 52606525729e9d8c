"""Register the FNA demo datasets (real data shipped by PyPI packages) with Detectron2.

Names registered at import (cheap: nothing is built or read here):

* ``fna_trees_train`` / ``fna_trees_val``: NEON tree crowns (deepforest 2.1.0), COCO format,
  one class ``tree``; metadata ``evaluator_type="coco"``, ``json_file``, ``image_root``.
* ``fna_nuclei_train`` / ``fna_nuclei_val``: stardist fluorescence nuclei, 2-class semantic
  segmentation; metadata ``evaluator_type="sem_seg"``, ``stuff_classes``, ``ignore_label=255``,
  ``image_root``, ``sem_seg_root``.

Files live under ``$DETECTRON2_DATASETS`` (default ``./datasets``, resolved when registering).
The data are built on first use: ``DatasetCatalog.get(name)`` builds if missing, and
``ensure_demo_data(name)`` lets a trainer build before constructing an evaluator
(``COCOEvaluator`` reads ``json_file`` in its constructor). Building is idempotent and atomic
(temp dir + rename). The builders are :mod:`fna_d2.data.trees` and :mod:`fna_d2.data.nuclei`
(part of the package, so an installed fna_d2 builds its demo data without a source checkout;
``datasets/prepare_*_demo.py`` are their command lines).
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, load_sem_seg

from .builder import datasets_root
from .nuclei import prepare_nuclei_demo
from .trees import prepare_tree_demo

__all__ = [
    "DEMO_DATASETS",
    "TREE_DATASETS",
    "NUCLEI_DATASETS",
    "demo_datasets_root",
    "ensure_demo_data",
    "register_demo_datasets",
]

TREE_DATASETS = ("fna_trees_train", "fna_trees_val")
NUCLEI_DATASETS = ("fna_nuclei_train", "fna_nuclei_val")
DEMO_DATASETS = TREE_DATASETS + NUCLEI_DATASETS
#: demo family -> its builder ``prepare(root) -> dataset directory``
_BUILDERS: Dict[str, Callable[..., str]] = {"fna_trees": prepare_tree_demo,
                                            "fna_nuclei": prepare_nuclei_demo}
_registered_root: Optional[str] = None

#: ``root`` or ``$DETECTRON2_DATASETS`` (default ``./datasets``) as an absolute path
demo_datasets_root = datasets_root


def _family(name: str) -> str:
    for fam in _BUILDERS:
        if name == fam or name.startswith(fam + "_"):
            return fam
    raise KeyError(f"{name!r} is not a demo dataset; known: {list(DEMO_DATASETS)}")


def ensure_demo_data(name: str, root: Optional[str] = None) -> str:
    """Build the data behind ``name`` (``fna_trees[_train|_val]``, ``fna_nuclei[...]``) if
    missing; return the dataset directory. ``root`` defaults to the registered root."""
    fam = _family(name)
    base = root or _registered_root or demo_datasets_root()
    return _BUILDERS[fam](base)


def _load_trees(name: str, split: str, root: str) -> List[Dict[str, Any]]:
    d = ensure_demo_data(name, root)
    return load_coco_json(os.path.join(d, "annotations", f"instances_{split}.json"), os.path.join(d, "images"), name)


def _load_nuclei(name: str, split: str, root: str) -> List[Dict[str, Any]]:
    d = ensure_demo_data(name, root)
    recs = load_sem_seg(
        os.path.join(d, "labels", split), os.path.join(d, "images", split), gt_ext="png", image_ext="png"
    )
    with open(os.path.join(d, "stats.json")) as f:
        crop = int(json.load(f)["crop"])
    for r in recs:
        r["height"] = r["width"] = crop
    return recs


def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_demo_datasets(root: Optional[str] = None) -> str:
    """(Re)register the four demo datasets with files under ``root``; returns the root used."""
    global _registered_root
    base = demo_datasets_root(root)
    trees, nuclei = os.path.join(base, "fna_trees"), os.path.join(base, "fna_nuclei")
    for name in TREE_DATASETS:
        split = name.rsplit("_", 1)[1]
        _unregister(name)
        DatasetCatalog.register(name, lambda n=name, s=split, b=base: _load_trees(n, s, b))
        MetadataCatalog.get(name).set(
            json_file=os.path.join(trees, "annotations", f"instances_{split}.json"),
            image_root=os.path.join(trees, "images"),
            evaluator_type="coco",
            thing_classes=["tree"],
            thing_dataset_id_to_contiguous_id={1: 0},
        )
    for name in NUCLEI_DATASETS:
        split = name.rsplit("_", 1)[1]
        _unregister(name)
        DatasetCatalog.register(name, lambda n=name, s=split, b=base: _load_nuclei(n, s, b))
        MetadataCatalog.get(name).set(
            image_root=os.path.join(nuclei, "images", split),
            sem_seg_root=os.path.join(nuclei, "labels", split),
            evaluator_type="sem_seg",
            stuff_classes=["background", "nucleus"],
            ignore_label=255,
        )
    _registered_root = base
    return base


register_demo_datasets()
