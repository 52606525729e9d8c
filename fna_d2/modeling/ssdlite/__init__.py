"""SSDLite (FNA paper, Table 3) on fna_d2's backbones; importing it registers
``build_fna_ssdlite_backbone`` (``BACKBONE_REGISTRY``), ``SSDAnchorGenerator``
(``ANCHOR_GENERATOR_REGISTRY``) and ``FNASSDLite`` (``META_ARCH_REGISTRY``). See docs/ssdlite.md.

Modules: ``taps`` (the FNA networks with SSDLite's two taps and the seed's 1280 conv),
``backbone`` (extra layers; the detectron2 backbone), ``anchors`` (SSD prior boxes), ``head``
(depthwise-separable predictors), ``loss`` (hard-negative mining), ``meta_arch``
(``FNASSDLite``: matching, losses, inference), ``augment`` (the authors' training augmentations
as detectron2 Augmentations and the mapper that gives them boxes), ``optim`` (SGD or RMSprop).
"""
from .anchors import SSDAnchorGenerator, ssd_anchor_strides, ssd_cell_anchors
from .augment import (Expand, ExpandTransform, MinIoURandomCrop, PhotometricDistortion,
                      SSDDatasetMapper, ssdlite_test_mapper, ssdlite_train_augmentations,
                      ssdlite_train_mapper)
from .backbone import (EXTRA_CHANNELS, FEATURES, ExtraLayer, SSDLiteBackbone,
                       build_fna_ssdlite_backbone, init_normal)
from .head import SeparablePredictor, SSDLiteHead, flatten_predictions
from .loss import hard_negative_mask, ssd_losses
from .meta_arch import FNASSDLite
from .taps import HEAD_CHANNELS, SSDLiteDerivedNet, SSDLiteSuperNet, tap_forward

__all__ = ["SSDAnchorGenerator", "ssd_anchor_strides", "ssd_cell_anchors", "EXTRA_CHANNELS",
           "FEATURES", "ExtraLayer",
           "SSDLiteBackbone", "build_fna_ssdlite_backbone", "init_normal", "SeparablePredictor",
           "SSDLiteHead", "flatten_predictions", "hard_negative_mask", "ssd_losses",
           "FNASSDLite", "HEAD_CHANNELS", "SSDLiteDerivedNet", "SSDLiteSuperNet",
           "tap_forward", "PhotometricDistortion", "ExpandTransform", "Expand",
           "MinIoURandomCrop", "SSDDatasetMapper", "ssdlite_train_augmentations",
           "ssdlite_train_mapper", "ssdlite_test_mapper"]
