"""One iteration of FNA's search (sec. 5): :class:`SearchStepRunner`.

**One iteration is one cycle.** During the warm-up (the first ``WARMUP_ITERS`` iterations) a
cycle is ``WEIGHT_STEPS`` weight steps on uniformly sampled paths; afterwards it is
``ARCH_STEPS`` arch steps followed by ``WEIGHT_STEPS`` weight steps on paths sampled from
softmax(alpha).

* arch step (weights frozen: no gradient reaches them and BN statistics are left untouched):
  every candidate runs, mixed by softmax(alpha); loss = task loss +
  ``LAMBDA * log(COST_SCALE * expected_cost) / log(TAU)`` (with ``TARGET_COST``:
  ``LAMBDA * max(0, log(expected_cost / target)) / log(TAU)``); Adam updates alpha on a batch
  of the arch stream.
* weight step (alpha frozen): one op per layer, sampled with a :class:`torch.Generator` seeded
  by ``SEED`` that advances identically on every rank (rank 0's path is also broadcast and any
  disagreement is counted); detectron2's SGD updates the sampled path's weights (and, with
  ``UPDATE_UNSAMPLED_OPS``, applies momentum and weight decay to ops sampled before) on a batch
  of the weight stream.

Mixed precision (``SOLVER.AMP``, :class:`~fna_d2.engine.amp.AmpSettings`): both steps run
their forward pass under autocast; the alphas, softmax(alpha) . cost table and the log cost
loss stay float32 (computed outside autocast). With float16 each step has its own
:class:`torch.amp.GradScaler` (``grad_scaler`` for the weight step's SGD, ``arch_grad_scaler``
for the arch step's Adam: two backward passes of different losses, each scaled, unscaled before
its optimizer's step, and skipped on overflow); bfloat16 needs none (the scalers are disabled).

Each iteration also records the steps' compute times, data loading excluded (on CUDA after a
synchronize): ``search/weight_step_time`` and, after the warm-up, ``search/arch_step_time``
(means over the iteration's steps; the search's ETA, :mod:`.eta`, reads them).

The runner owns both data streams, the arch optimizer, the sampling generator and the
scalers, and checkpoints them with detectron2's trainer state (``state_dict()["search"]``).
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from ...cost import expected_cost
from ...utils.collectives import all_gather_object, broadcast_object
from ...utils.freeze import frozen, frozen_bn_statistics
from ..amp import AmpSettings
from .config import SearchSchedule
from .diagnostics import AlphaStats, alpha_stats, collapse_flags, collapse_warning
from .state import (STATE_VERSION, check_resumable, own_rank_state, rank_state,
                    restore_module_attrs, space_signature)
from .streams import DataStream, mix_seed

__all__ = ["SearchStepRunner"]

logger = logging.getLogger(__name__)

Log = Dict[str, Any]


def _mean_dicts(dicts: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    return {k: sum(d[k].detach() for d in dicts) / len(dicts) for k in dicts[0]}


def _next_batch(stream: DataStream) -> Tuple[List[Dict[str, Any]], float]:
    t0 = time.perf_counter()
    data = stream.next()
    return data, time.perf_counter() - t0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


class SearchStepRunner(SimpleTrainer):
    """The search loop body; ``run_step`` is one cycle of FNA's alternation (module doc)."""

    def __init__(self, model: nn.Module, net: nn.Module, weight_stream: DataStream,
                 arch_stream: DataStream, optimizer: torch.optim.Optimizer,
                 arch_optimizer: torch.optim.Optimizer, cost_table: Sequence[Sequence[float]],
                 schedule: SearchSchedule, rng_seed: int, split_fingerprint: str = "",
                 amp: AmpSettings = AmpSettings()) -> None:
        super().__init__(model, weight_stream.loader, optimizer)
        self.amp = amp
        self.grad_scaler = amp.grad_scaler()
        self.arch_grad_scaler = amp.grad_scaler()
        self.net = net
        self.alphas = list(net.arch_parameters())
        alpha_ids = {id(a) for a in self.alphas}
        self.weights = [p for p in model.parameters() if id(p) not in alpha_ids]
        self.weight_stream, self.arch_stream = weight_stream, arch_stream
        self.arch_optimizer = arch_optimizer
        self.cost_table = [list(map(float, row)) for row in cost_table]
        self.schedule = schedule
        self.rng_seed = int(rng_seed)
        self.generator = torch.Generator()
        self.generator.manual_seed(self.rng_seed)
        self.split_fingerprint = split_fingerprint
        self.recent_paths: deque = deque(maxlen=1000)  # (iteration, mode, path) of weight steps
        self.path_mismatches = 0
        self.last_healthy: Optional[Tuple[int, List[int]]] = None  # (iterations done, argmax)
        self.stop_reason = ""
        self._state = ""  # "", "skip_heavy" or "collapsed": for warnings on change only
        self.rank_states: Optional[List[Dict[str, Any]]] = None  # every rank's, last iteration
        # per-step timings (search/*_step_time) wait for the GPU's work on a CUDA model
        self._sync_timing = bool(self.weights) and self.weights[0].is_cuda

    # -- one iteration
    def run_step(self) -> None:
        """One cycle: [ARCH_STEPS arch steps, unless warming up] + WEIGHT_STEPS weight steps."""
        assert self.model.training, "[SearchStepRunner] model was changed to eval mode!"
        s = self.schedule
        warming_up = self.iter < s.warmup_iters
        with self._reproducible():
            arch_logs = [] if warming_up else [self.arch_step() for _ in range(s.arch_steps)]
            mode = "uniform" if warming_up else "softmax"
            weight_logs = [self.weight_step(mode) for _ in range(s.weight_steps)]
        stats = alpha_stats(self.net)
        self._write_search_metrics(weight_logs, arch_logs, stats)
        self._watch_collapse(stats)
        # every rank's own state, for the checkpoint rank 0 may write after this iteration
        self.rank_states = all_gather_object(rank_state(self.model))

    def arch_step(self) -> Log:
        """Mixed ops, weights frozen: alpha <- Adam(task loss + cost loss) on an arch batch."""
        data, data_time = _next_batch(self.arch_stream)
        t0 = self._now()
        self.net.set_mixed()
        with frozen(self.weights), frozen_bn_statistics(self.model):
            with self.amp.autocast():
                loss_dict = self.model(data)
            task_loss = sum(loss_dict.values())
            cost = self.expected_cost()  # float32: alphas and the table, outside autocast
            cost_loss = self.cost_loss(cost)
            self.arch_optimizer.zero_grad(set_to_none=True)
            scaler = self.arch_grad_scaler
            scaler.scale(task_loss + cost_loss).backward()
            scaler.step(self.arch_optimizer)
            scaler.update()
        return {"losses": loss_dict, "cost": cost.detach(), "cost_loss": cost_loss.detach(),
                "data_time": data_time, "step_time": self._now() - t0}

    def weight_step(self, mode: str) -> Log:
        """One sampled path, alpha frozen: weights <- SGD(task loss) on a weight batch."""
        data, data_time = _next_batch(self.weight_stream)
        t0 = self._now()
        self.net.set_path(self.sample_path(mode))
        with frozen(self.alphas):
            with self.amp.autocast():
                loss_dict = self.model(data)
            losses = sum(loss_dict.values())
            # None: ops off the path get no update at all; zeros (UPDATE_UNSAMPLED_OPS, the
            # release): ops sampled before still get momentum and weight decay
            self.optimizer.zero_grad(set_to_none=not self.schedule.update_unsampled_ops)
            self.grad_scaler.scale(losses).backward()
            self.after_backward()
            # unscales the gradients first, so SOLVER.CLIP_GRADIENTS (inside the optimizer's
            # step) clips true values; skips the step when float16 overflowed
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        return {"losses": loss_dict, "data_time": data_time, "step_time": self._now() - t0}

    def _now(self) -> float:
        """The clock of the per-step timings (after the GPU's queued work, on CUDA)."""
        if self._sync_timing:
            torch.cuda.synchronize()
        return time.perf_counter()

    # -- pieces of the algorithm
    def expected_cost(self) -> torch.Tensor:
        """sum over searchable layers of softmax(alpha / T) . cost_table[layer] (differentiable;
        T: the super network's temperature, ``MODEL.FNA.SEARCH.TEMPERATURE``)."""
        return expected_cost(self.alphas, self.cost_table, temperature=self.net.temperature)

    def cost_loss(self, cost: torch.Tensor) -> torch.Tensor:
        """``LAMBDA * log(COST_SCALE * cost) / log(TAU)``; with a target (``TARGET_COST``)
        ``LAMBDA * max(0, log(cost / target)) / log(TAU)``: the same pull above the budget,
        none below it."""
        s = self.schedule
        if s.target is not None:
            return s.lam * torch.clamp(torch.log(cost / s.target), min=0.0) / math.log(s.tau)
        return s.lam * torch.log(s.cost_scale * cost) / math.log(s.tau)

    def sample_path(self, mode: str) -> List[int]:
        """Sample with the shared generator (same draws on every rank); rank 0's path wins."""
        path = self.net.sample_path(mode, self.generator)
        if comm.get_world_size() > 1:
            agreed = [int(i) for i in broadcast_object(list(path), src=0)]
            if agreed != path:
                self.path_mismatches += 1
                logger.warning(f"rank {comm.get_rank()} sampled {path} but rank 0 sampled "
                               f"{agreed}; using rank 0's path")
            path = agreed
        self.recent_paths.append((self.iter, mode, list(path)))
        return path

    @contextmanager
    def _reproducible(self) -> Iterator[None]:
        """Make the iteration a function of the checkpointed state: in-model randomness
        (dropout, sampling) is seeded from (rng_seed, iteration, rank), and TorchScript functions
        (RetinaNet's focal loss) run unoptimised, since the profiling executor re-optimises
        them after warm-up calls and changes their results in the last bits."""
        torch.manual_seed(mix_seed(self.rng_seed, "iteration", self.iter, comm.get_rank()))
        with torch.jit.optimized_execution(False):
            yield

    # -- metrics and diagnostics
    def _write_search_metrics(self, weight_logs: List[Log], arch_logs: List[Log],
                              stats: AlphaStats) -> None:
        self._write_metrics(_mean_dicts([w["losses"] for w in weight_logs]),
                            sum(w["data_time"] for w in weight_logs))
        storage = get_event_storage()
        if arch_logs:
            arch_losses = _mean_dicts([a["losses"] for a in arch_logs])
            self._write_metrics({f"arch/{k}": v for k, v in arch_losses.items()},
                                sum(a["data_time"] for a in arch_logs), prefix="arch/")
            cost = float(arch_logs[-1]["cost"])
            storage.put_scalar("search/cost_loss", float(arch_logs[-1]["cost_loss"]),
                               smoothing_hint=False)
        else:
            with torch.no_grad():
                cost = float(self.expected_cost())
        if self.schedule.target is not None:
            storage.put_scalar("search/expected_cost_to_target", cost / self.schedule.target,
                               smoothing_hint=False)
        storage.put_scalars(smoothing_hint=False, **{
            "search/expected_cost": cost,
            "search/entropy": stats.entropy,
            "search/skip_ratio": stats.skip_ratio,
            "search/alpha_lr": self.arch_optimizer.param_groups[0]["lr"],
            "search/warmup": float(self.iter < self.schedule.warmup_iters),
            # seconds per step, data loading excluded (the search's ETA, :mod:`.eta`)
            "search/weight_step_time": _mean([w["step_time"] for w in weight_logs]),
        })
        if arch_logs:
            storage.put_scalar("search/arch_step_time", _mean([a["step_time"] for a in arch_logs]),
                               smoothing_hint=False)
        if not math.isnan(stats.skip_entropy):
            storage.put_scalar("search/skip_entropy", stats.skip_entropy, smoothing_hint=False)
        if self.path_mismatches:
            storage.put_scalar("search/path_mismatches", self.path_mismatches,
                               smoothing_hint=False)

    def _watch_collapse(self, stats: AlphaStats) -> None:
        """Apply the collapse rule (:mod:`.diagnostics`): log its flags, warn when they change,
        remember the last healthy argmax, stop (all ranks together) on collapse if asked."""
        s, done = self.schedule, self.iter + 1
        skip_heavy, collapsed = collapse_flags(stats, s.skip_ratio_limit, s.entropy_limit)
        storage = get_event_storage()
        storage.put_scalar("search/skip_heavy", float(skip_heavy), smoothing_hint=False)
        storage.put_scalar("search/collapsed", float(collapsed), smoothing_hint=False)
        state = "collapsed" if collapsed else ("skip_heavy" if skip_heavy else "")
        if state and state != self._state:
            logger.warning(collapse_warning(stats, done, collapsed, s.skip_ratio_limit,
                                            s.entropy_limit))
        self._state = state
        if not skip_heavy:
            self.last_healthy = (done, list(stats.argmax))
        stop = collapsed and s.stop_on_collapse
        stop = bool(broadcast_object(bool(stop), src=0))  # every rank leaves the loop together
        if stop:
            self.stop_reason = (f"collapse at iteration {done} (skip ratio "
                                f"{stats.skip_ratio:.2f}, skip-layer entropy "
                                f"{stats.skip_entropy:.3f})")

    # -- checkpointing
    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        ret["search"] = {
            "version": STATE_VERSION,
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "weight_stream": self.weight_stream.state_dict(),
            "arch_stream": self.arch_stream.state_dict(),
            "split_fingerprint": self.split_fingerprint,
            "space": space_signature(self.net),
            "last_healthy": self.last_healthy,
            "path_mismatches": self.path_mismatches,
            "precision": self.amp.precision,
            "grad_scalers": {"weight": self.grad_scaler.state_dict(),
                             "arch": self.arch_grad_scaler.state_dict()},
            "ranks": self.rank_states or [rank_state(self.model)],
        }
        return ret

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Resume (after :func:`~.state.check_resumable` accepted the checkpoint); each rank
        restores its own per-rank state (:func:`~.state.own_rank_state`)."""
        s = check_resumable(state_dict.get("search"), space_signature(self.net),
                            self.split_fingerprint)
        super().load_state_dict(state_dict)
        self.arch_optimizer.load_state_dict(s["arch_optimizer"])
        self.generator.set_state(s["generator"])
        self.weight_stream.load_state_dict(s["weight_stream"])
        self.arch_stream.load_state_dict(s["arch_stream"])
        self.last_healthy = tuple(s["last_healthy"]) if s.get("last_healthy") else None
        self.path_mismatches = int(s.get("path_mismatches", 0))
        self._load_scalers(s)
        mine = own_rank_state(s, comm.get_rank(), comm.get_world_size())
        restore_module_attrs(self.model, mine.get("module_attrs", {}))

    def _load_scalers(self, s: Dict[str, Any]) -> None:
        saved = s.get("precision", "float32")  # version 1 had no AMP
        if saved != self.amp.precision:
            logger.warning(f"the search checkpoint ran in {saved}, this run in "
                           f"{self.amp.precision} (SOLVER.AMP): it continues, not bit-exact")
        scalers = s.get("grad_scalers", {})
        for name, scaler in (("weight", self.grad_scaler), ("arch", self.arch_grad_scaler)):
            if scaler.is_enabled():
                if scalers.get(name):
                    scaler.load_state_dict(scalers[name])
                else:
                    logger.warning(f"the search checkpoint has no float16 gradient scaler "
                                   f"state for the {name} step: it starts from the initial "
                                   f"scale")
