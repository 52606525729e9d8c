"""Measuring a float model against its int8 copy: calibration batches from the training set
(through the test-time mapper), detectron2's evaluators on the test set, CPU latency with
``torch.utils.benchmark`` and the SQNR of one output."""
from __future__ import annotations

import itertools
import math
from typing import Any, Dict, List

import torch
from detectron2.config import CfgNode
from detectron2.evaluation import inference_on_dataset
from torch import nn
from torch.utils import benchmark

from ..engine.trainer import FNATrainer
from ..tasks import task_of
from ..errors import QuantizationError

__all__ = ["calibration_batches", "evaluate", "cpu_latency", "sqnr_db"]


def calibration_batches(cfg: CfgNode, n: int) -> List[List[Dict[str, Any]]]:
    """The first ``n`` images of ``DATASETS.TRAIN[0]`` as the test loader maps them (test-time
    resize, no augmentation): the inputs the int8 model will see."""
    if n < 1:
        raise QuantizationError(f"--calib-images {n}: give at least 1 calibration image")
    if not cfg.DATASETS.TRAIN:
        raise QuantizationError("DATASETS.TRAIN is empty: the calibration images come from "
                                "the training set")
    loader = FNATrainer.build_test_loader(cfg, cfg.DATASETS.TRAIN[0])
    return list(itertools.islice(iter(loader), n))


def evaluate(cfg: CfgNode, model: nn.Module, output_dir: str) -> Dict[str, Any]:
    """``model`` on ``DATASETS.TEST[0]`` with the trainer's evaluator: ``{"metric", "value",
    "results"}`` (the headline metric, AP or mIoU, and detectron2's full results)."""
    name = cfg.DATASETS.TEST[0]
    evaluator = FNATrainer.build_evaluator(cfg, name, output_dir)
    results = inference_on_dataset(model, FNATrainer.build_test_loader(cfg, name), evaluator)
    task, metric = task_of(cfg)
    section = results.get("sem_seg" if task == "segmentation" else "bbox", {})
    value = section.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise QuantizationError(f"the evaluation of {name} gave no {metric}: {results}")
    return {"dataset": name, "metric": metric, "value": float(value), "results": results}


def cpu_latency(fn, image: torch.Tensor, min_run_time: float = 2.0) -> Dict[str, float]:
    """Median and IQR of ``fn(image)`` in ms, by ``torch.utils.benchmark`` (batch 1, after a
    warm-up call), with the number of threads torch uses."""
    with torch.no_grad():
        fn(image)
        timer = benchmark.Timer(stmt="fn(image)", globals={"fn": fn, "image": image},
                                num_threads=torch.get_num_threads())
        m = timer.blocked_autorange(min_run_time=min_run_time)
    return {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3, "runs": len(m.times),
            "threads": torch.get_num_threads()}


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``ref`` in dB."""
    ref, test = ref.detach().float(), test.detach().float()
    noise = (ref - test).pow(2).mean().item()
    signal = ref.pow(2).mean().item()
    if noise == 0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)
