"""Architecture adaptation: :class:`SearchTrainer` (FNA sec. 5) and its :class:`SearchStepRunner`.

**One iteration is one cycle.** During the warm-up (the first ``MODEL.FNA.SEARCH.WARMUP_ITERS``
iterations) a cycle is ``WEIGHT_STEPS`` weight steps on uniformly sampled paths; afterwards it is
``ARCH_STEPS`` arch steps followed by ``WEIGHT_STEPS`` weight steps on paths sampled from
softmax(alpha). ``SOLVER.MAX_ITER``, ``SOLVER.STEPS``, the LR warm-up and checkpoint periods are
counted in these iterations (with the paper's 1 : 1, one iteration = one weight step).

* arch step (weights frozen: no gradient reaches them and BN statistics are left untouched):
  every candidate runs, mixed by softmax(alpha); loss = task loss +
  ``LAMBDA * log(COST_SCALE * expected_cost) / log(TAU)``; Adam (``SOLVER.ARCH.*``) updates
  alpha on a batch of the arch half of ``DATASETS.TRAIN``.
* weight step (alpha frozen): one op per layer, sampled with a :class:`torch.Generator` seeded
  by ``MODEL.FNA.SEARCH.SEED`` that advances identically on every rank (rank 0's path is also
  broadcast and any disagreement is counted); detectron2's SGD with its scheduler, warm-up and
  gradient clipping updates every weight of the model on a batch of the weight half.

Reproducibility and resume: the two halves are read through :class:`DataStream` s whose
position is checkpointed (the sampler is an infinite, per-epoch-seeded shuffle that can restart
at any position; aspect-ratio grouping is off), augmentations are seeded per sample from its
stream position, and torch's global RNG is re-seeded from (seed, iteration, rank) at each
iteration; the super network's initialisation (alphas included) is seeded by the same seed.
The trainer state adds the arch optimizer, the sampling generator, the stream
positions, the split fingerprint and the search-space signature, so a killed run resumed with
``--resume`` reaches bit-identical alphas (same device and thread count).

Outputs (rank 0; JSON and PNG written atomically): ``OUTPUT_DIR/arch/arch_iter{N:07d}.json``
every ``DERIVE_PERIOD`` iterations (N = completed iterations) and at the end,
``OUTPUT_DIR/searched_arch.json`` (the input of parameter adaptation's ``MODEL.FNA.ARCH``),
``alpha_probs.json``, ``alpha_heatmap.png``, ``search_curves.png``, ``search_split.json``.

Collapse rule: ``skip_ratio`` = share of the skip-capable searchable layers whose argmax is
``skip``; ``skip_entropy`` = mean normalised entropy (entropy / log(#candidates), in [0, 1]) of
softmax(alpha) over those layers. The search is *skip-heavy* when ``skip_ratio >
COLLAPSE_SKIP_RATIO`` (warning, metric ``search/skip_heavy``) and *collapsed* when it is also
committed to that choice, ``skip_entropy < COLLAPSE_ENTROPY`` (warning, metric
``search/collapsed``). With ``STOP_ON_COLLAPSE`` the search stops at the first collapsed
iteration and ``searched_arch.json`` is the last architecture that was not skip-heavy.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
import weakref
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from detectron2.config import CfgNode
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.build import build_batch_data_loader
from detectron2.engine import DefaultTrainer, HookBase, SimpleTrainer, TrainerBase, hooks
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.events import EventStorage, get_event_storage
from detectron2.utils.logger import setup_logger

from ..errors import SearchResumeError  # noqa: F401  (defined there; re-exported)
from ..arch import SKIP, Arch, save_arch
from ..config import ConfigError
from ..data.split import DataSplit, make_split, save_split
from .plots import merge_series, plot_alpha_heatmap, plot_search_curves, read_metrics_json
from .trainer import FNATrainer, check_datasets, ddp_model, train_mapper

__all__ = ["SearchTrainer", "SearchStepRunner", "SearchSchedule", "SearchResumeError",
           "DataStream", "StreamSampler", "AlphaStats", "alpha_stats", "check_search_cfg",
           "COST_TYPES", "STATE_VERSION"]

logger = logging.getLogger(__name__)

COST_TYPES = ("madds", "latency")
STATE_VERSION = 1


# ----------------------------------------------------------------------------- config
def check_search_cfg(cfg: CfgNode) -> None:
    """Raise :class:`~fna_d2.config.ConfigError` for search settings that cannot work."""
    s = cfg.MODEL.FNA.SEARCH
    if s.COST not in COST_TYPES:
        raise ConfigError(f"MODEL.FNA.SEARCH.COST: unknown cost type {s.COST!r}; known: "
                          f"{', '.join(COST_TYPES)}")
    if not s.LAMBDA > 0:
        raise ConfigError(f"MODEL.FNA.SEARCH.LAMBDA must be > 0, got {s.LAMBDA} (the cost term "
                          f"is LAMBDA * log(COST_SCALE * cost) / log(TAU))")
    if not s.TAU > 1:
        raise ConfigError(f"MODEL.FNA.SEARCH.TAU must be > 1 (log(TAU) divides the cost term), "
                          f"got {s.TAU}")
    if not s.COST_SCALE > 0:
        raise ConfigError(f"MODEL.FNA.SEARCH.COST_SCALE must be > 0, got {s.COST_SCALE}")
    for key in ("ARCH_STEPS", "WEIGHT_STEPS"):
        if int(s[key]) < 1:
            raise ConfigError(f"MODEL.FNA.SEARCH.{key} must be >= 1, got {s[key]}")
    if int(s.WARMUP_ITERS) < 0 or int(s.DERIVE_PERIOD) < 0:
        raise ConfigError("MODEL.FNA.SEARCH.WARMUP_ITERS and DERIVE_PERIOD must be >= 0")
    if not 0.0 < float(s.ARCH_SPLIT) < 1.0:
        raise ConfigError(f"MODEL.FNA.SEARCH.ARCH_SPLIT must be in (0, 1), got {s.ARCH_SPLIT}")
    if len(s.COST_INPUT_SIZE) != 2 or min(s.COST_INPUT_SIZE) <= 0:
        raise ConfigError(f"MODEL.FNA.SEARCH.COST_INPUT_SIZE must be (H, W), got "
                          f"{s.COST_INPUT_SIZE}")
    for key in ("COLLAPSE_SKIP_RATIO", "COLLAPSE_ENTROPY"):
        if not 0.0 <= float(s[key]) <= 1.0:
            raise ConfigError(f"MODEL.FNA.SEARCH.{key} must be in [0, 1], got {s[key]}")
    if int(s.LATENCY_THREADS) < 0:
        raise ConfigError(f"MODEL.FNA.SEARCH.LATENCY_THREADS must be >= 0, got "
                          f"{s.LATENCY_THREADS}")
    if int(s.LATENCY_REPEATS) < 1:
        raise ConfigError(f"MODEL.FNA.SEARCH.LATENCY_REPEATS must be >= 1, got "
                          f"{s.LATENCY_REPEATS}")


# ----------------------------------------------------------------------------- data
def _mix(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (stable across runs and platforms)."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class StreamSampler(Sampler):
    """Infinite shuffled stream of ``(position, index)`` over ``range(size)``.

    Epoch ``e`` is ``randperm(size)`` seeded by ``(seed, e)``, so any position can be reached
    without replaying the stream. Rank ``r`` of ``w`` takes global positions ``r, r + w, ...``
    starting after ``start`` of its own samples (set before iterating, e.g. on resume)."""

    def __init__(self, size: int, seed: int) -> None:
        if size <= 0:
            raise ValueError(f"StreamSampler needs a non-empty dataset, got size {size}")
        self.size, self.seed = int(size), int(seed)
        self.rank, self.world = comm.get_rank(), comm.get_world_size()
        self.start = 0

    def _perm(self, epoch: int) -> List[int]:
        g = torch.Generator()
        g.manual_seed(_mix(self.seed, "epoch", epoch))
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        k, epoch, perm = self.start, -1, []
        while True:
            pos = k * self.world + self.rank
            e, j = divmod(pos, self.size)
            if e != epoch:
                epoch, perm = e, self._perm(e)
            yield pos, perm[j]
            k += 1


class SeededMapDataset(Dataset):
    """``mapper(dicts[index])`` for keys ``(position, index)``, with NumPy's global RNG (used
    by detectron2's augmentations) seeded from ``(seed, position)`` during the call."""

    def __init__(self, dicts: Sequence[Dict[str, Any]], mapper, seed: int) -> None:
        self.dicts, self.mapper, self.seed = list(dicts), mapper, int(seed)

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, key: Tuple[int, int]) -> Dict[str, Any]:
        pos, index = key
        state = np.random.get_state()
        np.random.seed(_mix(self.seed, "sample", pos) % (2 ** 32))
        try:
            out = self.mapper(self.dicts[index])
        finally:
            np.random.set_state(state)
        if out is None:
            name = self.dicts[index].get("file_name")
            raise RuntimeError(f"the train mapper returned None for {name}")
        return out


