"""The search's arch/weight split of the training set (FNA sec. 5: one part drives alpha, the
other the weights; the validation set is never used).

The split is a pure function of ``(n, arch_fraction, rng_seed)`` (:func:`split_indices`, NumPy's
legacy ``RandomState``, whose streams are frozen across NumPy versions), and is recorded in
``OUTPUT_DIR/search_split.json`` together with a hash of the image ids so that a resumed search
can check that it sees the same data in the same order. Works with the dicts of any registered
Detectron2 dataset (``image_id`` is used when present, else the file name).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..errors import SplitError  # noqa: F401  (defined there; re-exported)
from ..utils import write_json

__all__ = ["SplitError", "DataSplit", "split_indices", "image_ids_hash", "make_split",
           "save_split", "SPLIT_FORMAT"]

SPLIT_FORMAT = "fna_d2.search_split"


def split_indices(n: int, arch_fraction: float, rng_seed: int) -> Tuple[List[int], List[int]]:
    """Split ``range(n)`` into ``(arch_idx, weight_idx)``, both sorted and disjoint.

    ``round(n * arch_fraction)`` indices, drawn by a permutation seeded with ``rng_seed``, go to the
    arch half. Raises :class:`SplitError` if either half would be empty."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise SplitError(f"number of images must be a non-negative integer, got {n!r}")
    if not 0.0 < float(arch_fraction) < 1.0:
        raise SplitError(f"MODEL.FNA.SEARCH.ARCH_SPLIT must be in (0, 1), got {arch_fraction!r}")
    n_arch = int(round(n * float(arch_fraction)))
    if n_arch == 0 or n_arch == n:
        empty = "arch" if n_arch == 0 else "weight"
        raise SplitError(
            f"MODEL.FNA.SEARCH.ARCH_SPLIT={arch_fraction} of {n} training images leaves the "
            f"{empty} half empty; use a fraction closer to 0.5 or more training images")
    perm = np.random.RandomState(int(rng_seed) % (2 ** 32)).permutation(n)
    return sorted(int(i) for i in perm[:n_arch]), sorted(int(i) for i in perm[n_arch:])


def _image_key(d: Dict[str, Any]) -> str:
    if "image_id" in d:
        return str(d["image_id"])
    return os.path.basename(str(d.get("file_name", "")))


def image_ids_hash(dataset_dicts: Sequence[Dict[str, Any]]) -> str:
    """sha256 of the ordered image ids (``image_id``, else the file's base name)."""
    h = hashlib.sha256()
    for d in dataset_dicts:
        h.update(_image_key(d).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _indices_hash(idx: Sequence[int]) -> str:
    return hashlib.sha256(",".join(map(str, idx)).encode("ascii")).hexdigest()


@dataclass(frozen=True)
class DataSplit:
    """A recorded split: which images of ``dataset_names`` (concatenated) drive alpha."""

    dataset_names: Tuple[str, ...]
    num_images: int
    arch_fraction: float
    rng_seed: int
    image_ids_sha256: str
    arch_idx: Tuple[int, ...]
    weight_idx: Tuple[int, ...]

    @property
    def fingerprint(self) -> str:
        """Identifies data + split: equal fingerprints mean identical halves."""
        return hashlib.sha256(
            f"{self.image_ids_sha256}|{_indices_hash(self.arch_idx)}".encode()).hexdigest()

    def to_dict(self) -> Dict[str, Any]:
        """The recorded form (counts and hashes; indices are recomputable from the seed)."""
        return {
            "format": SPLIT_FORMAT,
            "version": 1,
            "dataset_names": list(self.dataset_names),
            "num_images": self.num_images,
            "num_arch": len(self.arch_idx),
            "num_weight": len(self.weight_idx),
            "arch_fraction": self.arch_fraction,
            "seed": self.rng_seed,
            "image_ids_sha256": self.image_ids_sha256,
            "arch_indices_sha256": _indices_hash(self.arch_idx),
            "fingerprint": self.fingerprint,
        }


def make_split(dataset_dicts: Sequence[Dict[str, Any]], dataset_names: Sequence[str],
               arch_fraction: float, rng_seed: int) -> DataSplit:
    """Split the (concatenated) dicts of ``dataset_names``; see :func:`split_indices`."""
    arch_idx, weight_idx = split_indices(len(dataset_dicts), arch_fraction, rng_seed)
    return DataSplit(tuple(dataset_names), len(dataset_dicts), float(arch_fraction), int(rng_seed),
                     image_ids_hash(dataset_dicts), tuple(arch_idx), tuple(weight_idx))


def save_split(split: DataSplit, path: str) -> str:
    """Write ``split.to_dict()`` as JSON atomically (temp file + rename); returns ``path``."""
    return write_json(path, split.to_dict(), indent=2)
