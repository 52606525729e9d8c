"""The backbones' old home, kept for outside importers.

# redesign shim: removed after merge
The backbones now live in :mod:`fna_d2.modeling.seed` (``MobileNetV2Seed``),
:mod:`~fna_d2.modeling.derived` (``DerivedNet``), :mod:`~fna_d2.modeling.supernet`
(``SuperNet``, ``MixedOp``, ``find_supernet``), :mod:`~fna_d2.modeling.builders` (the
registered builders), :mod:`~fna_d2.modeling.arch_config` (``check_macro_structure``,
``arch_from_config``, ``space_from_config``) and :mod:`~fna_d2.modeling.staged`
(``FEATURE_NAMES``); import them from :mod:`fna_d2.modeling`.
"""
# redesign shim: removed after merge
from .arch_config import arch_from_config, check_macro_structure, space_from_config
from .builders import build_fna_backbone, build_fna_retinanet_fpn_backbone
from .derived import DerivedNet
from .seed import MobileNetV2Seed
from .staged import FEATURE_NAMES
from .supernet import MixedOp, SuperNet, find_supernet

__all__ = ["FEATURE_NAMES", "MobileNetV2Seed", "DerivedNet", "SuperNet", "MixedOp",
           "find_supernet", "build_fna_backbone", "build_fna_retinanet_fpn_backbone",
           "check_macro_structure", "arch_from_config", "space_from_config"]