class DataStream:
    """A batched loader over one half of the split that knows how many batches it has given
    out (its checkpointable position)."""

    def __init__(self, name: str, dicts: Sequence[Dict[str, Any]], mapper, seed: int,
                 total_batch_size: int, num_workers: int) -> None:
        self.name = name
        self.sampler = StreamSampler(len(dicts), _mix(seed, name))
        self.batch_size = total_batch_size // comm.get_world_size()
        self.loader = build_batch_data_loader(
            SeededMapDataset(dicts, mapper, _mix(seed, name, "aug")), self.sampler,
            total_batch_size, aspect_ratio_grouping=False, num_workers=num_workers)
        self.consumed = 0
        self._it: Optional[Iterator] = None

    def next(self) -> List[Dict[str, Any]]:
        if self._it is None:
            self.sampler.start = self.consumed * self.batch_size
            self._it = iter(self.loader)
        batch = next(self._it)
        self.consumed += 1
        return batch

    def state_dict(self) -> Dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.consumed = int(state["consumed"])
        self._it = None


# ----------------------------------------------------------------------------- alpha stats
@dataclass
class AlphaStats:
    """softmax(alpha) per searchable layer and the collapse diagnostics derived from it."""

    probs: List[List[float]]
    argmax: List[int]
    entropy: float        # mean normalised entropy over all searchable layers
    skip_entropy: float   # ... over the layers that offer skip (nan if none)
    skip_ratio: float     # share of skip-capable layers whose argmax is skip (0 if none)


