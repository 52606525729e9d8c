"""``python -m fna_d2.tools visualize-json``: draw a COCO instance-results file (the
``inference/coco_instances_results.json`` a detection evaluation writes) on the images of a
registered dataset, next to its ground truth, with Detectron2's ``Visualizer``. ::

    python -m fna_d2.tools visualize-json --input coco_instances_results.json --output DIR \\
        --dataset NAME [--conf-threshold 0.5] [--import MODULE_OR_FILE.py]

One PNG per image of the dataset that the results file has detections for (named after the
image file): the detections scoring at least ``--conf-threshold`` on the left, the ground
truth on the right. Boxes only (masks in the results are not drawn). The dataset is the one
the results were computed on: its metadata maps the file's category ids back to class names.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any, Dict, List

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.visualizer import Visualizer

from ..errors import DatasetNotRegisteredError, ToolInputError

__all__ = ["read_instance_results", "visualize_json_results"]

_FIELDS = ("image_id", "category_id", "bbox", "score")


def read_instance_results(path: str) -> Dict[Any, List[dict]]:
    """COCO instance results (a JSON list of ``{image_id, category_id, bbox [x, y, w, h],
    score}``) grouped by image id; anything else is a :class:`ToolInputError` naming the
    file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ToolInputError(f"--input {path}: cannot read it ({e.strerror})") from None
    except ValueError as e:
        raise ToolInputError(f"--input {path}: invalid JSON ({e})") from None
    if not isinstance(data, list):
        raise ToolInputError(f"--input {path}: not COCO instance results (a JSON list of "
                             f"detections), got a {type(data).__name__}")
    by_image: Dict[Any, List[dict]] = defaultdict(list)
    for i, det in enumerate(data):
        missing = [k for k in _FIELDS if not isinstance(det, dict) or k not in det]
        if missing:
            raise ToolInputError(f"--input {path}: detection {i} lacks {missing} (COCO "
                                 f"instance results have {', '.join(_FIELDS)})")
        by_image[det["image_id"]].append(det)
    return dict(by_image)


def _contiguous_ids(meta: Any) -> Dict[int, int]:
    """Dataset category id -> contiguous class index (identity when the metadata has no map,
    as for datasets registered with contiguous ids)."""
    mapping = meta.get("thing_dataset_id_to_contiguous_id", None)
    if mapping:
        return dict(mapping)
    return {i: i for i in range(len(meta.get("thing_classes", [])))}


def _predictions(dets: List[dict], shape: tuple, ids: Dict[int, int], threshold: float,
                 path: str) -> Instances:
    dets = [d for d in dets if d["score"] >= threshold]
    unknown = sorted({d["category_id"] for d in dets} - set(ids))
    if unknown:
        raise ToolInputError(f"--input {path}: category id(s) {unknown} are not categories of "
                             f"the dataset (it has {sorted(ids)}); is --dataset the one the "
                             "results were computed on?")
    boxes = np.asarray([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
    boxes = BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    inst = Instances(shape)
    inst.pred_boxes = Boxes(boxes)
    inst.scores = np.asarray([d["score"] for d in dets], dtype=np.float64)
    inst.pred_classes = np.asarray([ids[d["category_id"]] for d in dets], dtype=np.int64)
    return inst


def _out_name(file_name: str, used: set) -> str:
    stem = os.path.splitext(os.path.basename(file_name))[0]
    name, k = f"{stem}.png", 1
    while name in used:  # two folders holding files of one name
        name, k = f"{stem}_{k}.png", k + 1
    used.add(name)
    return name


def visualize_json_results(results_path: str, dataset: str, output_dir: str,
                           conf_threshold: float = 0.5) -> List[str]:
    """Write one PNG per image of ``dataset`` with detections in ``results_path`` into
    ``output_dir`` (predictions above ``conf_threshold`` | ground truth); returns the paths."""
    if dataset not in DatasetCatalog.list():
        raise DatasetNotRegisteredError(
            f"--dataset {dataset!r} is not registered with Detectron2: pass the module that "
            "registers it with --import MODULE_OR_FILE.py (docs/tools.md)")
    by_image = read_instance_results(results_path)
    dicts = DatasetCatalog.get(dataset)
    meta = MetadataCatalog.get(dataset)  # after get(): COCO loaders fill in the id map then
    ids = _contiguous_ids(meta)
    chosen = [d for d in dicts if d.get("image_id") in by_image]
    if not chosen:
        raise ToolInputError(f"--input {results_path}: none of its {len(by_image)} image ids "
                             f"is an image of dataset {dataset!r} ({len(dicts)} images)")
    os.makedirs(output_dir, exist_ok=True)
    written: List[str] = []
    used: set = set()
    for d in chosen:
        img = read_image(d["file_name"], "RGB")
        pred = _predictions(by_image[d["image_id"]], img.shape[:2], ids, conf_threshold,
                            results_path)
        left = Visualizer(img, meta).draw_instance_predictions(pred).get_image()
        right = Visualizer(img, meta).draw_dataset_dict(d).get_image()
        path = os.path.join(output_dir, _out_name(d["file_name"], used))
        Image.fromarray(np.concatenate([left, right], axis=1)).save(path)
        written.append(path)
    return written
