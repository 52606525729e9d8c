"""Architecture adaptation: :class:`SearchTrainer`, detectron2's trainer around a
:class:`~.step.SearchStepRunner` (``MODEL.FNA.NETWORK: super``).

``SOLVER.MAX_ITER``, ``SOLVER.STEPS``, the LR warm-up and checkpoint periods count search
iterations (cycles of the alternation; with the paper's 1 : 1, one iteration = one weight
step). No evaluation and no PreciseBN run: the validation set is never used during the search.

Reproducibility and resume: the two halves of the split are read through
:class:`~.streams.DataStream` s whose positions are checkpointed, augmentations are seeded per
sample from the stream position, and torch's global RNG is re-seeded from (seed, iteration,
rank) at each iteration; the super network's initialisation (alphas included) is seeded by
``MODEL.FNA.SEARCH.SEED``. The trainer state adds the arch optimizer, the sampling generator,
the stream positions, the split fingerprint and the search-space signature, so a killed run
resumed with ``--resume`` reaches bit-identical alphas (same device and thread count).
Every rank's own state (RetinaNet's loss EMA) is gathered into the checkpoint and restored
per rank, so a multi-process resume is exact too (:mod:`.state`). ``SOLVER.AMP`` runs both
steps under autocast (:mod:`.step`; float16 or bfloat16, ``SOLVER.AMP.PRECISION``).
With ``STOP_ON_COLLAPSE`` the search stops at the first collapsed iteration
(:mod:`.diagnostics`) and saves ``model_stopped_{iter}.pth``.
"""
from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer, HookBase, TrainerBase, hooks
from detectron2.utils.events import EventWriter, JSONWriter, TensorboardXWriter
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger

from ...cost import op_cost_table
from ...data.split import DataSplit
from ...errors import ConfigError
from ...latency import Progress, describe_device, get_latency_table
from ...modeling import find_supernet
from ...utils.collectives import broadcast_object
from ..amp import amp_settings
from ..clip import add_gradient_clipping, clip_global_norm
from ..data import check_datasets
from ..ddp import ddp_model
from ..optim import param_groups, weight_optimizer
from ..trainer import FNATrainer
from .config import LatencySettings, SearchSchedule, check_search_cfg, target_cost
from .eta import SearchMetricPrinter, SearchPhases, mixed_path_madds_ratio
from .outputs import SearchOutputs, SearchOutputWriter
from .step import SearchStepRunner
from .streams import DataStream, build_search_streams, mix_seed

__all__ = ["SearchTrainer"]

logger = logging.getLogger(__name__)

CostTable = List[List[float]]


