"""Architectures and search spaces as plain, validated data.

* :mod:`.opnames`: the op vocabulary (``k{3,5,7}_e{1,3,6}``, ``skip``) and the candidate sets;
* :mod:`.types`: :class:`Stage` / :class:`Arch`, :class:`SearchStage` / :class:`SearchSpace`,
  their validation (:class:`ArchError` naming file, stage and layer) and the JSON document form;
* :mod:`.walk`: :func:`iter_layers`, the one walk over layers with their shapes;
* :mod:`.named`: the named seeds (MobileNetV2, EfficientNet-Lite0), FNA's published RetinaNet
  architecture and the paper's detection / segmentation spaces;
* :mod:`.files`: arch files (versioned JSON, the FNA authors' text format) and the
  architecture record checkpoints carry.
"""
from ..errors import ArchError
from .files import (CHECKPOINT_ARCH_KEY, NETWORK_KINDS, arch_record, load_arch,
                    parse_authors_format, read_checkpoint_arch, record_arch, save_arch,
                    to_authors_format)
from .named import (SEED_ARCHS, SSDLITE_TAP_OPS, detection_space, efficientnet_lite0_arch,
                    fna_retinanet_arch, mobilenetv2_arch, seed_arch, seed_in_space,
                    segmentation_space, space_from_seed, ssdlite_space, ssdlite_tap_stage)
from .opnames import (EXPANSIONS, FIRST_LAYER_OPS, KERNELS, OTHER_LAYER_OPS, SKIP, op_name,
                      parse_op)
from .types import ARCH_FORMAT, ARCH_VERSION, Arch, SearchSpace, SearchStage, Stage
from .walk import Layer, iter_layers

__all__ = [
    "ArchError",
    "Layer",
    "iter_layers",
    "Stage",
    "Arch",
    "SearchStage",
    "SearchSpace",
    "parse_op",
    "op_name",
    "SKIP",
    "KERNELS",
    "EXPANSIONS",
    "FIRST_LAYER_OPS",
    "OTHER_LAYER_OPS",
    "mobilenetv2_arch",
    "efficientnet_lite0_arch",
    "fna_retinanet_arch",
    "SEED_ARCHS",
    "seed_arch",
    "detection_space",
    "segmentation_space",
    "space_from_seed",
    "seed_in_space",
    "SSDLITE_TAP_OPS",
    "ssdlite_tap_stage",
    "ssdlite_space",
    "load_arch",
    "save_arch",
    "parse_authors_format",
    "to_authors_format",
    "CHECKPOINT_ARCH_KEY",
    "NETWORK_KINDS",
    "arch_record",
    "record_arch",
    "read_checkpoint_arch",
    "ARCH_FORMAT",
    "ARCH_VERSION",
]
