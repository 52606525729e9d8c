"""Build ``fna_trees``: a small real detection set (NEON aerial tree crowns) in COCO format.

Source: the four annotated RGB scenes that PyPI ``deepforest==2.1.0`` ships in
``deepforest/data/`` (NEON imagery, CC0; Pascal-VOC XML boxes drawn by the DeepForest
authors). The package is located with ``importlib.util.find_spec`` and never imported.

Rules (see datasets/README.md):

* Tiling: each scene is cut on a non-overlapping grid of ``tile`` = 400 px (per axis
  ``min(400, side // 2)``, so the two 400 x 400 scenes become 2 x 2 tiles of 200 px and every
  scene can give tiles to both splits). A remainder strip narrower than half a tile is merged
  into the last tile of its row/column, a wider one becomes its own tile, so tiles are disjoint
  and cover the scene.
* Boxes: VOC ``xmin, ymin, xmax, ymax`` are used as continuous pixel coordinates, clipped to
  the scene, then to each tile they overlap. A clipped piece is kept only if it keeps at least
  30 % of the box's area and is at least 4 px wide and high. All labels (``Tree``, and
  ``Alive``/``Dead`` in SOAP_061) map to the single class ``tree``.
* Tiles without any box are dropped.
* Split: within each scene the remaining tiles are numbered row-major; every 4th one
  (index % 4 == 3) goes to ``val``, the rest to ``train``.

Output (``$DETECTRON2_DATASETS/fna_trees``, default ``./datasets/fna_trees``)::

    images/<scene>_r<row>_c<col>.png
    annotations/instances_train.json, annotations/instances_val.json
    stats.json                     counts and rules; written last

The directory is built in a temporary sibling and renamed into place, so a crash never leaves
a half-built set under the final name.

:mod:`fna_d2.data.demo` calls :func:`prepare_tree_demo` on first use; :func:`main` is the
command line of ``python datasets/prepare_tree_demo.py [--root DIR] [--src DIR] [--force]``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..utils import file_sha256, write_json
from .builder import atomic_build, datasets_root, run_prepare_cli

NAME = "fna_trees"
BUILD_VERSION = 1
PIP_INSTALL = "pip install --no-deps deepforest==2.1.0"
SCENES: Tuple[str, ...] = (
    "OSBS_029",
    "SOAP_061",
    "2019_YELL_2_541000_4977000_image_crop",
    "2019_YELL_2_528000_4978000_image_crop2",
)
TILE = 400
VAL_EVERY = 4
MIN_AREA_FRAC = 0.3
MIN_SIDE = 4.0
CATEGORIES = [{"id": 1, "name": "tree", "supercategory": "plant"}]
LICENCE = "NEON aerial imagery: CC0 1.0; annotations from the deepforest package (MIT)"

__all__ = [
    "NAME",
    "SCENES",
    "find_deepforest_data",
    "read_voc",
    "tile_spans",
    "clip_boxes_to_tile",
    "build_tree_demo",
    "prepare_tree_demo",
    "BUILD_VERSION",
    "main",
]


def find_deepforest_data() -> str:
    """Folder ``deepforest/data`` of the installed package (without importing deepforest)."""
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The tree-crown demo data come from the PyPI package 'deepforest', which is not "
            f"installed. Install it (without its heavy dependencies) with:\n    {PIP_INSTALL}"
        )
    for loc in spec.submodule_search_locations:
        d = os.path.join(loc, "data")
        if all(os.path.isfile(os.path.join(d, s + ".xml")) for s in SCENES):
            return d
    raise RuntimeError(
        f"deepforest is installed at {list(spec.submodule_search_locations)} but its data/ "
        f"folder lacks the scene annotations {list(SCENES)}; reinstall it with:\n"
        f"    pip install --force-reinstall --no-deps deepforest==2.1.0"
    )


def read_voc(xml_path: str) -> Tuple[str, int, int, np.ndarray]:
    """Parse a Pascal-VOC XML: ``(image filename, width, height, boxes[N, 4] xyxy float)``."""
    root = ET.parse(xml_path).getroot()
    width = int(float(root.findtext("size/width", "0")))
    height = int(float(root.findtext("size/height", "0")))
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return root.findtext("filename", ""), width, height, arr


def tile_spans(length: int, tile: int = TILE) -> List[Tuple[int, int]]:
    """Disjoint ``[start, end)`` spans covering ``length`` (rule in the module docstring)."""
    t = max(1, min(tile, length // 2))
    n_full = length // t
    spans = [(i * t, (i + 1) * t) for i in range(n_full)]
    rem = length - n_full * t
    if rem:
        if rem * 2 < t and spans:
            spans[-1] = (spans[-1][0], length)
        else:
            spans.append((n_full * t, length))
    return spans


def clip_boxes_to_tile(
    boxes: np.ndarray,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    min_area_frac: float = MIN_AREA_FRAC,
    min_side: float = MIN_SIDE,
) -> np.ndarray:
    """Boxes (xyxy, scene coords) clipped to a tile, in tile coords; tiny remnants dropped."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4)
    c = boxes.copy()
    c[:, [0, 2]] = c[:, [0, 2]].clip(x0, x1)
    c[:, [1, 3]] = c[:, [1, 3]].clip(y0, y1)
    w, h = c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]
    area0 = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = (w >= min_side) & (h >= min_side) & (w * h >= min_area_frac * np.maximum(area0, 1e-9))
    c = c[keep]
    c[:, [0, 2]] -= x0
    c[:, [1, 3]] -= y0
    return c


