"""What an exported model computes: one image tensor in, plain tensors out, through
detectron2's :class:`~detectron2.export.TracingAdapter` (the tracing path of detectron2's
``tools/deploy/export_model.py``).

The graph holds the whole model: pixel normalisation and padding to the backbone's size
divisibility, the network, and the post-processing of the meta-architecture, with outputs
in the coordinates of the input tensor:

- detection (RetinaNet): ``boxes`` (N x 4, XYXY), ``scores`` (N), ``classes`` (N, int64):
  the detections after score threshold, NMS and the per-image cap;
- semantic segmentation (DeepLabv3): ``sem_seg`` (K x H x W per-class logits; argmax over K
  is the label map).
"""
from __future__ import annotations

from typing import Tuple

import torch
from detectron2.config import CfgNode
from detectron2.export import TracingAdapter
from torch import nn

from ..tasks import is_semantic

__all__ = ["OUTPUT_NAMES", "output_names", "export_adapter"]

OUTPUT_NAMES = {"detection": ("boxes", "scores", "classes"), "segmentation": ("sem_seg",)}


def output_names(cfg: CfgNode) -> Tuple[str, ...]:
    return OUTPUT_NAMES["segmentation" if is_semantic(cfg) else "detection"]


def _detect(model: nn.Module, image: torch.Tensor):
    inst = model([{"image": image}])[0]["instances"]
    return inst.pred_boxes.tensor, inst.scores, inst.pred_classes


def _segment(model: nn.Module, image: torch.Tensor):
    return (model([{"image": image}])[0]["sem_seg"],)


def export_adapter(cfg: CfgNode, model: nn.Module, image: torch.Tensor) -> TracingAdapter:
    """``model`` as a module ``image -> tuple of tensors`` (:func:`output_names` order), in eval
    mode (the adapter is a new module: exporters that restore its mode must find it in eval)."""
    fn = _segment if is_semantic(cfg) else _detect
    return TracingAdapter(model.eval(), image, inference_func=fn).eval()
