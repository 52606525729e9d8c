"""The FNA backbone builders registered in detectron2's ``BACKBONE_REGISTRY``:
``build_fna_backbone`` (``MODEL.FNA.NETWORK``: seed, super or derived) and
``build_fna_retinanet_fpn_backbone`` (FPN with P6/P7, as in FNA's RetinaNet).

A backbone built with ``MODEL.WEIGHTS`` naming a checkpoint fna_d2 wrote is checked against
the architecture the checkpoint carries (:func:`~.stored_arch.check_record`), so a model
built for one architecture and loaded with another (``DefaultPredictor``, evaluation) is an
error instead of fvcore's "Skip loading parameter" warnings."""
from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from ..arch import read_checkpoint_arch, seed_arch
from .arch_config import backbone_kwargs
from .derived import DerivedNet
from .seed import MobileNetV2Seed
from .stored_arch import check_record
from .supernet import SuperNet

__all__ = ["build_fna_backbone", "build_fna_retinanet_fpn_backbone", "LastLevelP6P7Linear"]

_NETWORKS = ("seed", "super", "derived")


@BACKBONE_REGISTRY.register()
def build_fna_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """``MODEL.FNA.NETWORK``: "seed" (torchvision-layout MobileNetV2; for other seeds the seed
    architecture in canonical layout), "super" or "derived"."""
    network = cfg.MODEL.FNA.NETWORK
    if network == "seed":
        if cfg.MODEL.FNA.SEED == "mobilenetv2":
            net = MobileNetV2Seed(cfg, input_shape)
        else:
            net = DerivedNet(seed_arch(cfg.MODEL.FNA.SEED), **backbone_kwargs(cfg, input_shape))
    elif network == "super":
        net = SuperNet(cfg, input_shape)
    elif network == "derived":
        net = DerivedNet(cfg, input_shape)
    else:
        raise ValueError(f"MODEL.FNA.NETWORK: unknown network {network!r}; known: "
                         f"{', '.join(_NETWORKS)}")
    weights = cfg.MODEL.WEIGHTS
    record = read_checkpoint_arch(weights) if weights else None
    if record is not None:
        check_record(record, net, f"MODEL.WEIGHTS={weights!r}")
    return net


class LastLevelP6P7Linear(LastLevelP6P7):
    """Detectron2's P6/P7 block without the ReLU between P6 and P7, as mmdetection 0.6 (the FNA
    release) built RetinaNet's extra levels (``MODEL.FNA.FPN_P7_RELU False``)."""

    def forward(self, c5):
        p6 = self.p6(c5)
        return [p6, self.p7(p6)]


@BACKBONE_REGISTRY.register()
def build_fna_retinanet_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """FPN over c3, c4, c5 (or ``MODEL.FPN.IN_FEATURES`` if set) of :func:`build_fna_backbone`,
    with P6 from C5 and P7 from P6 (``LastLevelP6P7(c5_channels, MODEL.FPN.OUT_CHANNELS,
    "c5")``), as in FNA's RetinaNet; ``MODEL.FNA.FPN_P7_RELU False`` drops detectron2's ReLU
    before P7 (:class:`LastLevelP6P7Linear`, the release's)."""
    bottom_up = build_fna_backbone(cfg, input_shape)
    in_features = list(cfg.MODEL.FPN.IN_FEATURES) or ["c3", "c4", "c5"]
    shapes = bottom_up.output_shape()
    for name in in_features + ["c5"]:
        if name not in shapes:
            raise ValueError(f"MODEL.FNA.OUT_FEATURES {list(cfg.MODEL.FNA.OUT_FEATURES)} must "
                             f"contain {name!r} (used by the FPN: MODEL.FPN.IN_FEATURES "
                             f"{in_features} and P6 from c5)")
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(bottom_up=bottom_up, in_features=in_features, out_channels=out_channels,
               norm=cfg.MODEL.FPN.NORM,
               top_block=(LastLevelP6P7 if cfg.MODEL.FNA.FPN_P7_RELU else LastLevelP6P7Linear)(
                   shapes["c5"].channels, out_channels, "c5"),
               fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
