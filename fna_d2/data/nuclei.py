"""Build ``fna_nuclei``: a small real 2-class semantic segmentation set (Detectron2 sem-seg).

Source: ``stardist/data/images/img2d.tif`` + ``mask2d.tif`` from PyPI ``stardist==0.9.2``
(a 512 x 512 fluorescence image of stained nuclei with an instance label mask; stardist cites
it as from the 2018 Kaggle Data Science Bowl). Read with tifffile; stardist is located with
``importlib.util.find_spec`` and never imported.

Rules (see datasets/README.md):

* Labels: 0 = background, 1 = nucleus (instance label > 0); stored as uint8 PNG.
* Images: the 16-bit image is normalised once, per image, by its 1st / 99.8th percentiles
  (clipped to [0, 1], x255) and stored as 3-channel 8-bit PNG (grey replicated).
* Split by region, so train and val never share a pixel: train crops come from the left 3/4
  (columns 0-383), val crops from the right 1/4 (columns 384-511). Crops are 128 x 128; train
  crops use stride 64 (overlapping, 5 x 7 = 35), val crops stride 128 (disjoint, 1 x 4 = 4).
  Nuclei that straddle column 384 are cut by the split line.

Output (``$DETECTRON2_DATASETS/fna_nuclei``, default ``./datasets/fna_nuclei``)::

    images/{train,val}/nuclei_y<y>_x<x>.png     labels/{train,val}/nuclei_y<y>_x<x>.png
    stats.json                                  counts and rules; written last

Load with ``detectron2.data.datasets.load_sem_seg(labels/<split>, images/<split>,
gt_ext="png", image_ext="png")``. Built atomically (temp dir + rename).

:mod:`fna_d2.data.demo` calls :func:`prepare_nuclei_demo` on first use; :func:`main` is the
command line of ``python datasets/prepare_nuclei_demo.py [--root DIR] [--src DIR] [--force]``.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..utils import write_json
from .builder import atomic_build, datasets_root, run_prepare_cli

NAME = "fna_nuclei"
BUILD_VERSION = 1
PIP_INSTALL = "pip install --no-deps stardist==0.9.2"
CROP = 128
TRAIN_STRIDE = 64
VAL_STRIDE = 128
TRAIN_FRACTION = 0.75
PCT_LOW, PCT_HIGH = 1.0, 99.8
CLASSES = ["background", "nucleus"]
LICENCE = (
    "stardist package: BSD-3-Clause (its LICENSE.txt); stardist documents the image as from "
    "the 2018 Kaggle Data Science Bowl (Caicedo et al., Nature Methods 2019)"
)

__all__ = [
    "NAME",
    "find_stardist_images",
    "load_nuclei_source",
    "normalize_to_uint8",
    "crop_origins",
    "build_nuclei_demo",
    "prepare_nuclei_demo",
    "BUILD_VERSION",
    "main",
]


def find_stardist_images() -> str:
    """Folder ``stardist/data/images`` of the installed package (without importing stardist)."""
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The nuclei demo data come from the PyPI package 'stardist', which is not installed. "
            f"Install it (without its TensorFlow dependencies) with:\n    {PIP_INSTALL}"
        )
    for loc in spec.submodule_search_locations:
        d = os.path.join(loc, "data", "images")
        if os.path.isfile(os.path.join(d, "img2d.tif")) and os.path.isfile(os.path.join(d, "mask2d.tif")):
            return d
    raise RuntimeError(
        f"stardist is installed at {list(spec.submodule_search_locations)} but "
        f"data/images/img2d.tif or mask2d.tif is missing; reinstall it with:\n"
        f"    pip install --force-reinstall --no-deps stardist==0.9.2"
    )


def load_nuclei_source(src_dir: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(image HxW, instance labels HxW)`` read with tifffile."""
    try:
        import tifffile
    except ImportError as e:
        raise RuntimeError("reading the nuclei tif files needs tifffile: pip install tifffile") from e
    d = src_dir or find_stardist_images()
    img = np.asarray(tifffile.imread(os.path.join(d, "img2d.tif")))
    mask = np.asarray(tifffile.imread(os.path.join(d, "mask2d.tif")))
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3].mean(axis=-1)
    if img.ndim != 2 or mask.shape != img.shape:
        raise RuntimeError(f"unexpected shapes in {d}: image {img.shape}, mask {mask.shape}")
    return img, mask