def alpha_stats(net: nn.Module) -> AlphaStats:
    probs, argmax, ent, skip_ent, skips = [], [], [], [], []
    for m in net.mixed_ops():
        p = torch.softmax(m.alpha.detach().double().cpu(), 0)
        h = float(-(p * p.clamp_min(1e-300).log()).sum()) / math.log(len(p))
        probs.append(p.tolist())
        argmax.append(int(p.argmax()))
        ent.append(h)
        if SKIP in m.names:
            skip_ent.append(h)
            skips.append(m.names[argmax[-1]] == SKIP)
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    return AlphaStats(probs, argmax, mean(ent), mean(skip_ent),
                      sum(skips) / len(skips) if skips else 0.0)


# ----------------------------------------------------------------------------- the algorithm
@dataclass(frozen=True)
class SearchSchedule:
    warmup_iters: int
    arch_steps: int
    weight_steps: int
    lam: float
    tau: float
    cost_scale: float
    skip_ratio_limit: float
    entropy_limit: float
    stop_on_collapse: bool

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "SearchSchedule":
        s = cfg.MODEL.FNA.SEARCH
        return cls(int(s.WARMUP_ITERS), int(s.ARCH_STEPS), int(s.WEIGHT_STEPS), float(s.LAMBDA),
                   float(s.TAU), float(s.COST_SCALE), float(s.COLLAPSE_SKIP_RATIO),
                   float(s.COLLAPSE_ENTROPY), bool(s.STOP_ON_COLLAPSE))


