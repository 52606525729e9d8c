"""The search's time left, phase by phase: :class:`SearchMetricPrinter` (detectron2's
``CommonMetricPrinter`` with its ETA replaced by :func:`search_eta`).

detectron2 estimates the time left as median(iteration time) x iterations left. The search has
two phases of different cost: ``WARMUP_ITERS`` iterations of ``WEIGHT_STEPS`` weight steps, then
iterations that add ``ARCH_STEPS`` arch steps, each a *mixed* forward (every candidate of every
searchable layer) and its backward. During the warm-up that estimate is short by the whole
difference. Here::

    eta = warm-up iterations left x median(warm-up iteration time)
        + search iterations left  x median(search iteration time)

The search iteration's median is measured once a search iteration has been timed (detectron2's
``IterationTimer`` leaves out the first 3 iterations of a run); until then it is *estimated*
(printed "eta: ... (estimated)") as

    median(warm-up iteration) + ARCH_STEPS x (ratio x median(weight step) + data time per step)

with the weight step's compute time (``search/weight_step_time``, data loading excluded, from
:class:`~.step.SearchStepRunner`) and ``ratio`` = :func:`mixed_path_madds_ratio`: the MAdds of
a mixed forward of the whole model (all candidates + fixed layers + FPN + head) over those of
the expected path forward under the warm-up's uniform sampling. It takes the backward passes to
scale as their forwards do: the arch step's backward skips the weight gradients (weights are
frozen) but runs K candidates' elementwise ops (BN, activations, the softmax mix) that MAdds do
not count; on the demo the two roughly cancel (docs/pipeline.md gives the measured error).
``eta_seconds`` goes into the storage as detectron2's printer puts it.
"""
from __future__ import annotations

import copy
import datetime
import logging
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from detectron2.utils.events import CommonMetricPrinter, EventStorage, HistoryBuffer

from ...cost import detectron2_model_cost, op_cost_table
from ...modeling import find_supernet
from ...utils.models import unwrap_model

__all__ = ["SearchPhases", "Eta", "search_eta", "mixed_path_madds_ratio", "SearchMetricPrinter"]

logger = logging.getLogger(__name__)

#: how many of the latest iteration times a phase's median looks at (detectron2: 1000)
WINDOW = 1000
#: the per-step timings :class:`~.step.SearchStepRunner` puts into the storage
WEIGHT_STEP_TIME = "search/weight_step_time"
ARCH_STEP_TIME = "search/arch_step_time"


@dataclass(frozen=True)
class SearchPhases:
    """What the estimate needs of the schedule: warm-up length, steps per iteration, and the
    arch step's cost relative to a weight step's compute (:func:`mixed_path_madds_ratio`)."""

    warmup_iters: int
    arch_steps: int
    weight_steps: int
    arch_weight_ratio: float


@dataclass(frozen=True)
class Eta:
    """``seconds`` left; ``measured``: False while the search phase's iteration time is still
    the estimate (no search iteration timed yet, but some left)."""

    seconds: float
    measured: bool

    def __str__(self) -> str:
        s = str(datetime.timedelta(seconds=int(self.seconds)))
        return s if self.measured else f"{s} (estimated)"


def _phase_values(hist: Optional[HistoryBuffer], warmup_iters: int) -> Tuple[list, list]:
    if hist is None:
        return [], []
    vals = hist.values()
    warm = [v for v, i in vals if i < warmup_iters][-WINDOW:]
    search = [v for v, i in vals if i >= warmup_iters][-WINDOW:]
    return warm, search


def search_eta(histories: Mapping[str, HistoryBuffer], done: int, max_iter: int,
               phases: SearchPhases) -> Optional[Eta]:
    """The time left after ``done`` completed iterations of ``max_iter``, from the storage's
    histories (``time`` per iteration, ``data_time``, ``search/weight_step_time``); None when no
    iteration of a phase still to run can be timed or estimated yet."""
    w = phases.warmup_iters
    warm, search = _phase_values(histories.get("time"), w)
    left = max(0, int(max_iter) - int(done))
    warm_left = min(left, max(0, min(w, int(max_iter)) - int(done)))
    search_left = left - warm_left
    t_warm = float(np.median(warm)) if warm else None
    if warm_left and t_warm is None:
        return None
    measured = True
    t_search = 0.0
    if search_left:
        if search:
            t_search = float(np.median(search))
        else:
            if t_warm is None:
                return None
            t_search = t_warm + phases.arch_steps * _arch_step_estimate(histories, phases, t_warm)
            measured = False
    return Eta(warm_left * (t_warm or 0.0) + search_left * t_search, measured)


def _arch_step_estimate(histories: Mapping[str, HistoryBuffer], phases: SearchPhases,
                        t_warm: float) -> float:
    """ratio x median weight-step compute + data time per step; without step timings, the
    ratio times a weight step's share of the warm-up iteration."""
    w = phases.warmup_iters
    step, _ = _phase_values(histories.get(WEIGHT_STEP_TIME), w)
    data, _ = _phase_values(histories.get("data_time"), w)
    per_step_data = float(np.median(data)) / phases.weight_steps if data else 0.0
    if not step:
        return phases.arch_weight_ratio * t_warm / phases.weight_steps
    return phases.arch_weight_ratio * float(np.median(step)) + per_step_data


def _padded(size: Sequence[int], div: int) -> Tuple[int, int]:
    div = max(1, int(div or 1))
    return tuple(-(-int(v) // div) * div for v in size)  # type: ignore[return-value]


def mixed_path_madds_ratio(model: nn.Module, input_size: Sequence[int],
                           output_stride: Optional[int] = None) -> float:
    """MAdds of a mixed forward of ``model`` (a meta-architecture holding a super network) over
    those of the expected path under uniform sampling, at ``input_size`` (H, W; padded to the
    backbone's size divisibility). Counted on a "meta"-device copy (shapes only; the model, its
    modes and its RNG are untouched; the copy briefly holds a second set of weights where the
    model lives): mixed = the whole model's count in mixed mode; path =
    mixed - every candidate + each searchable layer's mean candidate (the analytic table,
    which equals the hook count of the backbone's convs)."""
    m = copy.deepcopy(unwrap_model(model)).to("meta")
    net = find_supernet(m)
    if net is None:
        raise ValueError("mixed_path_madds_ratio: the model holds no super network")
    net.set_mixed()
    size = _padded(input_size, getattr(getattr(m, "backbone", None), "size_divisibility", 1))
    mixed = detectron2_model_cost(m, size, meta=False)["total"].madds
    table = op_cost_table(net.space, size, "madds", output_stride=output_stride)
    every = sum(sum(row) for row in table) * 1e9
    mean = sum(sum(row) / len(row) for row in table) * 1e9
    path = mixed - every + mean
    return float(mixed / path) if path > 0 else 1.0


class SearchMetricPrinter(CommonMetricPrinter):
    """detectron2's console printer whose ETA (and ``eta_seconds``) is :func:`search_eta`'s;
    it falls back to detectron2's own estimate while no iteration has been timed."""

    def __init__(self, max_iter: int, phases: SearchPhases, window_size: int = 20) -> None:
        super().__init__(max_iter, window_size)
        self.max_iter = int(max_iter)
        self.phases = phases

    def _get_eta(self, storage: EventStorage) -> Optional[str]:
        eta = search_eta(storage.histories(), storage.iter + 1, self.max_iter, self.phases)
        if eta is None:
            return super()._get_eta(storage)
        storage.put_scalar("eta_seconds", eta.seconds, smoothing_hint=False)
        return str(eta)