def normalize_to_uint8(img: np.ndarray, low: float = PCT_LOW, high: float = PCT_HIGH) -> np.ndarray:
    """Percentile normalisation to uint8 ``HxWx3``."""
    lo, hi = np.percentile(img.astype(np.float64), [low, high])
    x = (img.astype(np.float64) - lo) / max(hi - lo, 1e-9)
    g = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


def crop_origins(x0: int, x1: int, y0: int, y1: int, crop: int, stride: int) -> List[Tuple[int, int]]:
    """``(y, x)`` origins of ``crop``-sized windows inside ``[x0, x1) x [y0, y1)``."""
    ys = list(range(y0, y1 - crop + 1, stride))
    xs = list(range(x0, x1 - crop + 1, stride))
    return [(y, x) for y in ys for x in xs]


def build_nuclei_demo(out_dir: str, src_dir: Optional[str] = None) -> Dict[str, Any]:
    """Write crops, labels and ``stats.json`` into ``out_dir``; returns the stats dict."""
    img, inst = load_nuclei_source(src_dir)
    H, W = img.shape
    rgb = normalize_to_uint8(img)
    sem = (inst > 0).astype(np.uint8)
    split_x = int(round(W * TRAIN_FRACTION))
    regions = {
        "train": (0, split_x, TRAIN_STRIDE),
        "val": (split_x, W, VAL_STRIDE),
    }
    stats: Dict[str, Any] = {"splits": {}}
    for split, (x0, x1, stride) in regions.items():
        idir = os.path.join(out_dir, "images", split)
        ldir = os.path.join(out_dir, "labels", split)
        os.makedirs(idir, exist_ok=True)
        os.makedirs(ldir, exist_ok=True)
        origins = crop_origins(x0, x1, 0, H, CROP, stride)
        fg = 0
        for y, x in origins:
            name = f"nuclei_y{y:03d}_x{x:03d}.png"
            Image.fromarray(np.ascontiguousarray(rgb[y : y + CROP, x : x + CROP])).save(os.path.join(idir, name))
            lab = np.ascontiguousarray(sem[y : y + CROP, x : x + CROP])
            Image.fromarray(lab).save(os.path.join(ldir, name))
            fg += int(lab.sum())
        n_inst = len(np.unique(inst[:, x0:x1])) - (1 if (inst[:, x0:x1] == 0).any() else 0)
        stats["splits"][split] = {
            "crops": len(origins),
            "region_x": [x0, x1],
            "stride": stride,
            "foreground_fraction": round(fg / max(1, len(origins) * CROP * CROP), 4),
            "nuclei_in_region": int(n_inst),
        }
    stats.update({
        "name": NAME, "build_version": BUILD_VERSION, "image_size": [W, H], "crop": CROP,
        "classes": CLASSES, "ignore_label": 255, "percentiles": [PCT_LOW, PCT_HIGH],
        "nuclei_total": int(len(np.unique(inst)) - 1),
        "source": {"package": "stardist", "version": "0.9.2", "pip": PIP_INSTALL,
                   "files": ["stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif"]},
        "licence": LICENCE,
    })
    write_json(os.path.join(out_dir, "stats.json"), stats, indent=1)
    return stats


def prepare_nuclei_demo(root: Optional[str] = None, force: bool = False, src_dir: Optional[str] = None) -> str:
    """Build ``<root>/fna_nuclei`` if it is missing (or ``force``); return its path."""
    final = os.path.join(datasets_root(root), NAME)
    return atomic_build(final, lambda d: build_nuclei_demo(d, src_dir), BUILD_VERSION, force)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    return run_prepare_cli(
        "Build the fna_nuclei demo semantic segmentation set.",
        "folder with img2d.tif and mask2d.tif (default: stardist's)", prepare_nuclei_demo,
        lambda split, s, st: (f"  {split}: {s['crops']} crops of {st['crop']}x{st['crop']}, "
                              f"foreground {s['foreground_fraction']:.1%}"), argv)
