"""fna_d2's models. Importing this package registers the FNA backbones in detectron2's
``BACKBONE_REGISTRY`` (``build_fna_backbone``, ``build_fna_retinanet_fpn_backbone``) and the
sliding-window ``FNASemanticSegmentor`` in ``META_ARCH_REGISTRY``."""
from . import ops  # noqa: F401
from .backbones import (DerivedNet, MixedOp, MobileNetV2Seed, SuperNet,  # noqa: F401
                        build_fna_backbone, build_fna_retinanet_fpn_backbone, find_supernet)
from .ops import build_op  # noqa: F401
from .sliding_window import FNASemanticSegmentor  # noqa: F401

__all__ = ["ops", "build_op", "MobileNetV2Seed", "DerivedNet", "SuperNet", "MixedOp",
           "find_supernet", "build_fna_backbone", "build_fna_retinanet_fpn_backbone",
           "FNASemanticSegmentor"]