class SearchTrainer(FNATrainer):
    """FNA's architecture adaptation on a super network (``MODEL.FNA.NETWORK: super``).
    ``config_file``: the YAML ``cfg`` was read from, recorded in ``searched_arch.json``
    (None records null)."""

    def __init__(self, cfg: CfgNode, *, config_file: Optional[str] = None) -> None:
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        check_search_cfg(cfg)
        amp_settings(cfg)  # SOLVER.AMP checked before anything is built
        check_datasets(cfg, test=False)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        self.cfg = cfg
        self.config_file = config_file

        with torch.random.fork_rng(devices=[]):  # the init (alphas too) follows SEARCH.SEED
            torch.manual_seed(mix_seed(cfg.MODEL.FNA.SEARCH.SEED, "init"))
            model = self.build_model(cfg)
        self.net = self.find_supernet(model)
        optimizer = self.build_optimizer(cfg, model)
        arch_optimizer = self.build_arch_optimizer(cfg, self.net)
        self.split, weight_stream, arch_stream = self.build_search_streams(cfg)
        self.cost_table, self.madds_table = self.build_cost_tables(cfg, self.net)
        amp = amp_settings(cfg, next(model.parameters()).device)
        model = ddp_model(model, broadcast_buffers=False, find_unused_parameters=True)
        self._trainer = SearchStepRunner(
            model, self.net, weight_stream, arch_stream, optimizer, arch_optimizer,
            self.cost_table,
            SearchSchedule.from_config(cfg, target_cost(cfg, self.net.space, self.cost_table)),
            cfg.MODEL.FNA.SEARCH.SEED,
            self.split.fingerprint, amp=amp)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = self.build_checkpointer(
            cfg, model, bn_data_loader=weight_stream.loader, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.outputs = SearchOutputWriter(cfg, self.net, self.cost_table, self.madds_table,
                                          config_file, self.runner.schedule.target_band)
        self.register_hooks(self.build_hooks())

    @property
    def runner(self) -> SearchStepRunner:
        """The step runner: the alternation, its streams, optimizers and sampled paths."""
        return self._trainer

    # -- builders
    @staticmethod
    def find_supernet(model: nn.Module) -> nn.Module:
        net = find_supernet(model)
        if net is None:
            raise ConfigError(
                "MODEL.FNA.NETWORK='super' but the model has no FNA super network: use an FNA "
                "backbone (MODEL.BACKBONE.NAME 'build_fna_retinanet_fpn_backbone' or "
                "'build_fna_backbone')")
        return net

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        """``SOLVER.OPTIMIZER`` (SGD; RMSprop for SSDLite) over every parameter except the
        alphas, with ``SOLVER.CLIP_GRADIENTS`` (:func:`fna_d2.engine.clip.add_gradient_clipping`:
        "full_model" clips their global norm)."""
        net = cls.find_supernet(model)
        groups = param_groups(cfg, model, exclude=net.arch_parameters())
        return add_gradient_clipping(cfg, weight_optimizer(cfg, groups))

    @staticmethod
    def build_arch_optimizer(cfg: CfgNode, net: nn.Module) -> torch.optim.Optimizer:
        """Adam over the alphas (``SOLVER.ARCH.BASE_LR / BETAS / WEIGHT_DECAY``), clipping the
        global norm of their gradients to ``SOLVER.ARCH.CLIP_VALUE`` first when it is > 0."""
        a = cfg.SOLVER.ARCH
        adam = torch.optim.Adam(net.arch_parameters(), lr=a.BASE_LR, betas=tuple(a.BETAS),
                                weight_decay=a.WEIGHT_DECAY)
        return clip_global_norm(adam, float(a.CLIP_VALUE)) if a.CLIP_VALUE > 0 else adam

    @classmethod
    def build_search_streams(cls, cfg: CfgNode) -> Tuple[DataSplit, DataStream, DataStream]:
        """Split ``DATASETS.TRAIN`` (seeded) and build the weight and arch streams."""
        return build_search_streams(cfg)

    @staticmethod
    def build_cost_tables(cfg: CfgNode, net: nn.Module) -> Tuple[CostTable, CostTable]:
        """(the search's cost table, the GMAdds table), once, at ``COST_INPUT_SIZE``. A latency
        table is measured on ``LATENCY_DEVICE`` at ``LATENCY_BATCH`` (or read from
        ``LATENCY_TABLE``; one from another device only with ``LATENCY_TABLE_FOREIGN``) on rank
        0 and shared; its entries carry the table's whole-network calibration scale, which
        leaves the arch gradients of the log cost loss unchanged (see ``fna_d2.latency``)."""
        s, os_ = cfg.MODEL.FNA.SEARCH, cfg.MODEL.FNA.OUTPUT_STRIDE
        size = tuple(int(v) for v in s.COST_INPUT_SIZE)
        madds = op_cost_table(net.space, size, "madds", output_stride=os_)
        if s.COST == "madds":
            return madds, madds
        table = None
        if comm.is_main_process():
            lat = LatencySettings.from_config(cfg)
            lt = get_latency_table(net.space.with_output_stride(os_), size, path=lat.path,
                                   repeats=lat.repeats, device=lat.device, threads=lat.threads,
                                   tune_malloc=lat.tune_malloc, batch=lat.batch,
                                   foreign=lat.foreign, progress=Progress(logger.info, 30.0))
            logger.info(f"latency: the search's cost is the table {lat.path}, measured on "
                        f"{describe_device(lt.device)}")
            table = lt.entries()
        return broadcast_object(table, src=0), madds

    def build_hooks(self) -> List[HookBase]:
        """Timer, LR schedule, checkpoints, search outputs, writers (no evaluation, no
        PreciseBN: the validation set is never used during the search)."""
        ret: List[Optional[HookBase]] = [hooks.IterationTimer(), hooks.LRScheduler()]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer,
                                                  self.cfg.SOLVER.CHECKPOINT_PERIOD))
            ret.append(SearchOutputs(self.outputs, self.runner, self.split,
                                     self.cfg.MODEL.FNA.SEARCH.DERIVE_PERIOD))
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=20))
        return [h for h in ret if h is not None]

    def build_writers(self) -> List[EventWriter]:
        """detectron2's writers (console, ``metrics.json``, TensorBoard) with the console's ETA
        phase by phase (:class:`~.eta.SearchMetricPrinter`: the warm-up's iterations, then the
        costlier search iterations, estimated from the MAdds of a mixed forward until timed)."""
        s = self.cfg.MODEL.FNA.SEARCH
        try:
            ratio = mixed_path_madds_ratio(self.runner.model, tuple(s.COST_INPUT_SIZE),
                                           self.cfg.MODEL.FNA.OUTPUT_STRIDE)
        except Exception as e:  # an estimate must never stop a search
            logger.warning(f"ETA: cannot count the mixed forward's MAdds ({e}); the arch step "
                           f"is estimated to cost a weight step until one is timed")
            ratio = 1.0
        logger.info(f"ETA: until a search iteration is timed, an arch step is estimated at "
                    f"{ratio:.2f} weight steps (MAdds of a mixed forward / a uniform path's)")
        sched = self.runner.schedule
        phases = SearchPhases(sched.warmup_iters, sched.arch_steps, sched.weight_steps, ratio)
        out = self.cfg.OUTPUT_DIR
        os.makedirs(out, exist_ok=True)
        return [SearchMetricPrinter(self.max_iter, phases),
                JSONWriter(os.path.join(out, "metrics.json")), TensorboardXWriter(out)]

    # -- the loop
    def train(self) -> Dict[str, Any]:
        """TrainerBase's loop, able to stop early (``STOP_ON_COLLAPSE``)."""
        logger.info(f"Starting the search from iteration {self.start_iter}")
        runner = self.runner
        self.iter = self.start_iter
        with EventStorage(self.start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(self.start_iter, self.max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if runner.stop_reason:
                        logger.warning(f"stopping the search: {runner.stop_reason}")
                        if comm.is_main_process():
                            self.checkpointer.save(f"model_stopped_{self.iter:07d}",
                                                   iteration=self.iter)
                        break
                self.iter += 1
            except Exception:
                logger.exception("Exception during the search:")
                raise
            finally:
                self.after_train()
        return {"searched_arch": os.path.join(self.cfg.OUTPUT_DIR, "searched_arch.json"),
                "iterations": self.iter, "stopped_early": runner.stop_reason}
