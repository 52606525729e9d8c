"""SSDLite as a detectron2 meta-architecture: :class:`FNASSDLite` in ``META_ARCH_REGISTRY``.

Images are normalised, then resized inside the model to ``MODEL.SSDLITE.INPUT_SIZE`` (320x320,
the ratio not kept, as the authors resized); the resize is skipped when the mapper already made
that size (:func:`fna_d2.modeling.ssdlite.ssdlite_train_augmentations` ends with it). Ground
truth boxes are scaled with the image; detections are scaled back to the input's
``height`` / ``width`` by detectron2's :func:`detector_postprocess`.

Training: anchors are matched by IoU (:class:`Matcher`, one threshold
``MODEL.SSDLITE.IOU_THRESHOLD``: positive at or above, negative below; every ground-truth box
also gets its best anchors), boxes coded by :class:`Box2BoxTransform` with
``MODEL.SSDLITE.BBOX_REG_WEIGHTS`` (stds 0.1, 0.1, 0.2, 0.2), losses :mod:`.loss`.
Inference: softmax scores above ``SCORE_THRESH_TEST`` per (anchor, class), per-class NMS
(:func:`batched_nms`, ``NMS_THRESH_TEST``), the ``TEST.DETECTIONS_PER_IMAGE`` best.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import batched_nms
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances, pairwise_iou

from .head import SSDLiteHead
from .loss import ssd_losses

__all__ = ["FNASSDLite"]


@META_ARCH_REGISTRY.register()
class FNASSDLite(nn.Module):
    """SSDLite over an FNA backbone (see the module doc)."""

    @configurable
    def __init__(self, *, backbone: nn.Module, head: SSDLiteHead, anchor_generator: nn.Module,
                 box2box_transform: Box2BoxTransform, anchor_matcher: Matcher, num_classes: int,
                 input_size: Sequence[int], pixel_mean: Sequence[float],
                 pixel_std: Sequence[float], neg_pos_ratio: float = 3,
                 smooth_l1_beta: float = 1.0, test_score_thresh: float = 0.02,
                 test_nms_thresh: float = 0.6, max_detections_per_image: int = 200) -> None:
        super().__init__()
        self.backbone, self.head, self.anchor_generator = backbone, head, anchor_generator
        self.box2box_transform, self.anchor_matcher = box2box_transform, anchor_matcher
        self.num_classes = int(num_classes)
        self.input_size: Tuple[int, int] = (int(input_size[0]), int(input_size[1]))
        self.neg_pos_ratio, self.smooth_l1_beta = neg_pos_ratio, smooth_l1_beta
        self.test_score_thresh, self.test_nms_thresh = test_score_thresh, test_nms_thresh
        self.max_detections_per_image = int(max_detections_per_image)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        s = cfg.MODEL.SSDLITE
        backbone = build_backbone(cfg)
        shapes = list(backbone.output_shape().values())
        anchors = build_anchor_generator(cfg, shapes)
        head = SSDLiteHead([x.channels for x in shapes], anchors.num_cell_anchors, s.NUM_CLASSES,
                           norm=s.NORM, bn_eps=s.BN_EPS, init_std=s.INIT_STD,
                           output_norm=s.HEAD_OUTPUT_NORM)
        return {"backbone": backbone, "head": head, "anchor_generator": anchors,
                "box2box_transform": Box2BoxTransform(weights=tuple(s.BBOX_REG_WEIGHTS)),
                "anchor_matcher": Matcher([s.IOU_THRESHOLD], [0, 1],
                                          allow_low_quality_matches=True),
                "num_classes": s.NUM_CLASSES, "input_size": s.INPUT_SIZE,
                "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD,
                "neg_pos_ratio": s.NEG_POS_RATIO, "smooth_l1_beta": s.SMOOTH_L1_BETA,
                "test_score_thresh": s.SCORE_THRESH_TEST, "test_nms_thresh": s.NMS_THRESH_TEST,
                "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE}

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> Tuple[ImageList, List[Tuple[float,
                                                                                            float]]]:
        """Normalised images resized to ``input_size``, and each one's (x, y) scale."""
        images, scales = [], []
        h, w = self.input_size
        for x in batched_inputs:
            img = (x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
            ih, iw = img.shape[-2:]
            if (ih, iw) != (h, w):
                img = F.interpolate(img[None], size=(h, w), mode="bilinear",
                                    align_corners=False)[0]
            images.append(img)
            scales.append((w / iw, h / ih))
        return ImageList.from_tensors(images), scales

    def forward(self, batched_inputs: List[Dict]):
        images, scales = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        maps = [features[n] for n in self.backbone.output_shape()]
        anchors = Boxes.cat(self.anchor_generator(maps))
        cls_logits, box_deltas = self.head(maps)
        if self.training:
            gts = []
            for x, (sx, sy) in zip(batched_inputs, scales):
                boxes = x["instances"].gt_boxes.clone().to(self.device)
                boxes.scale(sx, sy)
                gts.append((boxes, x["instances"].gt_classes.to(self.device)))
            gt_labels, gt_deltas = self.label_anchors(anchors, gts)
            return ssd_losses(cls_logits, box_deltas, gt_labels, gt_deltas,
                              neg_pos_ratio=self.neg_pos_ratio, beta=self.smooth_l1_beta)
        results = self.inference(anchors, cls_logits, box_deltas, images.image_sizes)
        out = []
        for r, x in zip(results, batched_inputs):  # back to the input's (original) size
            h, w = x["image"].shape[-2:]
            out.append({"instances": detector_postprocess(r, x.get("height", h),
                                                          x.get("width", w))})
        return out

    @torch.no_grad()
    def label_anchors(self, anchors: Boxes, gts: List[Tuple[Boxes, torch.Tensor]]
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N, R) class per anchor (``num_classes`` = background) and (N, R, 4) box targets."""
        labels, deltas = [], []
        for boxes, classes in gts:
            if len(boxes) == 0:
                labels.append(torch.full((len(anchors),), self.num_classes, dtype=torch.long,
                                         device=self.device))
                deltas.append(torch.zeros_like(anchors.tensor))
                continue
            matched, match_labels = self.anchor_matcher(pairwise_iou(boxes, anchors))
            cls = classes[matched].clone()
            cls[match_labels == 0] = self.num_classes
            labels.append(cls)
            deltas.append(self.box2box_transform.get_deltas(anchors.tensor,
                                                            boxes.tensor[matched]))
        return torch.stack(labels), torch.stack(deltas)

    def inference(self, anchors: Boxes, cls_logits: torch.Tensor, box_deltas: torch.Tensor,
                  image_sizes: List[Tuple[int, int]]) -> List[Instances]:
        """Per image: scores above the threshold, per-class NMS, the best detections."""
        results = []
        scores_all = F.softmax(cls_logits, dim=-1)[..., :self.num_classes]
        for scores, deltas, size in zip(scores_all, box_deltas, image_sizes):
            keep = scores > self.test_score_thresh
            anchor_idx, classes = keep.nonzero(as_tuple=True)
            boxes = Boxes(self.box2box_transform.apply_deltas(deltas[anchor_idx],
                                                              anchors.tensor[anchor_idx]))
            boxes.clip(size)
            s = scores[anchor_idx, classes]
            kept = batched_nms(boxes.tensor, s, classes, self.test_nms_thresh)
            kept = kept[:self.max_detections_per_image]
            r = Instances(size)
            r.pred_boxes, r.scores, r.pred_classes = boxes[kept], s[kept], classes[kept]
            results.append(r)
        return results
