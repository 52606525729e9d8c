"""fna_d2's models. Importing this package registers the FNA backbones in detectron2's
``BACKBONE_REGISTRY`` (``build_fna_backbone``, ``build_fna_retinanet_fpn_backbone``), the
DeepLabv3 head ``FNADeepLabV3Head`` in ``SEM_SEG_HEADS_REGISTRY`` and the sliding-window
``FNASemanticSegmentor`` in ``META_ARCH_REGISTRY``.

Modules: ``ops`` (MBConv / skip ops, norms), ``freeze`` (``MODEL.FNA.FREEZE_AT``), ``staged``
(what the backbones share: outputs, stem, stages), ``seed`` (``MobileNetV2Seed``),
``derived`` (``DerivedNet``), ``supernet`` (``SuperNet``, ``MixedOp``), ``arch_config`` (the
architecture / space / keyword arguments a config asks for), ``stored_arch`` (the
architecture a checkpoint carries, checked against a built backbone), ``builders`` (the
registered builders), ``seg_head`` (DeepLabv3 head), ``sliding_window`` (``FNASemanticSegmentor``), ``ssdlite``
(the ``FNASSDLite`` meta-architecture, its backbone ``build_fna_ssdlite_backbone`` and
``SSDAnchorGenerator``).
"""
from . import ops  # noqa: F401
from .arch_config import (arch_from_config, backbone_kwargs, check_macro_structure,
                          space_from_config)
from .builders import build_fna_backbone, build_fna_retinanet_fpn_backbone
from .derived import DerivedNet
from .freeze import check_freeze_at, freeze_blocks, freeze_module
from .ops import SEARCH_BN, ConvBN, MBConv, NormSpec, build_op, make_norm
from .seed import MobileNetV2Seed
from .seg_head import FNADeepLabV3Head
from .sliding_window import (FNASemanticSegmentor, check_sliding_window_cfg,
                             check_sliding_window_meta_arch, default_stride, window_starts)
from .staged import FEATURE_NAMES, StagedBackbone, check_out_features, tap_stages
from .stored_arch import (FNA_BACKBONES, backbone_record, check_record, describe_record,
                          fna_backbones)
from .supernet import MixedOp, SuperNet, find_supernet
from . import ssdlite  # noqa: E402  (registers FNASSDLite, its backbone and anchors)
from .ssdlite import FNASSDLite

__all__ = ["ops", "build_op", "SEARCH_BN", "NormSpec", "make_norm", "ConvBN", "MBConv",
           "freeze_module", "check_freeze_at", "freeze_blocks",
           "FEATURE_NAMES", "tap_stages", "check_out_features", "StagedBackbone",
           "MobileNetV2Seed", "DerivedNet", "SuperNet", "MixedOp", "find_supernet",
           "backbone_kwargs", "check_macro_structure", "arch_from_config", "space_from_config",
           "build_fna_backbone", "build_fna_retinanet_fpn_backbone", "FNADeepLabV3Head",
           "FNASemanticSegmentor", "window_starts", "default_stride", "check_sliding_window_cfg",
           "check_sliding_window_meta_arch", "FNA_BACKBONES", "fna_backbones",
           "backbone_record", "describe_record", "check_record", "ssdlite",
           "FNASSDLite"]