@contextmanager
def frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """No gradient flows to ``params`` inside the block."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


@contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[None]:
    """BN running statistics are restored after the block (batch statistics still used)."""
    saved = [(b, b.detach().clone()) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _mean_dicts(dicts: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    return {k: sum(d[k].detach() for d in dicts) / len(dicts) for k in dicts[0]}


class SearchStepRunner(SimpleTrainer):
    """The search loop body; ``run_step`` is one cycle of FNA's alternation."""

    def __init__(self, model: nn.Module, net: nn.Module, weight_stream: DataStream,
                 arch_stream: DataStream, optimizer: torch.optim.Optimizer,
                 arch_optimizer: torch.optim.Optimizer, cost_table: Sequence[Sequence[float]],
                 schedule: SearchSchedule, seed: int, split_fingerprint: str = "") -> None:
        super().__init__(model, weight_stream.loader, optimizer)
        self.net = net
        self.alphas = list(net.arch_parameters())
        alpha_ids = {id(a) for a in self.alphas}
        self.weights = [p for p in model.parameters() if id(p) not in alpha_ids]
        self.weight_stream, self.arch_stream = weight_stream, arch_stream
        self.arch_optimizer = arch_optimizer
        self.cost_table = [list(map(float, row)) for row in cost_table]
        self.schedule = schedule
        self.seed = int(seed)
        self.generator = torch.Generator()
        self.generator.manual_seed(self.seed)
        self.split_fingerprint = split_fingerprint
        self.recent_paths: deque = deque(maxlen=1000)  # (iteration, mode, path) of weight steps
        self.path_mismatches = 0
        self.last_healthy: Optional[Tuple[int, List[int]]] = None  # (iterations done, argmax)
        self.stop_reason = ""
        self._state = ""  # "", "skip_heavy" or "collapsed": for warnings on change only

    # -- one iteration
    def run_step(self) -> None:
        """One cycle: [ARCH_STEPS arch steps, unless warming up] + WEIGHT_STEPS weight steps."""
        assert self.model.training, "[SearchStepRunner] model was changed to eval mode!"
        with self._reproducible():
            warming_up = self.iter < self.schedule.warmup_iters
            arch_logs = []
            if not warming_up:
                arch_logs = [self.arch_step() for _ in range(self.schedule.arch_steps)]
            mode = "uniform" if warming_up else "softmax"
            weight_logs = [self.weight_step(mode) for _ in range(self.schedule.weight_steps)]
        self._write_search_metrics(weight_logs, arch_logs)
        self._check_collapse()

    def arch_step(self) -> Dict[str, Any]:
        """Mixed ops, weights frozen: alpha <- Adam(task loss + cost loss) on an arch batch."""
        t0 = time.perf_counter()
        data = self.arch_stream.next()
        data_time = time.perf_counter() - t0
        self.net.set_mixed()
        with frozen(self.weights), frozen_bn_statistics(self.model):
            loss_dict = self.model(data)
            task_loss = sum(loss_dict.values())
            cost = self.expected_cost()
            cost_loss = self.cost_loss(cost)
            self.arch_optimizer.zero_grad(set_to_none=True)
            (task_loss + cost_loss).backward()
            self.arch_optimizer.step()
        return {"losses": loss_dict, "cost": cost.detach(), "cost_loss": cost_loss.detach(),
                "data_time": data_time}

    def weight_step(self, mode: str) -> Dict[str, Any]:
        """One sampled path, alpha frozen: weights <- SGD(task loss) on a weight batch."""
        t0 = time.perf_counter()
        data = self.weight_stream.next()
        data_time = time.perf_counter() - t0
        self.net.set_path(self.sample_path(mode))
        with frozen(self.alphas):
            loss_dict = self.model(data)
            losses = sum(loss_dict.values())
            self.optimizer.zero_grad(set_to_none=True)
            losses.backward()
            self.after_backward()
            self.optimizer.step()
        return {"losses": loss_dict, "data_time": data_time}

    # -- pieces of the algorithm
    def expected_cost(self) -> torch.Tensor:
        from ..cost import expected_cost

        return expected_cost(self.alphas, self.cost_table)

    def cost_loss(self, cost: torch.Tensor) -> torch.Tensor:
        """``LAMBDA * log(COST_SCALE * cost) / log(TAU)``."""
        s = self.schedule
        return s.lam * torch.log(s.cost_scale * cost) / math.log(s.tau)

    def sample_path(self, mode: str) -> List[int]:
        """Sample with the shared generator (same draws on every rank); rank 0's path wins."""
        path = self.net.sample_path(mode, self.generator)
        if comm.get_world_size() > 1:
            t = torch.tensor(path, dtype=torch.int64)
            torch.distributed.broadcast(t, src=0)
            agreed = t.tolist()
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
        (dropout, sampling) is seeded from (seed, iteration, rank), and TorchScript functions
        (RetinaNet's focal loss) run unoptimised, since the profiling executor re-optimises
        them after warm-up calls and changes their results in the last bits."""
        torch.manual_seed(_mix(self.seed, "iteration", self.iter, comm.get_rank()))
        with torch.jit.optimized_execution(False):
            yield

    # -- metrics and diagnostics
    def _write_search_metrics(self, weight_logs: List[Dict[str, Any]],
                              arch_logs: List[Dict[str, Any]]) -> None:
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
        stats = alpha_stats(self.net)
        storage.put_scalars(smoothing_hint=False, **{
            "search/expected_cost": cost,
            "search/entropy": stats.entropy,
            "search/skip_ratio": stats.skip_ratio,
            "search/alpha_lr": self.arch_optimizer.param_groups[0]["lr"],
            "search/warmup": float(self.iter < self.schedule.warmup_iters),
        })
        if not math.isnan(stats.skip_entropy):
            storage.put_scalar("search/skip_entropy", stats.skip_entropy, smoothing_hint=False)
        if self.path_mismatches:
            storage.put_scalar("search/path_mismatches", self.path_mismatches,
                               smoothing_hint=False)
        self._stats = stats

    def _check_collapse(self) -> None:
        """Apply the collapse rule (module docstring); remember the last healthy argmax."""
        s, stats = self.schedule, self._stats
        skip_heavy = stats.skip_ratio > s.skip_ratio_limit
        collapsed = skip_heavy and stats.skip_entropy < s.entropy_limit
        storage = get_event_storage()
        storage.put_scalar("search/skip_heavy", float(skip_heavy), smoothing_hint=False)
        storage.put_scalar("search/collapsed", float(collapsed), smoothing_hint=False)
        state = "collapsed" if collapsed else ("skip_heavy" if skip_heavy else "")
        if state and state != self._state:
            logger.warning(
                f"search {'collapsed' if collapsed else 'is skip-heavy'} at iteration "
                f"{self.iter + 1}: skip ratio {stats.skip_ratio:.2f} > COLLAPSE_SKIP_RATIO "
                f"{s.skip_ratio_limit}, skip-layer entropy {stats.skip_entropy:.3f} "
                f"(COLLAPSE_ENTROPY {s.entropy_limit}). Consider a smaller LAMBDA or a later "
                f"start of the arch updates (WARMUP_ITERS).")
        self._state = state
        if not skip_heavy:
            self.last_healthy = (self.iter + 1, list(stats.argmax))
        stop = collapsed and s.stop_on_collapse
        if comm.get_world_size() > 1:  # every rank must leave the loop together
            t = torch.tensor([int(stop)])
            torch.distributed.broadcast(t, src=0)
            stop = bool(t.item())
        if stop:
            self.stop_reason = (f"collapse at iteration {self.iter + 1} (skip ratio "
                                f"{stats.skip_ratio:.2f}, skip-layer entropy "
                                f"{stats.skip_entropy:.3f})")

    # -- checkpointing
    def space_signature(self) -> Dict[str, Any]:
        return {"name": self.net.space.name,
                "alpha_shapes": [list(a.shape) for a in self.alphas],
                "candidates": [list(m.names) for m in self.net.mixed_ops()]}

    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        ret["search"] = {
            "version": STATE_VERSION,
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "weight_stream": self.weight_stream.state_dict(),
            "arch_stream": self.arch_stream.state_dict(),
            "split_fingerprint": self.split_fingerprint,
            "space": self.space_signature(),
            "last_healthy": self.last_healthy,
            "path_mismatches": self.path_mismatches,
            "module_attrs": self._module_attrs(),
        }
        return ret

    def _module_attrs(self) -> Dict[str, float]:
        """Training state detectron2 keeps outside ``state_dict`` (RetinaNet's EMA
        ``loss_normalizer``); without it a resumed run would scale its losses differently."""
        model = _unwrap(self.model)
        return {name: float(m.loss_normalizer) for name, m in model.named_modules()
                if isinstance(getattr(m, "loss_normalizer", None), (int, float))}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        s = state_dict.get("search")
        if s is None:
            raise SearchResumeError("the checkpoint has no search state (it was not written by "
                                    "SearchTrainer); start the search in a fresh OUTPUT_DIR")
        mine = self.space_signature()
        if s["space"]["alpha_shapes"] != mine["alpha_shapes"] or \
                s["space"]["candidates"] != mine["candidates"]:
            raise SearchResumeError(
                f"the checkpoint is from a search over a different search space "
                f"({s['space']['name']!r}, alpha shapes {s['space']['alpha_shapes']}) than this "
                f"config's ({mine['name']!r}, alpha shapes {mine['alpha_shapes']}); use the "
                f"checkpoint's config or a fresh OUTPUT_DIR")
        if s["split_fingerprint"] != self.split_fingerprint:
            raise SearchResumeError(
                "the checkpoint used a different arch/weight split of the training data "
                "(DATASETS.TRAIN, its images, MODEL.FNA.SEARCH.ARCH_SPLIT or SEED changed); "
                "resuming would mix data the search has kept apart. Use the original settings "
                "or a fresh OUTPUT_DIR")
        super().load_state_dict(state_dict)
        self.arch_optimizer.load_state_dict(s["arch_optimizer"])
        self.generator.set_state(s["generator"])
        self.weight_stream.load_state_dict(s["weight_stream"])
        self.arch_stream.load_state_dict(s["arch_stream"])
        self.last_healthy = tuple(s["last_healthy"]) if s.get("last_healthy") else None
        self.path_mismatches = int(s.get("path_mismatches", 0))
        modules = dict(_unwrap(self.model).named_modules())
        for name, value in s.get("module_attrs", {}).items():
            if name in modules:
                modules[name].loss_normalizer = value


# ----------------------------------------------------------------------------- the trainer
def _config_file_from_argv() -> Optional[str]:
    argv = sys.argv
    for i, a in enumerate(argv):
        if a == "--config-file" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config-file="):
            return a.split("=", 1)[1]
    return None


def _atomic_json(obj: Any, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


class SearchOutputs(HookBase):
    """Writes the periodic and final search outputs (registered on rank 0 only)."""

    def __init__(self, period: int) -> None:
        self.period = int(period)

    def before_train(self) -> None:  # after a successful start or resume
        save_split(self.trainer.split, os.path.join(self.trainer.cfg.OUTPUT_DIR,
                                                    "search_split.json"))

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period and done % self.period == 0 and done < self.trainer.max_iter:
            self.trainer.write_outputs(done, final=False)

    def after_train(self) -> None:
        runner = self.trainer._trainer
        if self.trainer.iter >= self.trainer.max_iter or runner.stop_reason:
            self.trainer.write_outputs(self.trainer.iter, final=True)


class SearchTrainer(FNATrainer):
    """FNA's architecture adaptation on a super network (``MODEL.FNA.NETWORK: super``)."""

    def __init__(self, cfg: CfgNode) -> None:
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        check_search_cfg(cfg)
        check_datasets(cfg, test=False)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        self.cfg = cfg

        with torch.random.fork_rng(devices=[]):  # the init (alphas too) follows SEARCH.SEED
            torch.manual_seed(_mix(cfg.MODEL.FNA.SEARCH.SEED, "init"))
            model = self.build_model(cfg)
        self.net = self.find_supernet(model)
        optimizer = self.build_optimizer(cfg, model)
        arch_optimizer = self.build_arch_optimizer(cfg, self.net)
        self.split, weight_stream, arch_stream = self.build_search_streams(cfg)
        self.cost_table, self.madds_table = self.build_cost_tables(cfg, self.net)
        model = ddp_model(model, broadcast_buffers=False, find_unused_parameters=True)
        self._trainer = SearchStepRunner(
            model, self.net, weight_stream, arch_stream, optimizer, arch_optimizer,
            self.cost_table, SearchSchedule.from_config(cfg), cfg.MODEL.FNA.SEARCH.SEED,
            self.split.fingerprint)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = self.build_checkpointer(
            cfg, model, bn_data_loader=weight_stream.loader, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.config_file = _config_file_from_argv()
        self.register_hooks(self.build_hooks())

    # -- builders
    @staticmethod
    def find_supernet(model: nn.Module) -> nn.Module:
        from ..modeling import find_supernet

        net = find_supernet(model)
        if net is None:
            raise ConfigError(
                "MODEL.FNA.NETWORK='super' but the model has no FNA super network: use an FNA "
                "backbone (MODEL.BACKBONE.NAME 'build_fna_retinanet_fpn_backbone' or "
                "'build_fna_backbone')")
        return net

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        """Detectron2's SGD (+ gradient clipping) over every parameter except the alphas."""
        net = cls.find_supernet(model)
        alpha_ids = {id(a) for a in net.arch_parameters()}
        groups = get_default_optimizer_params(
            model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS)
        for g in groups:
            g["params"] = [p for p in g["params"] if id(p) not in alpha_ids]
        groups = [g for g in groups if g["params"]]
        sgd = torch.optim.SGD(groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                              nesterov=cfg.SOLVER.NESTEROV, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
        return maybe_add_gradient_clipping(cfg, sgd)

    @staticmethod
    def build_arch_optimizer(cfg: CfgNode, net: nn.Module) -> torch.optim.Optimizer:
        """Adam over the alphas (``SOLVER.ARCH.BASE_LR / BETAS / WEIGHT_DECAY``)."""
        a = cfg.SOLVER.ARCH
        return torch.optim.Adam(net.arch_parameters(), lr=a.BASE_LR, betas=tuple(a.BETAS),
                                weight_decay=a.WEIGHT_DECAY)

    @classmethod
    def build_search_streams(cls, cfg: CfgNode) -> Tuple[DataSplit, DataStream, DataStream]:
        """Split ``DATASETS.TRAIN`` (seeded) and build the weight and arch streams."""
        s = cfg.MODEL.FNA.SEARCH
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        split = make_split(dicts, cfg.DATASETS.TRAIN, s.ARCH_SPLIT, s.SEED)
        logger.info(f"search split of {split.num_images} images: {len(split.arch_idx)} drive "
                    f"alpha, {len(split.weight_idx)} the weights (seed {split.seed})")
        kw = dict(seed=s.SEED, total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
                  num_workers=cfg.DATALOADER.NUM_WORKERS)
        weight = DataStream("weight", [dicts[i] for i in split.weight_idx],
                            train_mapper(cfg, augment=True), **kw)
        arch = DataStream("arch", [dicts[i] for i in split.arch_idx],
                          train_mapper(cfg, augment=bool(s.ARCH_AUGMENT)), **kw)
        return split, weight, arch

    @staticmethod
    def build_cost_tables(cfg: CfgNode, net: nn.Module
                          ) -> Tuple[List[List[float]], List[List[float]]]:
        """(the search's cost table, the GMAdds table), once, at ``COST_INPUT_SIZE``. A latency
        table is measured (or read from ``LATENCY_TABLE``) on rank 0 and shared; its entries
        carry the table's whole-network calibration scale, which leaves the arch gradients of
        the log cost loss unchanged (see ``fna_d2.latency``)."""
        from ..cost import op_cost_table

        s, os_ = cfg.MODEL.FNA.SEARCH, cfg.MODEL.FNA.OUTPUT_STRIDE
        size = tuple(int(v) for v in s.COST_INPUT_SIZE)
        madds = op_cost_table(net.space, size, "madds", output_stride=os_)
        if s.COST == "madds":
            return madds, madds
        from ..latency import latency_table

        table = None
        if comm.is_main_process():
            path = s.LATENCY_TABLE or os.path.join(cfg.OUTPUT_DIR, "latency_table.json")
            table = latency_table(net.space.with_output_stride(os_), size, path=path,
                                  repeats=int(s.LATENCY_REPEATS),
                                  threads=int(s.LATENCY_THREADS) or None,
                                  tune_malloc=bool(s.LATENCY_TUNE_MALLOC))
        if comm.get_world_size() > 1:
            box = [table]
            torch.distributed.broadcast_object_list(box, src=0)
            table = box[0]
        return table, madds

    def build_hooks(self) -> List[HookBase]:
        """Timer, LR schedule, checkpoints, search outputs, writers (no evaluation, no
        PreciseBN: the validation set is never used during the search)."""
        ret: List[Optional[HookBase]] = [hooks.IterationTimer(), hooks.LRScheduler()]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer,
                                                  self.cfg.SOLVER.CHECKPOINT_PERIOD))
            ret.append(SearchOutputs(self.cfg.MODEL.FNA.SEARCH.DERIVE_PERIOD))
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=20))
        return [h for h in ret if h is not None]

    # -- the loop
    def train(self) -> Dict[str, Any]:
        """TrainerBase's loop, able to stop early (``STOP_ON_COLLAPSE``)."""
        logger.info(f"Starting the search from iteration {self.start_iter}")
        runner = self._trainer
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

    # -- outputs
    def derived_arch(self, done: int, path: Optional[Sequence[int]] = None,
                     **extra: Any) -> Arch:
        """The argmax architecture (or ``path``'s) with the search's meta data."""
        from ..cost import arch_cost

        s, cfg = self.cfg.MODEL.FNA.SEARCH, self.cfg
        if path is None:
            path = alpha_stats(self.net).argmax
        arch = self.net.path_arch(list(path))
        size = tuple(int(v) for v in s.COST_INPUT_SIZE)
        meta = dict(arch.meta)
        meta.update({
            "name": f"fna_searched_{self.net.space.name}",
            "space": self.net.space.name,
            "seed": int(s.SEED), "lambda": float(s.LAMBDA), "tau": float(s.TAU),
            "cost_type": s.COST, "cost_scale": float(s.COST_SCALE),
            "cost_input_size": list(size),
            "madds_g": arch_cost(arch, size, cfg.MODEL.FNA.OUTPUT_STRIDE).madds / 1e9,
            "searchable_madds_g": sum(self.madds_table[l][c] for l, c in enumerate(path)),
            "world_size": comm.get_world_size(), "total_batch": int(cfg.SOLVER.IMS_PER_BATCH),
            "iteration": int(done), "config_file": self.config_file,
            "config_dump": os.path.join(cfg.OUTPUT_DIR, "config.yaml"),
        })
        if s.COST == "latency":
            meta["searchable_latency_ms"] = sum(self.cost_table[l][c] for l, c in enumerate(path))
        meta.update(extra)
        return Arch(arch.stages, arch.stem_channels, meta)

    def write_outputs(self, done: int, final: bool) -> None:
        """arch/arch_iter{done}.json, alpha_probs.json, the PNGs; at the end searched_arch.json
        (the last healthy architecture if the search stopped on collapse)."""
        out = self.cfg.OUTPUT_DIR
        stats = alpha_stats(self.net)
        save_arch(self.derived_arch(done), os.path.join(out, "arch", f"arch_iter{done:07d}.json"))
        self.write_alpha_probs(stats, done)
        self.write_plots(stats, done)
        if not final:
            return
        runner = self._trainer
        if runner.stop_reason and runner.last_healthy is not None:
            it, path = runner.last_healthy
            arch = self.derived_arch(done, path, stopped_early=runner.stop_reason,
                                     arch_iteration=int(it))
        else:
            extra = {"stopped_early": runner.stop_reason} if runner.stop_reason else {}
            if stats.skip_ratio > runner.schedule.skip_ratio_limit:
                extra["warning"] = (f"skip-heavy architecture (skip ratio "
                                    f"{stats.skip_ratio:.2f})")
            arch = self.derived_arch(done, **extra)
        path = save_arch(arch, os.path.join(out, "searched_arch.json"))
        logger.info(f"searched architecture written to {path} "
                    f"({arch.meta['madds_g']:.3f} GMAdds backbone at "
                    f"{arch.meta['cost_input_size']})")

    def write_alpha_probs(self, stats: AlphaStats, done: int) -> str:
        layers = []
        for (st, li), m, p, a in zip(self.net.space.searchable_layers(), self.net.mixed_ops(),
                                     stats.probs, stats.argmax):
            layers.append({"stage": st, "layer": li, "candidates": list(m.names),
                           "alpha": m.alpha.detach().cpu().double().tolist(), "probs": p,
                           "argmax": m.names[a]})
        return _atomic_json({"format": "fna_d2.alpha_probs", "version": 1, "iteration": done,
                             "entropy": stats.entropy, "skip_ratio": stats.skip_ratio,
                             "layers": layers}, os.path.join(self.cfg.OUTPUT_DIR,
                                                              "alpha_probs.json"))

    def write_plots(self, stats: AlphaStats, done: int) -> None:
        out = self.cfg.OUTPUT_DIR
        names = [f"s{s}.l{l}" for s, l in self.net.space.searchable_layers()]
        try:
            plot_alpha_heatmap(stats.probs, [m.names for m in self.net.mixed_ops()], names,
                               os.path.join(out, "alpha_heatmap.png"),
                               f"softmax(alpha) after {done} iterations")
            keys = ["search/expected_cost", "total_loss", "arch/total_loss"]
            series = read_metrics_json(os.path.join(out, "metrics.json"), keys)
            storage = getattr(self, "storage", None)
            hist = storage.histories() if storage is not None else {}
            for k in keys:
                if k in hist:  # HistoryBuffer.values() holds (value, iteration) pairs
                    series[k] = merge_series(series[k], [(i, v) for v, i in hist[k].values()])
            unit = "GMAdds" if self.cfg.MODEL.FNA.SEARCH.COST == "madds" else "ms"
            plot_search_curves(series["search/expected_cost"],
                               {"weight half (total_loss)": series["total_loss"],
                                "arch half (arch/total_loss)": series["arch/total_loss"]},
                               os.path.join(out, "search_curves.png"),
                               self.cfg.MODEL.FNA.SEARCH.WARMUP_ITERS,
                               f"expected cost ({unit})")
        except Exception as e:  # a figure must never kill a search
            logger.warning(f"could not write the search plots: {e}")
