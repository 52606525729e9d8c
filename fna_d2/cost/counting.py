"""Params and MAdds of built models, counted with forward hooks.

Counting convention (the one that reproduces the FNA paper's RetinaNet table, "MAdds at
800x1088, conv layers only"):

* **MAdds** = sum over every ``nn.Conv2d`` call of ``kh*kw*cin/groups*cout*Hout*Wout``, plus
  ``Hout*Wout*cout`` additions for convs that have a bias (the RetinaNet head, FPN and P6/P7
  convs; fna_d2's backbone convs have none), plus ``in*out`` (+ ``out`` for the bias) per row
  of every ``nn.Linear``. BatchNorm, activations, residual adds, upsampling and pooling are not
  counted. A shared head (RetinaNet) is counted once per pyramid level. Batch size 1; the
  input is zero-padded to the backbone's size divisibility as detectron2 does.
* **Params** = every parameter of the model (conv weights and biases, BN/GN affine; the
  super network's alphas), no buffers. MobileNetV2's 320->1280 conv is counted only where
  the model has it (SSDLite's backbone; the RetinaNet and DeepLab backbones do not).

SSDLite models are split into ``backbone`` (the FNA network with its 1280 conv), ``extras`` and
``head``; MobileNetV2 SSDLite (80 classes, 320x320) measures 4.323M / 0.808B, the paper's
Table 3 rounds it to 4.3M / 0.8B.

With this convention, RetinaNet (FPN 256, P6 from C5, 4x256 convs per branch, 9 anchors, 80
classes) at 800x1088 measures 11.488M / 133.053B on MobileNetV2 and 11.732M / 133.030B on FNA's
architecture; the paper reports 11.49M / 133.05B and 11.73M / 133.03B. Leaving out the bias
additions gives 132.99B / 132.97B (0.05% lower).
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from detectron2.config import CfgNode
from detectron2.modeling import build_model
from detectron2.modeling.backbone import FPN

from .. import modeling  # noqa: F401  (registers the FNA backbones for build_model)
from .analytic import Cost

__all__ = ["model_cost", "detectron2_model_cost", "config_cost", "cost_columns"]


def _count_hooks(module: nn.Module, counts: Dict[str, int]) -> List:
    def hook(name: str):
        def fn(mod, inputs, out):
            if isinstance(mod, nn.Conv2d):
                spatial = out.shape[-2] * out.shape[-1] * (out.shape[0] if out.dim() == 4 else 1)
                n = mod.weight.numel() * spatial
                if mod.bias is not None:
                    n += mod.out_channels * spatial
            else:  # nn.Linear
                rows = out.numel() // mod.out_features
                n = rows * mod.in_features * mod.out_features
                if mod.bias is not None:
                    n += rows * mod.out_features
            counts[name] = counts.get(name, 0) + int(n)
        return fn

    return [m.register_forward_hook(hook(n)) for n, m in module.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))]


def model_cost(model: nn.Module, inputs=None, input_size: Optional[Tuple[int, int]] = None,
               run: Optional[Callable[[nn.Module], object]] = None, per_module: bool = False):
    """Hook-based Params / MAdds of ``model`` (convention in the module docstring).

    Runs ``run(model)`` if given, else ``model(inputs)``, else ``model(zeros(1, 3, H, W))``.
    Returns a :class:`Cost`, or ``(Cost, {module name: MAdds})`` with ``per_module``."""
    counts: Dict[str, int] = {}
    handles = _count_hooks(model, counts)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            if run is not None:
                run(model)
            else:
                if inputs is None:
                    if input_size is None:
                        raise ValueError("model_cost needs inputs, input_size or run")
                    p = next(model.parameters(), None)
                    inputs = torch.zeros(1, 3, *input_size,
                                         device=p.device if p is not None else "cpu")
                model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    total = Cost(sum(p.numel() for p in model.parameters()), sum(counts.values()))
    return (total, counts) if per_module else total


def _groups(model: nn.Module) -> Dict[str, str]:
    """Prefix of each report group: backbone (the bottom-up net), fpn, head."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, FPN):
        return {"backbone": "backbone.bottom_up.", "fpn": "backbone."}
    if hasattr(backbone, "bottom_up") and hasattr(backbone, "extras"):  # SSDLite
        return {"backbone": "backbone.bottom_up.", "extras": "backbone."}
    return {"backbone": "backbone."}


def _group_of(name: str, groups: Dict[str, str]) -> str:
    for g, prefix in groups.items():  # most specific first
        if (name + ".").startswith(prefix):
            return g
    return "head"


def detectron2_model_cost(model: nn.Module, input_size: Tuple[int, int] = (800, 1088),
                          meta: bool = True) -> Dict[str, Cost]:
    """Params / MAdds of a detectron2 meta-architecture at ``input_size`` (H, W), split into
    ``backbone`` (the bottom-up network), ``fpn`` (if any), ``head`` (everything else) and
    ``total``. RetinaNet-style (``head`` + ``head_in_features``) and ``sem_seg_head`` models
    run backbone + head on a zero tensor (with ``meta``: on a copy of the model on the "meta"
    device, shapes only, instantaneous); others run full inference on a zero image."""
    h, w = input_size
    div = getattr(getattr(model, "backbone", None), "size_divisibility", 0) or 1
    h, w = -(-h // div) * div, -(-w // div) * div
    fast = hasattr(model, "backbone") and (
        (hasattr(model, "head") and hasattr(model, "head_in_features"))
        or hasattr(model, "sem_seg_head"))
    if fast and meta:
        model = copy.deepcopy(model).to("meta")
    device = next(model.parameters()).device

    def run(m):
        x = torch.zeros(1, 3, h, w, device=device)
        if hasattr(m, "head") and hasattr(m, "head_in_features"):
            feats = m.backbone(x)
            m.head([feats[f] for f in m.head_in_features])
        elif hasattr(m, "sem_seg_head"):
            m.sem_seg_head(m.backbone(x))
        else:
            m([{"image": torch.zeros(3, h, w, device=device), "height": h, "width": w}])

    _, counts = model_cost(model, run=run, per_module=True)
    groups = _groups(model)
    out = {g: Cost() for g in list(groups) + ["head"]}
    for name, n in counts.items():
        out[_group_of(name, groups)].madds += n
    for name, p in model.named_parameters():
        out[_group_of(name.rsplit(".", 1)[0], groups)].params += p.numel()
    out["total"] = Cost(sum(c.params for c in out.values()), sum(c.madds for c in out.values()))
    return out


def config_cost(cfg: CfgNode, input_size: Tuple[int, int]) -> Dict[str, Cost]:
    """:func:`detectron2_model_cost` of the model ``cfg`` builds, on the CPU without weights:
    what ``python -m fna_d2.cost --config-file`` prints and the pipeline report shows."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return detectron2_model_cost(build_model(cfg), tuple(input_size))


def cost_columns(report: Dict[str, Cost]) -> Dict[str, float]:
    """A :func:`detectron2_model_cost` report as flat columns: ``Params (M)`` / ``MAdds (G)`` of
    the whole model (``total``), then ``<part> Params (M)`` / ``<part> MAdds (G)`` per part
    (backbone, fpn or extras, head), in the report's order."""
    total = report["total"]
    cols = {"Params (M)": total.params / 1e6, "MAdds (G)": total.madds / 1e9}
    for part, c in report.items():
        if part != "total":
            cols[f"{part} Params (M)"] = c.params / 1e6
            cols[f"{part} MAdds (G)"] = c.madds / 1e9
    return cols
