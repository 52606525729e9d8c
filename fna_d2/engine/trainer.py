"""Parameter adaptation and baselines: :class:`FNATrainer`, plus the entry points
:func:`build_trainer` and :func:`evaluate_only` used by ``train_net.py``.

:class:`FNATrainer` is detectron2's :class:`~detectron2.engine.DefaultTrainer` with:

* an :class:`fna_d2.checkpoint.FNACheckpointer`, so ``MODEL.FNA.SEED_WEIGHTS`` is remapped into
  the network when training starts fresh (``MODEL.WEIGHTS`` and ``--resume`` work as usual);
* optional BN recalibration (``MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS``) right after that;
* evaluators chosen from the dataset's ``evaluator_type`` ("coco" -> COCOEvaluator,
  "sem_seg" / "cityscapes_sem_seg" -> SemSegEvaluator with a NumPy-2-safe label loader);
* for ``SemanticSegmentor`` models, a DeepLab-style train mapper (random resize, category-area
  constrained crop, flip) and DeepLab's LR schedulers (``WarmupPolyLR``);
* a clear error when ``DATASETS.TRAIN`` / ``DATASETS.TEST`` names an unregistered dataset;
  demo datasets (``fna_d2.data.demo.DEMO_DATASETS``) are built on first use.

Metrics go to ``metrics.json`` / TensorBoard / the console (with ETA) via detectron2's writers.
"""
from __future__ import annotations

import difflib
import logging
import os
import weakref
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

import detectron2.data.transforms as T
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import (DatasetCatalog, DatasetMapper, MetadataCatalog,
                             build_detection_train_loader)
from detectron2.engine import (AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase,
                               create_ddp_model)
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, SemSegEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger

from ..errors import DatasetNotRegisteredError  # noqa: F401  (defined there; re-exported)
from ..tasks import is_semantic  # noqa: F401  (re-exported)
from ..modeling.sliding_window import check_sliding_window_meta_arch

