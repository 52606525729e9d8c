"""Entry points used by ``train_net.py`` and the pipeline: :func:`build_trainer` picks the
search or the adaptation trainer from the config, :func:`evaluate_only` evaluates weights.
The only engine module that knows both trainers."""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Dict, Optional

from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer

from ..modeling.sliding_window import check_sliding_window_meta_arch
from .data import check_datasets
from .search import SearchTrainer
from .trainer import FNATrainer

__all__ = ["build_trainer", "evaluate_only"]

logger = logging.getLogger(__name__)


def build_trainer(cfg: CfgNode, *, config_file: Optional[str] = None) -> DefaultTrainer:
    """:class:`~fna_d2.engine.search.SearchTrainer` when ``MODEL.FNA.NETWORK == "super"``,
    else :class:`~fna_d2.engine.trainer.FNATrainer`. ``config_file``: the YAML ``cfg`` was
    read from, recorded in the search's ``searched_arch.json`` (None records null)."""
    if cfg.MODEL.FNA.NETWORK == "super":
        return SearchTrainer(cfg, config_file=config_file)
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
