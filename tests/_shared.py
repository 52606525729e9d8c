"""Helpers shared by several test modules: a pipeline stage's manifest, importing a script of
``bench/`` by name, and giving a model's BatchNorms non-trivial running statistics (so that
eval-mode outputs depend on them)."""
from __future__ import annotations

import importlib
import json
import os
import sys

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stage_manifest(root: str, stage: str) -> dict:
    """The ``stage.json`` manifest of pipeline stage ``stage`` under the output folder ``root``."""
    with open(os.path.join(root, stage, "stage.json"), encoding="utf-8") as f:
        return json.load(f)


def bench_module(name: str):
    """``bench/<name>.py`` imported as a module (bench/ is on sys.path only while importing)."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))


def randomise_bn(model: nn.Module, seed: int = 1) -> None:
    """Seeded random running mean / var in every tracking BatchNorm2d of ``model``."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