__all__ = ["FNATrainer", "build_trainer", "evaluate_only", "DatasetNotRegisteredError",
           "ddp_model", "check_datasets", "train_augmentations", "train_mapper", "is_semantic",
           "load_sem_seg_gt"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- datasets


def _demo_module():
    try:
        from ..data import demo
    except ImportError:
        return None
    return demo


def check_datasets(cfg: CfgNode, train: bool = True, test: bool = True) -> None:
    """Build demo datasets that are missing and raise :class:`DatasetNotRegisteredError`
    (listing a few registered names and how to register) for unknown names."""
    keys = ([("DATASETS.TRAIN", cfg.DATASETS.TRAIN)] if train else []) + \
           ([("DATASETS.TEST", cfg.DATASETS.TEST)] if test else [])
    registered = set(DatasetCatalog.list())
    demo = _demo_module()
    demo_names = set(getattr(demo, "DEMO_DATASETS", ())) if demo is not None else set()
    for key, names in keys:
        for name in names:
            if name not in registered:
                raise DatasetNotRegisteredError(_unregistered_message(key, name, registered))
            if name in demo_names and hasattr(demo, "ensure_demo_data"):
                demo.ensure_demo_data(name)


def _unregistered_message(key: str, name: str, registered: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, sorted(registered), n=5, cutoff=0.4)
    fna = sorted(n for n in registered if n.startswith("fna_"))
    shown = list(dict.fromkeys(close + fna))[:8] or sorted(registered)[:8]
    return (f"{key}: dataset {name!r} is not registered with Detectron2. Registered datasets "
            f"include {', '.join(repr(n) for n in shown)} ({len(registered)} in total; "
            f"DatasetCatalog.list() shows all). Register yours before building the trainer, "
            f"e.g. detectron2.data.datasets.register_coco_instances(name, {{}}, json_file, "
            f"image_root) for COCO-format data or DatasetCatalog.register + MetadataCatalog."
            f"get(name).set(evaluator_type=...) otherwise; Detectron2's builtin names (coco_*, "
            f"cityscapes_*) read their files under $DETECTRON2_DATASETS.")


def load_sem_seg_gt(filename: str, dtype=int) -> np.ndarray:
    """Read a label image as an integer array (``np.asarray``: works with NumPy 1 and 2)."""
    from PIL import Image

    with PathManager.open(filename, "rb") as f:
        return np.asarray(Image.open(f), dtype=dtype)


# ----------------------------------------------------------------------------- mapping
def train_augmentations(cfg: CfgNode, augment: bool = True) -> List[T.Augmentation]:
    """Train-time augmentations. ``augment``: random resize (``INPUT.MIN_SIZE_TRAIN``), crop
    (``INPUT.CROP``; category-area constrained for segmentation, DeepLab-style) and flip;
    otherwise the nominal (test-size) resize, plus the crop for segmentation (it bounds
    memory), and no flip."""
    semantic = is_semantic(cfg)
    if augment:
        augs: List[T.Augmentation] = [T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    else:
        augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    if cfg.INPUT.CROP.ENABLED:
        if semantic:
            augs.append(T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE))
        elif augment:  # detectron2's order for detection: crop the original image, then resize
            augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if augment and cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                 vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    return augs


def train_mapper(cfg: CfgNode, augment: bool = True) -> DatasetMapper:
    """The train :class:`DatasetMapper` with :func:`train_augmentations`."""
    return DatasetMapper(cfg, is_train=True, augmentations=train_augmentations(cfg, augment))


# ----------------------------------------------------------------------------- trainer
def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _average_bn_buffers(model: nn.Module) -> None:
    """All-reduce (mean) BN running statistics so every rank keeps the same ones."""
    if comm.get_world_size() == 1:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for buf in (m.running_mean, m.running_var):
                if buf is not None:
                    torch.distributed.all_reduce(buf)
                    buf.div_(comm.get_world_size())


class _AtomicSave:
    """Checkpointer mixin: a checkpoint (and the ``last_checkpoint`` tag) is written to a
    temporary file and renamed, so a run killed while saving keeps its last good checkpoint."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        tmp = f"{path}.tmp.{os.getpid()}"
        with self.path_manager.open(tmp, "wb") as f:
            torch.save(data, f)
        os.replace(tmp, path)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        tmp = f"{path}.tmp.{os.getpid()}"
        with self.path_manager.open(tmp, "w") as f:
            f.write(last_filename_basename)
        os.replace(tmp, path)


_ATOMIC_CLS: Dict[type, type] = {}


def _atomic_checkpointer_class() -> type:
    from ..checkpoint import FNACheckpointer

    if FNACheckpointer not in _ATOMIC_CLS:
        _ATOMIC_CLS[FNACheckpointer] = type("AtomicFNACheckpointer", (_AtomicSave, FNACheckpointer),
                                            {"__doc__": FNACheckpointer.__doc__})
    return _ATOMIC_CLS[FNACheckpointer]


def ddp_model(model: nn.Module, **kwargs: Any) -> nn.Module:
    """detectron2's ``create_ddp_model``, also for CPU models (it would pass
    ``device_ids=[local_rank]``, which DistributedDataParallel refuses for CPU modules)."""
    first = next(model.parameters(), None)
    if first is not None and first.device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return create_ddp_model(model, **kwargs)


class FNATrainer(DefaultTrainer):
    """DefaultTrainer with seed remapping, BN recalibration, evaluator selection and the
    segmentation mapper/scheduler (see the module docstring)."""

    def __init__(self, cfg: CfgNode) -> None:
        # DefaultTrainer.__init__'s sequence, with fna_d2's dataset check and checkpointer
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        check_datasets(cfg)
        check_sliding_window_meta_arch(cfg)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = ddp_model(model, broadcast_buffers=False)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = self.build_checkpointer(
            cfg, model, bn_data_loader=data_loader, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    # -- builders
    @classmethod
    def build_checkpointer(cls, cfg: CfgNode, model: nn.Module,
                           bn_data_loader: Optional[Iterable[Any]] = None,
                           **checkpointables: Any) -> DetectionCheckpointer:
        """An :class:`fna_d2.checkpoint.FNACheckpointer` (seed remapping and, given
        ``bn_data_loader``, BN recalibration on fresh starts) saving atomically to
        ``OUTPUT_DIR``."""
        return _atomic_checkpointer_class()(model, cfg.OUTPUT_DIR, cfg=cfg,
                                            bn_data_loader=bn_data_loader, **checkpointables)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        mapper = train_mapper(cfg) if is_semantic(cfg) else None
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        """Detectron2's schedulers plus DeepLab's ``WarmupPolyLR``."""
        from detectron2.projects.deeplab import build_lr_scheduler

        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str,
                        output_folder: Optional[str] = None) -> DatasetEvaluator:
        """From the dataset's ``evaluator_type``: "coco" or "sem_seg" (also used for
        "cityscapes_sem_seg", which avoids the cityscapesscripts dependency)."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        etype = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if etype == "coco":
            return COCOEvaluator(dataset_name, output_dir=output_folder)
        if etype in ("sem_seg", "cityscapes_sem_seg"):
            return SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder,
                                   sem_seg_loading_fn=load_sem_seg_gt)
        raise NotImplementedError(
            f"no fna_d2 evaluator for dataset {dataset_name!r} (evaluator_type={etype!r}); "
            f"supported: 'coco', 'sem_seg', 'cityscapes_sem_seg'")

    # -- training
    def train(self) -> Dict[str, Any]:
        """Train from ``start_iter`` to ``max_iter``; returns the final evaluation's results
        (``{}`` when ``TEST.EVAL_PERIOD`` ran none), on the main process."""
        super().train()
        return dict(getattr(self, "_last_eval_results", None) or {})

    # -- start-up
    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from ``OUTPUT_DIR``, or start fresh: the checkpointer remaps the seed, loads
        ``MODEL.WEIGHTS`` and recalibrates BN (``MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS``) on
        the train loader; recalibrated statistics are then averaged across ranks."""
        fresh = not (resume and self.checkpointer.has_checkpoint())
        super().resume_or_load(resume=resume)
        if fresh and int(self.cfg.MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS) > 0:
            _average_bn_buffers(_unwrap(self.model))


# ----------------------------------------------------------------------------- entry points
def build_trainer(cfg: CfgNode) -> DefaultTrainer:
    """:class:`~fna_d2.engine.search.SearchTrainer` when ``MODEL.FNA.NETWORK == "super"``,
    else :class:`FNATrainer`."""
    if cfg.MODEL.FNA.NETWORK == "super":
        from .search import SearchTrainer

        return SearchTrainer(cfg)
    return FNATrainer(cfg)


def evaluate_only(cfg: CfgNode, resume: bool = False) -> Dict[str, Any]:
    """Build the model, load ``MODEL.WEIGHTS`` (or the last checkpoint of ``OUTPUT_DIR`` with
    ``resume``) through the checkpointer, evaluate on ``DATASETS.TEST`` and return the
    results."""
    check_datasets(cfg, train=False)
    check_sliding_window_meta_arch(cfg)
    model = FNATrainer.build_model(cfg)
    checkpointer = FNATrainer.build_checkpointer(cfg, model)
    if not cfg.MODEL.WEIGHTS and not (resume and checkpointer.has_checkpoint()):
        logger.warning("evaluate_only: MODEL.WEIGHTS is empty and there is nothing to resume; "
                       "evaluating the freshly initialised (or seed-remapped) model")
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    results = FNATrainer.test(cfg, model)
    return results if isinstance(results, dict) else OrderedDict(results)
