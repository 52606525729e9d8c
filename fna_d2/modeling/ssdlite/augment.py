"""SSD's training augmentations as detectron2 :class:`~detectron2.data.transforms.Augmentation`
s, in the authors' order (mmdetection 0.6's SSD pipeline), and the mapper that feeds them boxes:

1. :class:`PhotometricDistortion`: each with probability 1/2, brightness ``+ U(-32, 32)``,
   contrast ``x U(0.5, 1.5)`` (before or after the next two, at random), saturation
   ``x U(0.5, 1.5)`` and hue ``+ U(-18, 18)`` degrees in HSV; float output, not clipped;
2. :class:`Expand`: with probability 1/2, the image placed at a random offset on a canvas
   ``U(1, 4)`` times its size filled with the pixel mean;
3. :class:`MinIoURandomCrop`: a mode from (none, 0.1, 0.3, 0.5, 0.7, 0.9, 0); for a min IoU,
   up to 50 tries of a crop of ``U(0.3, 1)`` times each side with aspect ``h / w`` in
   [0.5, 2] whose IoU with every box is at least the min IoU and which holds some box
   centre; boxes whose centre falls outside are dropped (:class:`SSDDatasetMapper`);
4. ``Resize(INPUT_SIZE)`` (ratio not kept) and a horizontal flip with probability 1/2.

:func:`ssdlite_train_augmentations` builds the list from a config, :func:`ssdlite_train_mapper`
the :class:`SSDDatasetMapper` (a trainer uses it for ``FNASSDLite`` models) and
:func:`ssdlite_test_mapper` the test mapper (the resize alone).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch

import detectron2.data.transforms as T
from detectron2.data import DatasetMapper
from detectron2.structures import Boxes, BoxMode, pairwise_iou

__all__ = ["PhotometricDistortion", "ExpandTransform", "Expand", "MinIoURandomCrop",
           "SSDDatasetMapper", "ssdlite_train_augmentations", "ssdlite_train_mapper",
           "ssdlite_test_mapper"]


def _photometric(img: np.ndarray, brightness: Optional[float], contrast: Optional[float],
                 contrast_first: bool, saturation: Optional[float], hue: Optional[float],
                 rgb: bool) -> np.ndarray:
    img = img.astype(np.float32)
    if brightness is not None:
        img = img + brightness
    if contrast is not None and contrast_first:
        img = img * contrast
    if saturation is not None or hue is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV if rgb else cv2.COLOR_BGR2HSV)
        if saturation is not None:
            hsv[..., 1] *= saturation
        if hue is not None:
            hsv[..., 0] = np.mod(hsv[..., 0] + hue, 360.0)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB if rgb else cv2.COLOR_HSV2BGR)
    if contrast is not None and not contrast_first:
        img = img * contrast
    return img


class PhotometricDistortion(T.Augmentation):
    """Random brightness, contrast, saturation and hue (see the module doc)."""

    def __init__(self, brightness_delta: float = 32, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta: float = 18,
                 image_format: str = "RGB") -> None:
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        def maybe(lo, hi):
            return float(np.random.uniform(lo, hi)) if np.random.randint(2) else None

        b = maybe(-self.brightness_delta, self.brightness_delta)
        contrast_first = bool(np.random.randint(2))
        c = maybe(*self.contrast_range)
        s = maybe(*self.saturation_range)
        h = maybe(-self.hue_delta, self.hue_delta)
        rgb = self.image_format != "BGR"
        return T.ColorTransform(lambda img: _photometric(img, b, c, contrast_first, s, h, rgb))


class ExpandTransform(T.Transform):
    """Place the image at (``left``, ``top``) on a ``height x width`` canvas of ``fill``."""

    def __init__(self, left: int, top: int, height: int, width: int, fill: Sequence[float]):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        out = np.empty((self.height, self.width) + img.shape[2:], dtype=np.float32)
        out[...] = np.asarray(self.fill, dtype=np.float32)
        out[self.top:self.top + img.shape[0], self.left:self.left + img.shape[1]] = img
        return out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords + np.asarray([self.left, self.top], dtype=coords.dtype)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        out = np.zeros((self.height, self.width), dtype=segmentation.dtype)
        out[self.top:self.top + segmentation.shape[0],
            self.left:self.left + segmentation.shape[1]] = segmentation
        return out

    def inverse(self) -> T.Transform:
        raise NotImplementedError("Expand has no inverse")


class Expand(T.Augmentation):
    """With probability ``prob``, :class:`ExpandTransform` to ``U(*ratio_range)`` times the
    size at a uniformly random offset, filled with ``fill`` (the pixel mean)."""

    def __init__(self, fill: Sequence[float], ratio_range=(1.0, 4.0), prob: float = 0.5):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        if np.random.uniform() >= self.prob:
            return T.NoOpTransform()
        h, w = image.shape[:2]
        ratio = np.random.uniform(*self.ratio_range)
        nh, nw = int(h * ratio), int(w * ratio)
        left = int(np.random.uniform(0, nw - w))
        top = int(np.random.uniform(0, nh - h))
        return ExpandTransform(left, top, nh, nw, list(self.fill))


def _iou(patch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one XYXY box with each of ``boxes`` (detectron2's ``pairwise_iou``)."""
    return pairwise_iou(Boxes(torch.as_tensor(patch[None], dtype=torch.float64)),
                        Boxes(torch.as_tensor(boxes, dtype=torch.float64)))[0].numpy()


