"""The processes of the training and evaluation stages: :func:`train_worker` and
:func:`eval_worker`, run through detectron2's ``launch`` by :func:`launch_worker` (one process:
called in place; several: spawned, gloo on CPU, NCCL on GPUs).

An :class:`~fna_d2.errors.FNAError` raised inside a spawned worker reaches the parent as
torch's ``ProcessRaisedException`` carrying a traceback text; :func:`launch_worker` raises the
worker's own error (same class, same one-line message) instead.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Optional, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.engine import launch
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from torch.multiprocessing import ProcessRaisedException

from .. import errors
from ..engine import build_trainer, evaluate_only
from ..user_imports import import_user_modules
from ..utils import read_json, write_json
from ..utils.logs import setup_logging
from .manifest import write_stage_json
from .results import to_plain

__all__ = ["train_worker", "eval_worker", "launch_worker"]


def _setup_worker(cfg: CfgNode, threads: int) -> None:
    """Logging for spawned workers and the torch thread count."""
    if threads > 0:
        torch.set_num_threads(threads)
    if comm.get_world_size() > 1:  # spawned processes start without handlers
        setup_logging(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank())


def train_worker(cfg: CfgNode, result_path: str, threads: int = 0,
                 config_file: Optional[str] = None) -> None:
    """Train (or search) with ``cfg``, resuming from ``cfg.OUTPUT_DIR``'s last checkpoint if
    any; rank 0 writes the trainer's final evaluation (if it ran one) to ``result_path``.
    ``config_file``: the stage's config file, recorded by the search in its outputs."""
    _setup_worker(cfg, threads)
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
    trainer = build_trainer(cfg, config_file=config_file)
    trainer.resume_or_load(resume=True)
    results = trainer.train()
    if comm.is_main_process():
        write_stage_json(result_path, {"results": to_plain(results)})


def eval_worker(cfg: CfgNode, result_path: str, threads: int = 0) -> None:
    """Evaluate ``cfg.MODEL.WEIGHTS`` on ``cfg.DATASETS.TEST``; rank 0 writes the results."""
    _setup_worker(cfg, threads)
    results = evaluate_only(cfg, resume=False)
    if comm.is_main_process():
        write_stage_json(result_path, {"results": to_plain(results)})


def _guarded(fn: Callable, error_path: str, imports: Sequence[str], *args: Any) -> None:
    """Run ``fn(*args)`` in a spawned worker, after importing the user's ``imports`` (a fresh
    interpreter has none of the parent's registrations); an FNAError is also written to
    ``error_path`` (class name and message) so that the parent can raise it again."""
    try:
        import_user_modules(imports)
        fn(*args)
    except errors.FNAError as e:
        if not os.path.exists(error_path):  # the first rank to fail tells
            write_json(error_path, {"type": type(e).__name__, "message": str(e),
                                    "rank": comm.get_rank()})
        raise


def launch_worker(fn: Callable, num_gpus: int, dist_url: str, *args: Any,
                  imports: Sequence[str] = ()) -> None:
    """``fn(*args)`` in ``num_gpus`` processes through detectron2's ``launch``, each importing
    ``imports`` (:func:`~fna_d2.user_imports.import_user_modules`) first."""
    if num_gpus <= 1:
        import_user_modules(imports)  # this process: imported already by the pipeline, a no-op
        launch(fn, num_gpus, dist_url=dist_url, args=args)
        return
    with tempfile.TemporaryDirectory(prefix="fna_d2_worker_") as tmp:
        error_path = os.path.join(tmp, "error.json")
        try:
            launch(_guarded, num_gpus, dist_url=dist_url,
                   args=(fn, error_path, list(imports)) + tuple(args))
        except ProcessRaisedException:
            err = read_json(error_path)
            if not err:
                raise
            cls = getattr(errors, str(err.get("type")), None)
            if not (isinstance(cls, type) and issubclass(cls, errors.FNAError)):
                cls = errors.FNAError
            raise cls(f"{err['message']} (in worker process {err.get('rank')})") from None
