"""SSD's prior boxes as mmdetection 0.6's SSD head makes them: :class:`SSDAnchorGenerator`,
registered in detectron2's ``ANCHOR_GENERATOR_REGISTRY``.

Level ``k`` has a minimum and a maximum size and ratios ``r`` (``[2]`` or ``[2, 3]``); its
anchors per location, in order: the square of side ``min``, the square of side
``sqrt(min * max)``, then for each ``r`` the boxes of aspect ratio (h / w) ``1 / r`` and ``r``
with area ``min^2``: 4 anchors for ``[2]``, 6 for ``[2, 3]``. Location ``(i, j)`` of a level
with stride ``s`` is centred at ``(j * s + (s - 1) / 2, i * s + (s - 1) / 2)``, as
mmdetection's ``ctr``. Boxes use detectron2's continuous convention (``x2 - x1 = w``; mmdetection
0.6 used ``w - 1`` and rounded the corners: docs/departures.md). Anchors are ordered location
major, anchor minor, as detectron2's heads expect.

Config: ``MODEL.ANCHOR_GENERATOR.NAME: "SSDAnchorGenerator"``, ``SIZES`` = ``[min, max]`` per
level, ``ASPECT_RATIOS`` = the ratios per level, ``MODEL.SSDLITE.ANCHOR_STRIDES``.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY
from detectron2.structures import Boxes

from ...errors import ConfigError

__all__ = ["SSDAnchorGenerator", "ssd_cell_anchors"]


def ssd_cell_anchors(min_size: float, max_size: float, ratios: Sequence[float]) -> torch.Tensor:
    """The (A, 4) anchors of one location centred at (0, 0), in the order of the module doc."""
    sides = [(min_size, min_size), (math.sqrt(min_size * max_size),) * 2]
    for r in ratios:
        for ar in (1.0 / r, float(r)):  # ar = h / w at area min_size^2
            sides.append((min_size / math.sqrt(ar), min_size * math.sqrt(ar)))
    return torch.tensor([[-w / 2, -h / 2, w / 2, h / 2] for w, h in sides], dtype=torch.float32)


@ANCHOR_GENERATOR_REGISTRY.register()
class SSDAnchorGenerator(nn.Module):
    """SSD prior boxes (see the module doc); ``forward(features)`` -> one :class:`Boxes` per
    level, each ``H * W * A`` boxes."""

    box_dim: int = 4

    @configurable
    def __init__(self, *, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]],
                 strides: Sequence[float]) -> None:
        super().__init__()
        if not (len(sizes) == len(aspect_ratios) == len(strides)):
            raise ConfigError(f"SSD anchors: MODEL.ANCHOR_GENERATOR.SIZES ({len(sizes)} levels), "
                              f"ASPECT_RATIOS ({len(aspect_ratios)}) and MODEL.SSDLITE."
                              f"ANCHOR_STRIDES ({len(strides)}) must have one entry per level")
        for k, sz in enumerate(sizes):
            if len(sz) != 2 or not 0 < sz[0] <= sz[1]:
                raise ConfigError(f"MODEL.ANCHOR_GENERATOR.SIZES[{k}] must be [min, max] with "
                                  f"0 < min <= max for SSD anchors, got {list(sz)}")
        self.strides = [float(s) for s in strides]
        cells = [ssd_cell_anchors(float(a), float(b), [float(r) for r in rs])
                 for (a, b), rs in zip(sizes, aspect_ratios)]
        for i, c in enumerate(cells):
            self.register_buffer(f"cell_anchors_{i}", c, persistent=False)
        self._num_levels = len(cells)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        a = cfg.MODEL.ANCHOR_GENERATOR
        num = len(input_shape)
        for key, value in (("MODEL.ANCHOR_GENERATOR.SIZES", a.SIZES),
                           ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", a.ASPECT_RATIOS),
                           ("MODEL.SSDLITE.ANCHOR_STRIDES", cfg.MODEL.SSDLITE.ANCHOR_STRIDES)):
            if len(value) != num:
                raise ConfigError(f"{key} has {len(value)} entries but the SSDLite backbone has "
                                  f"{num} feature maps")
        return {"sizes": a.SIZES, "aspect_ratios": a.ASPECT_RATIOS,
                "strides": cfg.MODEL.SSDLITE.ANCHOR_STRIDES}

    def cell(self, level: int) -> torch.Tensor:
        return getattr(self, f"cell_anchors_{level}")

    @property
    def num_anchors(self) -> List[int]:
        """Anchors per location, per level."""
        return [len(self.cell(k)) for k in range(self._num_levels)]

    @property
    def num_cell_anchors(self) -> List[int]:  # detectron2's name
        return self.num_anchors

    def grid_anchors(self, level: int, height: int, width: int) -> torch.Tensor:
        """(height * width * A, 4) anchors of ``level`` for a ``height x width`` map."""
        cell, s = self.cell(level), self.strides[level]
        ys = torch.arange(height, dtype=torch.float32, device=cell.device) * s + (s - 1) / 2
        xs = torch.arange(width, dtype=torch.float32, device=cell.device) * s + (s - 1) / 2
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
        return (shifts + cell.view(1, -1, 4)).reshape(-1, 4)

    def forward(self, features: List[torch.Tensor]) -> List[Boxes]:
        if len(features) != self._num_levels:
            raise ValueError(f"{len(features)} feature maps for {self._num_levels} anchor levels")
        return [Boxes(self.grid_anchors(k, f.shape[-2], f.shape[-1]))
                for k, f in enumerate(features)]
