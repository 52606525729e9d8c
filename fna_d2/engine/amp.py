"""Mixed precision settings shared by both trainers (``SOLVER.AMP.*``): which autocast dtype,
on which device type, and whether a gradient scaler is needed. This module is the one place
``SOLVER.AMP.ENABLED`` and ``SOLVER.AMP.PRECISION`` are read and checked.

* ``SOLVER.AMP.PRECISION`` is ``"float16"`` (the default, detectron2's ``AMPTrainer``'s) or
  ``"bfloat16"``; anything else is a :class:`~fna_d2.errors.ConfigError` naming the key.
* The device type is the model's (``cuda`` or ``cpu``). float16 on CPU is refused (bfloat16 is
  CPU's mixed precision format: float16 there is emulated and needs loss scaling for nothing).
* float16 needs a :class:`torch.amp.GradScaler` (its small exponent range underflows
  gradients); bfloat16 has float32's range and needs none, so its scaler is a disabled one:
  ``scale``/``step``/``update`` are then plain ``loss``/``optimizer.step()``/no-op and its
  ``state_dict()`` is ``{}``.

The trainers use an :class:`AmpSettings` as ``with amp.autocast(): loss = model(data)``, and
``amp.grad_scaler()`` for each optimizer that steps on its own backward pass: the search's
``SearchStepRunner`` for its two steps; adaptation (``FNATrainer``) through detectron2's
``AMPTrainer`` on CUDA and :class:`AutocastTrainer` (bfloat16) on CPU.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, Iterable, Optional

import torch
from torch import nn

from detectron2.config import CfgNode
from detectron2.engine import SimpleTrainer

from ..errors import ConfigError

__all__ = ["PRECISIONS", "DEFAULT_PRECISION", "AmpSettings", "parse_precision",
           "amp_settings", "AutocastTrainer"]

#: accepted ``SOLVER.AMP.PRECISION`` values and their dtypes
PRECISIONS: Dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16}
#: ``SOLVER.AMP.PRECISION`` when a config does not set it (detectron2's AMPTrainer default)
DEFAULT_PRECISION = "float16"


@dataclasses.dataclass(frozen=True)
class AmpSettings:
    """Autocast on ``device_type`` in ``dtype`` when ``enabled``; float32 otherwise."""

    enabled: bool = False
    device_type: str = "cpu"
    dtype: torch.dtype = torch.float32

    @property
    def precision(self) -> str:
        """"float32" when disabled, else the ``SOLVER.AMP.PRECISION`` name."""
        if not self.enabled:
            return "float32"
        return next(k for k, v in PRECISIONS.items() if v == self.dtype)

    @property
    def needs_scaler(self) -> bool:
        """True for float16 autocast (bfloat16 and float32 need no loss scaling)."""
        return self.enabled and self.dtype == torch.float16

    def autocast(self) -> torch.autocast:
        """The autocast context for forward passes (a disabled one when AMP is off)."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A fresh gradient scaler: enabled for float16 only."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)


def parse_precision(value: Any) -> torch.dtype:
    """The dtype named by a ``SOLVER.AMP.PRECISION`` value, or :class:`ConfigError`."""
    if value not in PRECISIONS:
        raise ConfigError(
            f"SOLVER.AMP.PRECISION: unknown precision {value!r}; allowed: "
            f"{', '.join(repr(k) for k in PRECISIONS)}")
    return PRECISIONS[value]


def amp_settings(cfg: CfgNode, device: Optional[torch.device] = None) -> AmpSettings:
    """``SOLVER.AMP`` for a model on ``device`` (default ``MODEL.DEVICE``), checked: a bad
    ``PRECISION`` or float16 on CPU raise :class:`ConfigError` naming the key and the fix.
    ``PRECISION`` is checked even with AMP off, so a typo does not wait for the day it is on."""
    amp = cfg.SOLVER.AMP
    dtype = parse_precision(amp.get("PRECISION", DEFAULT_PRECISION))
    device_type = torch.device(device if device is not None else cfg.MODEL.DEVICE).type
    if not amp.ENABLED:
        return AmpSettings(False, device_type)
    if device_type not in ("cuda", "cpu"):
        raise ConfigError(f"SOLVER.AMP.ENABLED: mixed precision runs on 'cuda' or 'cpu' models, "
                          f"this one is on {device_type!r}; set SOLVER.AMP.ENABLED False")
    if device_type == "cpu" and dtype == torch.float16:
        raise ConfigError(
            "SOLVER.AMP.PRECISION 'float16' on a CPU model (MODEL.DEVICE 'cpu'): use "
            "SOLVER.AMP.PRECISION 'bfloat16' on CPU (float16 is a GPU format), or train on "
            "'cuda'")
    return AmpSettings(True, device_type, dtype)


class AutocastTrainer(SimpleTrainer):
    """detectron2's :class:`SimpleTrainer` with the forward pass (and the loss) under
    ``amp.autocast()``, for bfloat16 on any device: detectron2's ``AMPTrainer`` asserts CUDA
    and uses ``torch.cuda.amp``, so adaptation on CPU with ``SOLVER.AMP`` runs here. bfloat16
    needs no gradient scaler, so the backward pass and the step are the plain ones (outside
    autocast) and the checkpointed state is ``SimpleTrainer``'s."""

    def __init__(self, model: nn.Module, data_loader: Iterable[Any],
                 optimizer: torch.optim.Optimizer, amp: AmpSettings) -> None:
        if amp.needs_scaler:
            raise ValueError("AutocastTrainer runs without a gradient scaler: bfloat16 only")
        super().__init__(model, data_loader, optimizer)
        self.amp = amp

    def run_step(self) -> None:
        assert self.model.training, "[AutocastTrainer] model was changed to eval mode!"
        t0 = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - t0
        with self.amp.autocast():
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()
