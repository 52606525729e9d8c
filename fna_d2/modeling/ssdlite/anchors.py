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
level, ``ASPECT_RATIOS`` = the ratios per level, ``MODEL.SSDLITE.ANCHOR_STRIDES``: the centre
spacing per level, or empty for ``input size / map size`` (:func:`ssd_anchor_strides`, which
also refuses strides whose centres do not span ``MODEL.SSDLITE.INPUT_SIZE``).
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

__all__ = ["SSDAnchorGenerator", "ssd_anchor_strides", "ssd_cell_anchors"]


def ssd_cell_anchors(min_size: float, max_size: float, ratios: Sequence[float]) -> torch.Tensor:
    """The (A, 4) anchors of one location centred at (0, 0), in the order of the module doc."""
    sides = [(min_size, min_size), (math.sqrt(min_size * max_size),) * 2]
    for r in ratios:
        for ar in (1.0 / r, float(r)):  # ar = h / w at area min_size^2
            sides.append((min_size / math.sqrt(ar), min_size * math.sqrt(ar)))
    return torch.tensor([[-w / 2, -h / 2, w / 2, h / 2] for w, h in sides], dtype=torch.float32)


def ssd_anchor_strides(strides: Sequence[float], input_size: Sequence[int],
                       map_strides: Sequence[int]) -> List[float]:
    """The anchor strides for maps of nominal strides ``map_strides`` on an ``input_size``
    (H, W) input: ``strides`` as given, checked, or for an empty ``strides`` (square inputs
    only) the input size divided by each map's size (``ceil(size / map_stride)``, as the
    backbone's padded stride-2 convs make them: 16, 32, 64, 106.7, 160, 320 at 320x320, where
    the authors rounded 106.7 to 107).

    A given stride ``s`` of a level with ``m`` locations along a side of ``size`` pixels must
    place them over it, ``|s * m - size| <= s / 2``, along both sides; so strides kept from
    another input size are refused (e.g. 320's strides at 640 leave a sixth of the image
    without anchors at level 3)."""
    h, w = (int(v) for v in input_size)
    if len(strides) == 0:
        if h != w:
            raise ConfigError(f"MODEL.SSDLITE.ANCHOR_STRIDES [] needs a square "
                              f"MODEL.SSDLITE.INPUT_SIZE (one stride per level), got "
                              f"{list(input_size)}: give the strides")
        return [h / math.ceil(h / ms) for ms in map_strides]
    if len(strides) != len(map_strides):
        raise ConfigError(f"MODEL.SSDLITE.ANCHOR_STRIDES has {len(strides)} entries but the "
                          f"SSDLite backbone has {len(map_strides)} feature maps")
    for size in sorted({h, w}):
        maps = [math.ceil(size / ms) for ms in map_strides]
        for k, (s, m) in enumerate(zip(strides, maps)):
            if abs(float(s) * m - size) > float(s) / 2:
                suggest = ", ".join(f"{size / n:.4g}" for n in maps)
                raise ConfigError(
                    f"MODEL.SSDLITE.ANCHOR_STRIDES[{k}] = {s}: level {k} has {m} locations "
                    f"along a {size}-px side of MODEL.SSDLITE.INPUT_SIZE {h}x{w}, so its anchors "
                    f"would span {float(s) * m:g} px, not {size}; use [{suggest}] (input size / "
                    f"map size) or [] to compute them")
    return [float(s) for s in strides]


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
                           ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", a.ASPECT_RATIOS)):
            if len(value) != num:
                raise ConfigError(f"{key} has {len(value)} entries but the SSDLite backbone has "
                                  f"{num} feature maps")
        strides = ssd_anchor_strides(cfg.MODEL.SSDLITE.ANCHOR_STRIDES,
                                     cfg.MODEL.SSDLITE.INPUT_SIZE,
                                     [x.stride for x in input_shape])
        return {"sizes": a.SIZES, "aspect_ratios": a.ASPECT_RATIOS, "strides": strides}

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
