"""Reproducible data streams for the search: the arch and the weight half of
``DATASETS.TRAIN`` are each read through a :class:`DataStream`, whose position (batches given
out) is checkpointed, so a resumed search reads exactly the batches the killed one would have.

* :class:`StreamSampler`: an infinite, per-epoch-seeded shuffle that can restart at any
  position (aspect-ratio grouping is off);
* :class:`SeededMapDataset`: each sample's augmentations are seeded from its stream position;
* :func:`mix_seed`: the seed derivation every random stream of the search uses.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from detectron2.config import CfgNode
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.build import build_batch_data_loader
from detectron2.utils import comm

from ...data.split import DataSplit, make_split
from ...utils import text_sha256
from ..data import train_mapper

__all__ = ["mix_seed", "StreamSampler", "SeededMapDataset", "DataStream",
           "build_search_streams"]

logger = logging.getLogger(__name__)


def mix_seed(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts``: the first 8 bytes (little-endian) of the sha256 of
    ``repr(parts)``, stable across runs and platforms (a resumed search depends on it)."""
    digest = bytes.fromhex(text_sha256(repr(parts)))
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class StreamSampler(Sampler):
    """Infinite shuffled stream of ``(position, index)`` over ``range(size)``.

    Epoch ``e`` is ``randperm(size)`` seeded by ``(rng_seed, e)``, so any position can be reached
    without replaying the stream. Rank ``r`` of ``w`` takes global positions ``r, r + w, ...``
    starting after ``start`` of its own samples (set before iterating, e.g. on resume)."""

    def __init__(self, size: int, rng_seed: int) -> None:
        if size <= 0:
            raise ValueError(f"StreamSampler needs a non-empty dataset, got size {size}")
        self.size, self.rng_seed = int(size), int(rng_seed)
        self.rank, self.world = comm.get_rank(), comm.get_world_size()
        self.start = 0

    def _perm(self, epoch: int) -> List[int]:
        g = torch.Generator()
        g.manual_seed(mix_seed(self.rng_seed, "epoch", epoch))
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        k, epoch, perm = self.start, -1, []
        while True:
            pos = k * self.world + self.rank
            e, j = divmod(pos, self.size)
            if e != epoch:
                epoch, perm = e, self._perm(e)
            yield pos, perm[j]
            k += 1


class SeededMapDataset(Dataset):
    """``mapper(dicts[index])`` for keys ``(position, index)``, with NumPy's global RNG (used
    by detectron2's augmentations) seeded from ``(rng_seed, position)`` during the call."""

    def __init__(self, dicts: Sequence[Dict[str, Any]], mapper, rng_seed: int) -> None:
        self.dicts, self.mapper, self.rng_seed = list(dicts), mapper, int(rng_seed)

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, key: Tuple[int, int]) -> Dict[str, Any]:
        pos, index = key
        state = np.random.get_state()
        np.random.seed(mix_seed(self.rng_seed, "sample", pos) % (2 ** 32))
        try:
            out = self.mapper(self.dicts[index])
        finally:
            np.random.set_state(state)
        if out is None:
            name = self.dicts[index].get("file_name")
            raise RuntimeError(f"the train mapper returned None for {name}")
        return out


class DataStream:
    """A batched loader over one half of the split that knows how many batches it has given
    out (its checkpointable position). Reading it leaves torch's global RNG as it was."""

    def __init__(self, name: str, dicts: Sequence[Dict[str, Any]], mapper, rng_seed: int,
                 total_batch_size: int, num_workers: int) -> None:
        self.name, self.mapper = name, mapper
        self.sampler = StreamSampler(len(dicts), mix_seed(rng_seed, name))
        self.batch_size = total_batch_size // comm.get_world_size()
        self.loader = build_batch_data_loader(
            SeededMapDataset(dicts, mapper, mix_seed(rng_seed, name, "aug")), self.sampler,
            total_batch_size, aspect_ratio_grouping=False, num_workers=num_workers)
        self.consumed = 0
        self._it: Optional[Iterator] = None

    def next(self) -> List[Dict[str, Any]]:
        if self._it is None:
            self.sampler.start = self.consumed * self.batch_size
            # torch's DataLoader draws its base seed from the global RNG when an iterator is
            # made: a resumed search makes it in another iteration than the straight run did,
            # and the draw would shift in-model randomness (the segmentation head's dropout)
            with torch.random.fork_rng(devices=[]):
                self._it = iter(self.loader)
        batch = next(self._it)
        self.consumed += 1
        return batch

    def state_dict(self) -> Dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.consumed = int(state["consumed"])
        self._it = None


def build_search_streams(cfg: CfgNode) -> Tuple[DataSplit, DataStream, DataStream]:
    """Split ``DATASETS.TRAIN`` (seeded by ``MODEL.FNA.SEARCH.SEED``) and build the weight and
    the arch stream (each half augmented only with ``SEARCH.WEIGHT_AUGMENT`` /
    ``SEARCH.ARCH_AUGMENT``, else resized only)."""
    s = cfg.MODEL.FNA.SEARCH
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    split = make_split(dicts, cfg.DATASETS.TRAIN, s.ARCH_SPLIT, s.SEED)
    logger.info(f"search split of {split.num_images} images: {len(split.arch_idx)} drive "
                f"alpha, {len(split.weight_idx)} the weights (seed {split.rng_seed})")
    kw = dict(rng_seed=s.SEED, total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
              num_workers=cfg.DATALOADER.NUM_WORKERS)
    weight = DataStream("weight", [dicts[i] for i in split.weight_idx],
                        train_mapper(cfg, augment=bool(s.WEIGHT_AUGMENT)), **kw)
    arch = DataStream("arch", [dicts[i] for i in split.arch_idx],
                      train_mapper(cfg, augment=bool(s.ARCH_AUGMENT)), **kw)
    return split, weight, arch
