"""The tasks fna_d2 adapts a seed to, as read from a config: a leaf module that the engine,
the pipeline, its report and the run comparison all ask."""
from __future__ import annotations

from typing import Tuple

from detectron2.config import CfgNode
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor

__all__ = ["is_semantic", "task_of", "NET_NAMES", "TASK_METRICS"]

#: the networks a pipeline trains, by stage name, as reports name them
NET_NAMES = {"adapt": "FNA (searched)", "baseline": "MobileNetV2 (seed)"}
#: the headline metric of each task
TASK_METRICS = {"detection": "AP", "segmentation": "mIoU"}


def is_semantic(cfg: CfgNode) -> bool:
    """True for semantic segmentation meta-architectures: ``SemanticSegmentor`` and any
    registered subclass of it (e.g. fna_d2's sliding-window ``FNASemanticSegmentor``)."""
    try:
        arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    except KeyError:  # not registered: build_model would fail anyway
        return False
    return isinstance(arch, type) and issubclass(arch, SemanticSegmentor)


def task_of(cfg: CfgNode) -> Tuple[str, str]:
    """("detection", "AP") or ("segmentation", "mIoU") from the meta-architecture."""
    task = "segmentation" if is_semantic(cfg) else "detection"
    return task, TASK_METRICS[task]
