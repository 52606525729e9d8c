"""The tasks fna_d2 adapts a seed to, as read from a config: a leaf module that the engine,
the pipeline, its report and the run comparison all ask."""
from __future__ import annotations

from typing import Tuple

from detectron2.config import CfgNode
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor

__all__ = ["is_semantic", "is_ssdlite", "task_of", "NET_NAMES", "TASK_METRICS"]

#: the networks a pipeline trains, by stage name, as reports name them
NET_NAMES = {"adapt": "FNA (searched)", "baseline": "MobileNetV2 (seed)"}
#: the headline metric of each task
TASK_METRICS = {"detection": "AP", "segmentation": "mIoU"}


def _meta_arch(cfg: CfgNode):
    """The registered class of ``MODEL.META_ARCHITECTURE`` (None when not registered: build_model
    would fail anyway)."""
    try:
        arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    except KeyError:
        return None
    return arch if isinstance(arch, type) else None


def is_semantic(cfg: CfgNode) -> bool:
    """True for semantic segmentation meta-architectures: ``SemanticSegmentor`` and any
    registered subclass of it (e.g. fna_d2's sliding-window ``FNASemanticSegmentor``)."""
    arch = _meta_arch(cfg)
    return arch is not None and issubclass(arch, SemanticSegmentor)


def is_ssdlite(cfg: CfgNode) -> bool:
    """True for fna_d2's ``FNASSDLite`` (or a registered subclass of it): its trainers map the
    train data with SSD's augmentations (``fna_d2.modeling.ssdlite.ssdlite_train_mapper``)."""
    arch = _meta_arch(cfg)
    return arch is not None and any(c.__name__ == "FNASSDLite" for c in arch.__mro__)


def task_of(cfg: CfgNode) -> Tuple[str, str]:
    """("detection", "AP") or ("segmentation", "mIoU") from the meta-architecture."""
    task = "segmentation" if is_semantic(cfg) else "detection"
    return task, TASK_METRICS[task]
