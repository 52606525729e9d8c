"""Sliding-window inference for semantic segmentation (the Cityscapes protocol, FNA spec
section 6: DeepLabv3 is evaluated with a sliding 769x769 window).

``FNASemanticSegmentor`` (registered in detectron2's ``META_ARCH_REGISTRY``) is detectron2's
``SemanticSegmentor`` with one change, in inference only, when a window size is set
(``MODEL.FNA.SEG.SLIDING_WINDOW_SIZE`` > 0):

1. the image is normalised, then padded at the bottom / right with 0 (= the pixel mean after
   normalisation, so padding adds no contrast) up to the window size in any dimension where it
   is smaller than the window;
2. windows of ``size x size`` are placed every ``stride`` pixels from the top-left corner, plus
   one window flush with the bottom / right edge, so every pixel is covered;
3. every window goes through the backbone and the head exactly like a whole image does in
   ``SemanticSegmentor`` (padded to the backbone's ``size_divisibility`` with 0, head output
   cropped back to the window);
4. the **logits** (not softmax probabilities) of overlapping windows are summed and divided by
   a per-pixel count map. Averaging logits keeps the output a tensor of logits, like the
   whole-image path, and a pixel seen by a single window gets exactly that window's logits;
5. the result is cropped to the unpadded image and resized to the requested output size
   (``"height"`` / ``"width"``) with ``sem_seg_postprocess``, as ``SemanticSegmentor`` does.

Training is unchanged; with window size 0 inference is exactly ``SemanticSegmentor``'s.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

from ..errors import ConfigError

__all__ = ["FNASemanticSegmentor", "window_starts", "default_stride", "check_sliding_window_cfg",
           "check_sliding_window_meta_arch"]


def default_stride(size: int) -> int:
    """The stride used when none is given: two thirds of the window, rounded up (513 for the
    769 window, the usual DeepLab setting on Cityscapes: one third of each window overlaps)."""
    return max(1, math.ceil(2 * size / 3))


def window_starts(length: int, size: int, stride: int) -> List[int]:
    """Start offsets of windows of ``size`` covering ``[0, length)``: ``0, stride, 2*stride,
    ...`` while the window fits, plus a last window flush with the end. ``length <= size``
    gives ``[0]`` (the caller pads to ``size``)."""
    if size <= 0 or stride <= 0 or stride > size:
        raise ValueError(f"window_starts: need 0 < stride <= size, got size {size}, "
                         f"stride {stride}")
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    starts.append(length - size)
    return starts


def check_sliding_window_cfg(cfg: CfgNode) -> None:
    """Raise :class:`~fna_d2.errors.ConfigError` naming the key and value for sliding-window
    settings that cannot work."""
    s = cfg.MODEL.FNA.SEG
    size, stride = s.SLIDING_WINDOW_SIZE, s.SLIDING_WINDOW_STRIDE
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ConfigError(f"MODEL.FNA.SEG.SLIDING_WINDOW_SIZE must be an integer >= 0 "
                          f"(0 = whole-image inference), got {size!r}")
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 0:
        raise ConfigError(f"MODEL.FNA.SEG.SLIDING_WINDOW_STRIDE must be an integer >= 0 "
                          f"(0 = two thirds of the window), got {stride!r}")
    if size > 0 and stride > size:
        raise ConfigError(f"MODEL.FNA.SEG.SLIDING_WINDOW_STRIDE = {stride} is larger than "
                          f"MODEL.FNA.SEG.SLIDING_WINDOW_SIZE = {size}: the windows would leave "
                          f"pixels uncovered; use a stride <= the window size")


def check_sliding_window_meta_arch(cfg: CfgNode) -> None:
    """Raise :class:`~fna_d2.errors.ConfigError` when a sliding window is asked for
    (``MODEL.FNA.SEG.SLIDING_WINDOW_SIZE > 0``) but ``MODEL.META_ARCHITECTURE`` would ignore
    it (anything but ``FNASemanticSegmentor`` or a subclass)."""
    if cfg.MODEL.FNA.SEG.SLIDING_WINDOW_SIZE in (0, None):
        return
    name = cfg.MODEL.META_ARCHITECTURE
    try:
        arch = META_ARCH_REGISTRY.get(name)
    except KeyError:
        return  # build_model names the unknown meta-architecture
    if not (isinstance(arch, type) and issubclass(arch, FNASemanticSegmentor)):
        raise ConfigError(
            f"MODEL.FNA.SEG.SLIDING_WINDOW_SIZE = {cfg.MODEL.FNA.SEG.SLIDING_WINDOW_SIZE} has no "
            f"effect with MODEL.META_ARCHITECTURE = {name!r}; use 'FNASemanticSegmentor' "
            f"for sliding-window inference, or set the size to 0")


@META_ARCH_REGISTRY.register()
class FNASemanticSegmentor(SemanticSegmentor):
    """``SemanticSegmentor`` with optional sliding-window inference (see the module doc)."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        window_size: int = 0,
        window_stride: int = 0,
    ):
        """
        Args:
            backbone, sem_seg_head, pixel_mean, pixel_std: as for ``SemanticSegmentor``.
            window_size: side of the square inference window; 0 = whole-image inference.
            window_stride: step between windows (<= ``window_size``); 0 = two thirds of the
                window (:func:`default_stride`).
        """
        super().__init__(backbone=backbone, sem_seg_head=sem_seg_head, pixel_mean=pixel_mean,
                         pixel_std=pixel_std)
        if window_size < 0 or window_stride < 0:
            raise ValueError(f"FNASemanticSegmentor: window_size ({window_size}) and "
                             f"window_stride ({window_stride}) must be >= 0")
        if window_size > 0 and window_stride > window_size:
            raise ValueError(f"FNASemanticSegmentor: window_stride {window_stride} > "
                             f"window_size {window_size} would leave pixels uncovered")
        self.window_size = int(window_size)
        self.window_stride = int(window_stride) if window_stride > 0 else (
            default_stride(window_size) if window_size > 0 else 0)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        check_sliding_window_cfg(cfg)  # before building anything
        args = super().from_config(cfg)
        args["window_size"] = cfg.MODEL.FNA.SEG.SLIDING_WINDOW_SIZE
        args["window_stride"] = cfg.MODEL.FNA.SEG.SLIDING_WINDOW_STRIDE
        return args

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """As ``SemanticSegmentor.forward``; in inference with a window size set, each image is
        segmented with :meth:`sliding_window_logits`."""
        if self.training or self.window_size <= 0:
            return super().forward(batched_inputs)
        results = []
        for x in batched_inputs:
            image = (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std
            h, w = image.shape[-2:]
            logits = self.sliding_window_logits(image)
            out_h, out_w = x.get("height", h), x.get("width", w)
            results.append({"sem_seg": sem_seg_postprocess(logits, (h, w), out_h, out_w)})
        return results

    def _window_logits(self, window: torch.Tensor) -> torch.Tensor:
        """Head logits (K x h x w) of one normalised C x h x w window, computed as
        ``SemanticSegmentor`` computes a whole image (padded to the size divisibility)."""
        images = ImageList.from_tensors([window], self.backbone.size_divisibility,
                                        padding_constraints=self.backbone.padding_constraints)
        logits, _ = self.sem_seg_head(self.backbone(images.tensor), None)
        h, w = window.shape[-2:]
        if logits.shape[-2] < h or logits.shape[-1] < w:
            raise RuntimeError(f"FNASemanticSegmentor: the head returned logits of size "
                               f"{tuple(logits.shape[-2:])} for a {h}x{w} window; sliding-window "
                               f"inference needs logits at the input resolution")
        return logits[0, :, :h, :w]

    def sliding_window_logits(
        self, image: torch.Tensor, return_count: bool = False
    ) -> torch.Tensor | Tuple[torch.Tensor, torch.Tensor]:
        """Logits (K x H x W) of a **normalised** C x H x W image, averaged over overlapping
        windows. ``return_count``: also return the H x W count map (windows per pixel)."""
        size, stride = self.window_size, self.window_stride
        h, w = image.shape[-2:]
        ph, pw = max(h, size), max(w, size)
        if (ph, pw) != (h, w):  # 0 = the mean after normalisation
            image = F.pad(image, (0, pw - w, 0, ph - h), value=0.0)
        total: Optional[torch.Tensor] = None
        count = torch.zeros((ph, pw), dtype=torch.float32, device=image.device)
        for y in window_starts(ph, size, stride):
            for x in window_starts(pw, size, stride):
                logits = self._window_logits(image[:, y:y + size, x:x + size]).float()
                if total is None:
                    total = logits.new_zeros((logits.shape[0], ph, pw))
                total[:, y:y + size, x:x + size] += logits
                count[y:y + size, x:x + size] += 1
        assert total is not None and bool((count > 0).all()), "sliding window left a gap"
        logits = (total / count)[:, :h, :w]
        if return_count:
            return logits, count[:h, :w]
        return logits