class MinIoURandomCrop(T.Augmentation):
    """SSD's crop (see the module doc); needs ``boxes`` (XYXY, absolute) in the input."""

    def __init__(self, min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                 min_crop_size: float = 0.3, max_tries: int = 50) -> None:
        super().__init__()
        self._init(locals())

    def get_transform(self, image, boxes):
        h, w = image.shape[:2]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        modes = (1,) + tuple(self.min_ious) + (0,)
        for _ in range(1000):  # the authors loop until a mode succeeds
            mode = modes[np.random.randint(len(modes))]
            if mode == 1 or len(boxes) == 0:
                return T.NoOpTransform()
            crop = self.sample_crop(h, w, boxes, mode)
            if crop is not None:
                return crop
        return T.NoOpTransform()

    def sample_crop(self, h: int, w: int, boxes: np.ndarray, min_iou: float
                    ) -> Optional[T.CropTransform]:
        """Up to ``max_tries`` random crops of an ``h x w`` image: the first whose IoU with every
        box is >= ``min_iou`` and which holds a box centre, or None."""
        for _ in range(self.max_tries):
            nw = np.random.uniform(self.min_crop_size * w, w)
            nh = np.random.uniform(self.min_crop_size * h, h)
            if not 0.5 <= nh / nw <= 2:
                continue
            left, top = np.random.uniform(w - nw), np.random.uniform(h - nh)
            patch = np.array([int(left), int(top), int(left + nw), int(top + nh)], float)
            if _iou(patch, boxes).min() < min_iou:
                continue
            c = (boxes[:, :2] + boxes[:, 2:]) / 2
            inside = ((c[:, 0] > patch[0]) & (c[:, 1] > patch[1]) & (c[:, 0] < patch[2])
                      & (c[:, 1] < patch[3]))
            if not inside.any():
                continue
            x0, y0, x1, y1 = (int(v) for v in patch)
            return T.CropTransform(x0, y0, x1 - x0, y1 - y0)
        return None


class SSDDatasetMapper(DatasetMapper):
    """A :class:`DatasetMapper` whose augmentations also see the boxes (``AugInput.boxes``,
    for :class:`MinIoURandomCrop`), and which drops the boxes whose centre leaves the image
    (the authors' crop rule) before detectron2 clips the rest."""

    def __call__(self, dataset_dict):
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                 for a in dataset_dict.get("annotations", []) if a.get("iscrowd", 0) == 0]
        augs = self.augmentations
        self.augmentations = _WithBoxes(augs, np.asarray(boxes, np.float64).reshape(-1, 4))
        try:
            return super().__call__(dataset_dict)
        finally:
            self.augmentations = augs

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        h, w = image_shape
        kept = []
        for a in dataset_dict["annotations"]:
            b = BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
            c = transforms.apply_coords(np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]]))[0]
            if 0 < c[0] < w and 0 < c[1] < h:
                kept.append(a)
        dataset_dict["annotations"] = kept
        super()._transform_annotations(dataset_dict, transforms, image_shape)


class _WithBoxes:
    """Calls an AugmentationList with the image's boxes put into its AugInput."""

    def __init__(self, augs, boxes: np.ndarray) -> None:
        self.augs, self.boxes = augs, boxes

    def __call__(self, aug_input: T.AugInput):
        aug_input.boxes = self.boxes
        return self.augs(aug_input)


def ssdlite_train_augmentations(cfg) -> List[T.Augmentation]:
    """The list of the module doc, at ``MODEL.SSDLITE.INPUT_SIZE``, expanding with
    ``MODEL.PIXEL_MEAN`` (in ``INPUT.FORMAT`` channel order); ``INPUT.SSD.EXPAND`` /
    ``INPUT.SSD.MIN_IOU_CROP`` False leave out steps 2 / 3."""
    augs: List[T.Augmentation] = [PhotometricDistortion(image_format=cfg.INPUT.FORMAT)]
    if cfg.INPUT.SSD.EXPAND:
        augs.append(Expand(list(cfg.MODEL.PIXEL_MEAN)))
    if cfg.INPUT.SSD.MIN_IOU_CROP:
        augs.append(MinIoURandomCrop())
    return augs + [_resize(cfg), T.RandomFlip(horizontal=True)]


def _resize(cfg) -> T.Augmentation:
    h, w = cfg.MODEL.SSDLITE.INPUT_SIZE
    return T.Resize((int(h), int(w)))


def ssdlite_train_mapper(cfg, augment: bool = True) -> DatasetMapper:
    """:class:`SSDDatasetMapper` with :func:`ssdlite_train_augmentations` (``augment``) or the
    resize alone."""
    augs = ssdlite_train_augmentations(cfg) if augment else [_resize(cfg)]
    return SSDDatasetMapper(cfg, is_train=True, augmentations=augs)


def ssdlite_test_mapper(cfg) -> DatasetMapper:
    """The test :class:`DatasetMapper`: one resize to ``MODEL.SSDLITE.INPUT_SIZE`` (ratio not
    kept), as the authors tested; detections are scaled back to the image's size."""
    return DatasetMapper(cfg, is_train=False, augmentations=[_resize(cfg)])