def _scene_image_path(src: str, scene: str, voc_filename: str) -> str:
    for cand in (scene + ".png", voc_filename, scene + ".jpg", scene + ".tif"):
        p = os.path.join(src, cand)
        if cand and os.path.isfile(p):
            return p
    raise RuntimeError(f"no image file for scene {scene} in {src}")


def build_tree_demo(out_dir: str, src_dir: Optional[str] = None, tile: int = TILE) -> Dict[str, Any]:
    """Write tiles, COCO jsons and ``stats.json`` into ``out_dir`` (non-atomic; see
    :func:`prepare_tree_demo`). Returns the stats dict."""
    src = src_dir or find_deepforest_data()
    img_dir = os.path.join(out_dir, "images")
    ann_dir = os.path.join(out_dir, "annotations")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)

    coco: Dict[str, Dict[str, list]] = {s: {"images": [], "annotations": []} for s in ("train", "val")}
    stats: Dict[str, Any] = {"scenes": {}, "splits": {}}
    for scene in SCENES:
        xml_path = os.path.join(src, scene + ".xml")
        if not os.path.isfile(xml_path):
            raise RuntimeError(f"missing annotation file {xml_path}")
        voc_name, vw, vh, boxes = read_voc(xml_path)
        img_path = _scene_image_path(src, scene, voc_name)
        with Image.open(img_path) as im:
            img = np.asarray(im.convert("RGB"))
        H, W = img.shape[:2]
        if (vw, vh) != (W, H):
            raise RuntimeError(f"{xml_path}: size {vw}x{vh} disagrees with {img_path} ({W}x{H})")
        boxes = boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, W)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, H)
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]

        kept: List[Tuple[int, int, int, int, int, int, np.ndarray]] = []
        ys, xs = tile_spans(H, tile), tile_spans(W, tile)
        for r, (ty0, ty1) in enumerate(ys):
            for c, (tx0, tx1) in enumerate(xs):
                tb = clip_boxes_to_tile(boxes, tx0, ty0, tx1, ty1)
                if len(tb):
                    kept.append((r, c, tx0, ty0, tx1, ty1, tb))
        sc = {"size": [W, H], "boxes": int(len(boxes)), "grid": [len(ys), len(xs)],
              "tiles_total": len(ys) * len(xs), "tiles_kept": len(kept),
              "train": {"tiles": 0, "boxes": 0}, "val": {"tiles": 0, "boxes": 0},
              "image_sha256": file_sha256(img_path)}
        for k, (r, c, tx0, ty0, tx1, ty1, tb) in enumerate(kept):
            split = "val" if k % VAL_EVERY == VAL_EVERY - 1 else "train"
            fname = f"{scene}_r{r}_c{c}.png"
            Image.fromarray(np.ascontiguousarray(img[ty0:ty1, tx0:tx1])).save(os.path.join(img_dir, fname))
            d = coco[split]
            image_id = len(d["images"]) + 1
            d["images"].append({
                "id": image_id, "file_name": fname, "width": tx1 - tx0, "height": ty1 - ty0,
                "scene": scene, "tile_origin": [tx0, ty0], "license": 1,
            })
            for b in tb:
                x, y, w, h = (round(float(v), 2) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1]))
                d["annotations"].append({
                    "id": len(d["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                    "bbox": [x, y, w, h], "area": round(w * h, 2), "iscrowd": 0,
                })
            sc[split]["tiles"] += 1
            sc[split]["boxes"] += int(len(tb))
        stats["scenes"][scene] = sc

    for split, d in coco.items():
        d.update({
            "info": {"description": f"{NAME} {split}: NEON tree crowns from deepforest 2.1.0, {tile} px tiles",
                     "version": str(BUILD_VERSION)},
            "licenses": [{"id": 1, "name": "CC0 1.0 (NEON imagery)", "url": ""}],
            "categories": CATEGORIES,
        })
        with open(os.path.join(ann_dir, f"instances_{split}.json"), "w") as f:
            json.dump(d, f)
        stats["splits"][split] = {"images": len(d["images"]), "boxes": len(d["annotations"])}
    stats.update({
        "name": NAME, "build_version": BUILD_VERSION, "tile": tile, "val_every": VAL_EVERY,
        "min_area_frac": MIN_AREA_FRAC, "min_side": MIN_SIDE,
        "source": {"package": "deepforest", "version": "2.1.0", "pip": PIP_INSTALL},
        "licence": LICENCE,
    })
    # stats.json is written last: its presence with the right build_version marks a full build.
    write_json(os.path.join(out_dir, "stats.json"), stats, indent=1)
    return stats


def prepare_tree_demo(root: Optional[str] = None, force: bool = False, src_dir: Optional[str] = None) -> str:
    """Build ``<root>/fna_trees`` if it is missing (or ``force``); return its path."""
    final = os.path.join(datasets_root(root), NAME)
    return atomic_build(final, lambda d: build_tree_demo(d, src_dir), BUILD_VERSION, force)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    return run_prepare_cli(
        "Build the fna_trees demo detection set (COCO format).",
        "folder with the scenes (default: deepforest/data)", prepare_tree_demo,
        lambda split, s, st: f"  {split}: {s['images']} tiles, {s['boxes']} boxes", argv)
