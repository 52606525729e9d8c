"""Parameter adaptation and baselines: :class:`FNATrainer`.

:class:`FNATrainer` is detectron2's :class:`~detectron2.engine.DefaultTrainer` with:

* an :class:`fna_d2.checkpoint.FNACheckpointer`, so ``MODEL.FNA.SEED_WEIGHTS`` is remapped into
  the network when training starts fresh (``MODEL.WEIGHTS`` and ``--resume`` work as usual),
  and checkpoints are written atomically;
* optional BN recalibration (``MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS``) right after that;
* evaluators chosen from the dataset's ``evaluator_type`` ("coco" -> COCOEvaluator,
  "sem_seg" / "cityscapes_sem_seg" -> SemSegEvaluator with a NumPy-2-safe label loader);
* for ``SemanticSegmentor`` models, a DeepLab-style train mapper (random resize, category-area
  constrained crop, flip) and DeepLab's LR schedulers (``WarmupPolyLR``);
* mixed precision (``SOLVER.AMP``, :mod:`fna_d2.engine.amp`): detectron2's ``AMPTrainer`` on
  CUDA with ``SOLVER.AMP.PRECISION`` (float16 or bfloat16), bfloat16 autocast on CPU;
* a clear error when ``DATASETS.TRAIN`` / ``DATASETS.TEST`` names an unregistered dataset;
  demo datasets (``fna_d2.data.demo.DEMO_DATASETS``) are built on first use.

Metrics go to ``metrics.json`` / TensorBoard / the console (with ETA) via detectron2's writers.
This module knows nothing of the search: :mod:`fna_d2.engine.search` builds on it, and
:mod:`fna_d2.engine.launch` picks between the two.
"""
from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Dict, Iterable, Optional

import torch
from torch import nn

from detectron2.config import CfgNode
from detectron2.data import (MetadataCatalog, build_detection_test_loader,
                             build_detection_train_loader)
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, SemSegEvaluator
from detectron2.projects.deeplab import build_lr_scheduler as deeplab_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import FNACheckpointer
from ..modeling.ops import naive_sync_bn
from ..modeling.sliding_window import check_sliding_window_meta_arch
from ..modeling.ssdlite import ssdlite_test_mapper
from ..tasks import is_semantic, is_ssdlite
from ..utils import unwrap_model
from .amp import AmpSettings, AutocastTrainer, amp_settings
from .clip import add_gradient_clipping
from .data import check_datasets, load_sem_seg_gt, train_mapper
from .ddp import average_bn_buffers, ddp_model
from .optim import param_groups, weight_optimizer

__all__ = ["FNATrainer"]

logger = logging.getLogger(__name__)


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
        amp_settings(cfg)  # SOLVER.AMP checked before anything is built
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = ddp_model(model, broadcast_buffers=False)
        self._trainer = self.build_step_runner(
            amp_settings(cfg, next(model.parameters()).device), model, data_loader, optimizer)
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
                           **checkpointables: Any) -> FNACheckpointer:
        """An :class:`fna_d2.checkpoint.FNACheckpointer` (seed remapping and, given
        ``bn_data_loader``, BN recalibration on fresh starts) saving atomically to
        ``OUTPUT_DIR``."""
        return FNACheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg, bn_data_loader=bn_data_loader,
                               **checkpointables)

    @staticmethod
    def build_step_runner(amp: AmpSettings, model: nn.Module, data_loader: Iterable[Any],
                          optimizer: torch.optim.Optimizer) -> SimpleTrainer:
        """The loop body: detectron2's ``SimpleTrainer``; with ``SOLVER.AMP`` on a CUDA model
        detectron2's ``AMPTrainer`` (``precision`` from ``SOLVER.AMP.PRECISION``, a gradient
        scaler for float16 only), on a CPU model :class:`~fna_d2.engine.amp.AutocastTrainer`
        (bfloat16: :func:`~fna_d2.engine.amp.amp_settings` refuses float16 on CPU)."""
        if not amp.enabled:
            return SimpleTrainer(model, data_loader, optimizer)
        if amp.device_type == "cuda":
            return AMPTrainer(model, data_loader, optimizer, grad_scaler=amp.grad_scaler(),
                              precision=amp.dtype)
        return AutocastTrainer(model, data_loader, optimizer, amp)

    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        """Detectron2's model; on CPU processes of a multi-process run every ``SyncBN``
        (``MODEL.FNA.NORM``, ``MODEL.SEM_SEG_HEAD.NORM``, ``MODEL.FPN.NORM``...) becomes
        detectron2's ``naiveSyncBN``, with a logged note: ``nn.SyncBatchNorm`` refuses CPU
        modules there (DDP raises "SyncBatchNorm layers only work with GPU modules")."""
        model = super().build_model(cfg)
        if comm.get_world_size() > 1 and torch.device(cfg.MODEL.DEVICE).type == "cpu":
            n = naive_sync_bn(model)
            if n:
                logger.warning(
                    f"{n} SyncBN layers replaced by naiveSyncBN (detectron2's NaiveSyncBatchNorm): "
                    f"torch's SyncBatchNorm needs GPU modules and MODEL.DEVICE is "
                    f"{cfg.MODEL.DEVICE!r} with {comm.get_world_size()} processes. Batch "
                    f"statistics are still averaged over all processes (each weighted equally)")
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        """``SOLVER.OPTIMIZER`` (detectron2's SGD, or RMSprop for SSDLite:
        :func:`fna_d2.engine.optim.weight_optimizer`) over detectron2's parameter groups, with
        ``SOLVER.CLIP_GRADIENTS`` applied by :func:`fna_d2.engine.clip.add_gradient_clipping`
        (which adds the paper's global-norm ``CLIP_TYPE "full_model"`` to detectron2's
        per-tensor "norm" and "value")."""
        return add_gradient_clipping(cfg, weight_optimizer(cfg, param_groups(cfg, model)))

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        mapper = train_mapper(cfg) if is_semantic(cfg) or is_ssdlite(cfg) else None
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        """Detectron2's test loader; SSDLite's resizes to its square input (the authors' test
        transform)."""
        mapper = ssdlite_test_mapper(cfg) if is_ssdlite(cfg) else None
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        """Detectron2's schedulers plus DeepLab's ``WarmupPolyLR``. With
        ``SOLVER.RESCALE_INTERVAL`` and a warm-up as long as the run (``WARMUP_ITERS >=
        MAX_ITER``, e.g. a shortened check) there is no interval left to rescale into, which
        detectron2 divides by: the schedule is then built without rescaling (the run is all
        warm-up either way)."""
        s = cfg.SOLVER
        if s.RESCALE_INTERVAL and s.WARMUP_ITERS >= s.MAX_ITER:
            cfg = cfg.clone()
            cfg.defrost()
            cfg.SOLVER.RESCALE_INTERVAL = False
        return deeplab_lr_scheduler(cfg, optimizer)

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
            average_bn_buffers(unwrap_model(self.model))
