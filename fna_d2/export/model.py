"""The trained model to export: built from its config and loaded strictly from
``MODEL.WEIGHTS``, on the CPU, in eval mode; nothing is remapped from the seed.

A weights file that does not fit the model the config builds (another architecture, another
number of classes) is an :class:`~fna_d2.errors.ExportError` listing what differs, not
fvcore's "Skip loading parameter" warnings and a half-random export."""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Dict

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

from ..errors import ExportError

__all__ = ["load_trained_model", "read_model_weights"]


def read_model_weights(path: str) -> Dict[str, torch.Tensor]:
    """The model state dict of a detectron2 / fna_d2 checkpoint (``{"model": ...}``) or of a
    bare state dict, read with ``weights_only=True``."""
    if not path:
        raise ExportError("MODEL.WEIGHTS is empty: give the trained model, e.g. "
                          "MODEL.WEIGHTS output/.../model_final.pth")
    if not os.path.isfile(path):
        raise ExportError(f"MODEL.WEIGHTS = {path}: file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"MODEL.WEIGHTS = {path}: not a readable PyTorch checkpoint "
                          f"({first})") from None
    sd = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not sd or not all(
            isinstance(v, torch.Tensor) for v in sd.values()):
        raise ExportError(f"MODEL.WEIGHTS = {path}: holds no model state dict (expected a "
                          "checkpoint with a 'model' entry, as train_net.py and the pipeline "
                          "write)")
    return sd


def _first(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_trained_model(cfg: CfgNode) -> nn.Module:
    """``build_model(cfg)`` on the CPU with ``MODEL.WEIGHTS`` loaded strictly, in eval mode."""
    path = cfg.MODEL.WEIGHTS
    sd = read_model_weights(path)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    own = model.state_dict()
    # BN step counters are not weights: a checkpoint without them loads as well
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = ([f"missing {_first(missing)}"] if missing else []) + \
                ([f"unexpected {_first(unexpected)}"] if unexpected else []) + \
                ([f"shapes differ (checkpoint vs model): {_first(shapes, 2)}"] if shapes else [])
        arch = cfg.MODEL.FNA.ARCH or "the seed architecture"
        raise ExportError(f"MODEL.WEIGHTS = {path} does not fit the model the config builds "
                          f"(MODEL.FNA.ARCH: {arch}): {'; '.join(parts)}. Give the config the "
                          "model was trained with (its config.yaml)")
    model.load_state_dict(sd, strict=False)  # strict but for num_batches_tracked
    return model.eval()
