"""SSD's loss (mmdetection 0.6's SSD head, as FNA's SSDLite used it): softmax cross-entropy
with hard-negative mining and smooth-L1 box regression.

Per image, every positive anchor counts and, of the negatives, only the
``min(neg_pos_ratio * num_pos, num_neg)`` with the highest cross-entropy
(:func:`hard_negative_mask`); an image without positives contributes no negatives. Both terms
are summed over the batch and divided by the batch's number of positives (at least 1).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from fvcore.nn import smooth_l1_loss

__all__ = ["hard_negative_mask", "ssd_losses"]


def hard_negative_mask(ce: torch.Tensor, labels: torch.Tensor, background: int,
                       neg_pos_ratio: float = 3) -> torch.Tensor:
    """(N, R) bool: the hard negatives kept. ``ce``: (N, R) cross-entropy per anchor;
    ``labels``: (N, R) class per anchor, ``background`` for negatives."""
    neg = labels == background
    num_pos = (~neg).sum(dim=1)
    num_neg = torch.minimum((neg_pos_ratio * num_pos).long(), neg.sum(dim=1))
    # rank the negatives by loss (positives pushed last)
    neg_loss = ce.detach().masked_fill(~neg, float("-inf"))
    order = neg_loss.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return neg & (rank < num_neg[:, None])


def ssd_losses(cls_logits: torch.Tensor, box_deltas: torch.Tensor, gt_labels: torch.Tensor,
               gt_deltas: torch.Tensor, *, neg_pos_ratio: float = 3, beta: float = 1.0
               ) -> Dict[str, torch.Tensor]:
    """``cls_logits`` (N, R, C + 1), ``box_deltas`` / ``gt_deltas`` (N, R, 4), ``gt_labels``
    (N, R) in [0, C] (C: background). Returns ``loss_cls`` and ``loss_box_reg``."""
    background = cls_logits.shape[-1] - 1
    ce = F.cross_entropy(cls_logits.flatten(0, 1), gt_labels.flatten(),
                         reduction="none").view_as(gt_labels)
    pos = gt_labels != background
    keep = pos | hard_negative_mask(ce, gt_labels, background, neg_pos_ratio)
    normalizer = max(int(pos.sum()), 1)
    loss_cls = (ce * keep).sum() / normalizer
    loss_box = smooth_l1_loss(box_deltas[pos], gt_deltas[pos], beta, reduction="sum") / normalizer
    return {"loss_cls": loss_cls, "loss_box_reg": loss_box}
