"""Shared set-up of the search tests: a tiny search space and a tiny RetinaNet search config on
the demo tree-crown data (imported by test_search.py and by the DDP test's spawned workers)."""
from __future__ import annotations

import os
from typing import Any, Dict

import fna_d2.data  # noqa: F401  (registers the demo datasets)
import fna_d2.modeling  # noqa: F401  (registers the backbones)
from detectron2.engine import HookBase

from fna_d2.config import get_fna_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: depths of the tiny space (MODEL.FNA.SEARCH_DEPTHS): 8 searchable layers, 2 of them offer
#: skip; a small space keeps a mixed (all-ops) forward cheap on 2 CPU cores
TINY_DEPTHS = (2, 2, 1, 1, 1, 1)


def set_options(cfg, options: Dict[str, Any]):
    """``cfg.A.B.LEAF = value`` for every ``"A.B.LEAF": value`` of ``options``; returns ``cfg``."""
    for key, value in options.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def search_cfg(output_dir: str, **overrides: Any):
    """RetinaNet (1 head conv, FPN 32) over the tiny super net, 96 px, batch 2, CPU."""
    cfg = get_fna_cfg(os.path.join(REPO, "configs", "Base-FNA-RetinaNet.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.FNA.NETWORK = "super"
    cfg.MODEL.FNA.SEARCH_SPACE = "detection"
    cfg.MODEL.FNA.SEARCH_DEPTHS = list(TINY_DEPTHS)
    cfg.MODEL.FNA.SEED_WEIGHTS = ""
    cfg.MODEL.RETINANET.NUM_CLASSES = 1
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.DATASETS.TRAIN = ("fna_trees_train",)
    cfg.DATASETS.TEST = ("fna_trees_val",)
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    cfg.INPUT.MAX_SIZE_TRAIN = 96
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.INPUT.MAX_SIZE_TEST = 96
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MAX_ITER = 4
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.SOLVER.ARCH.BASE_LR = 0.01
    s = cfg.MODEL.FNA.SEARCH
    s.WARMUP_ITERS = 2
    s.COST_INPUT_SIZE = (96, 96)
    s.DERIVE_PERIOD = 2
    s.SEED = 3
    cfg.OUTPUT_DIR = str(output_dir)
    return set_options(cfg, overrides)


class Killed(RuntimeError):
    """Raised by :class:`KillAfter`."""


class KillAfter(HookBase):
    """Simulates a killed job: raises :class:`Killed` after iteration ``it`` (after its
    checkpoint)."""

    def __init__(self, it: int) -> None:
        self.it = it

    def after_step(self) -> None:
        if self.trainer.iter == self.it:
            raise Killed(f"killed after iteration {self.it}")
