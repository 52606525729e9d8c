"""The search's settings (``MODEL.FNA.SEARCH.*``): :func:`check_search_cfg` refuses values
that cannot work, :class:`SearchSchedule` holds what one iteration of the alternation needs,
:class:`LatencySettings` how the latency table is built or read."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from detectron2.config import CfgNode

from ...arch import SearchSpace, seed_arch, seed_in_space
from ...cost import path_cost
from ...errors import ArchError, ConfigError
from ...latency import latency_device

__all__ = ["COST_TYPES", "check_search_cfg", "target_cost", "SearchSchedule",
           "LatencySettings"]

#: cost types the search's cost term understands (``MODEL.FNA.SEARCH.COST``)
COST_TYPES = ("madds", "latency")


def check_search_cfg(cfg: CfgNode) -> None:
    """Raise :class:`~fna_d2.errors.ConfigError` for search settings that cannot work."""
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
    if not float(cfg.SOLVER.ARCH.CLIP_VALUE) >= 0:
        raise ConfigError(f"SOLVER.ARCH.CLIP_VALUE must be >= 0 (0: no clipping of the alphas' "
                          f"gradients), got {cfg.SOLVER.ARCH.CLIP_VALUE}")
    if int(s.LATENCY_REPEATS) < 1:
        raise ConfigError(f"MODEL.FNA.SEARCH.LATENCY_REPEATS must be >= 1, got "
                          f"{s.LATENCY_REPEATS}")
    if int(s.LATENCY_BATCH) < 1:
        raise ConfigError(f"MODEL.FNA.SEARCH.LATENCY_BATCH must be >= 1, got {s.LATENCY_BATCH}")
    if s.LATENCY_TABLE_FOREIGN and not s.LATENCY_TABLE:
        raise ConfigError("MODEL.FNA.SEARCH.LATENCY_TABLE_FOREIGN is True but "
                          "MODEL.FNA.SEARCH.LATENCY_TABLE is empty: name the table measured on "
                          "the other device (python -m fna_d2.latency build ... --out FILE)")
    if s.COST == "latency":
        latency_device(s.LATENCY_DEVICE, "MODEL.FNA.SEARCH.LATENCY_DEVICE")
    t = s.TARGET_COST
    if t is not None and t != "seed" and (isinstance(t, bool) or not isinstance(t, (int, float))
                                          or not t > 0):
        raise ConfigError(f"MODEL.FNA.SEARCH.TARGET_COST must be None (no target), a cost > 0 "
                          f"in the cost table's units (GMAdds, or ms for COST 'latency') or "
                          f"'seed', got {t!r}")
    if not 0.0 < float(s.TARGET_TOLERANCE) < 1.0:
        raise ConfigError(f"MODEL.FNA.SEARCH.TARGET_TOLERANCE must be in (0, 1), got "
                          f"{s.TARGET_TOLERANCE}")


def target_cost(cfg: CfgNode, space: SearchSpace, cost_table: Sequence[Sequence[float]]
                ) -> Optional[float]:
    """``MODEL.FNA.SEARCH.TARGET_COST`` in the cost table's units (None: no target); "seed" is
    the cost of ``MODEL.FNA.SEED`` placed in ``space`` (its layers first, skips after)."""
    t = cfg.MODEL.FNA.SEARCH.TARGET_COST
    if t is None:
        return None
    if t == "seed":
        try:
            seed = seed_in_space(seed_arch(cfg.MODEL.FNA.SEED), space)
        except ArchError as e:
            raise ConfigError(f"MODEL.FNA.SEARCH.TARGET_COST 'seed': the seed "
                              f"{cfg.MODEL.FNA.SEED!r} is not a path of search space "
                              f"{space.name!r} ({e}); give the target as a number") from None
        return path_cost(cost_table, space.path_of(seed, "MODEL.FNA.SEED"))
    return float(t)


@dataclass(frozen=True)
class SearchSchedule:
    """The alternation's numbers: warm-up length, steps per cycle, the cost term's ``lam`` /
    ``tau`` / ``cost_scale``, the collapse rule's limits, whether weight steps keep updating
    ops off the sampled path (``UPDATE_UNSAMPLED_OPS``) and the cost target (``target``, in
    the cost table's units, None: none; ``target_tolerance``)."""

    warmup_iters: int
    arch_steps: int
    weight_steps: int
    lam: float
    tau: float
    cost_scale: float
    skip_ratio_limit: float
    entropy_limit: float
    stop_on_collapse: bool
    update_unsampled_ops: bool = False
    target: Optional[float] = None
    target_tolerance: float = 0.05

    @classmethod
    def from_config(cls, cfg: CfgNode, target: Optional[float] = None) -> "SearchSchedule":
        """``target``: :func:`target_cost` of the search's space and cost table."""
        s = cfg.MODEL.FNA.SEARCH
        return cls(int(s.WARMUP_ITERS), int(s.ARCH_STEPS), int(s.WEIGHT_STEPS), float(s.LAMBDA),
                   float(s.TAU), float(s.COST_SCALE), float(s.COLLAPSE_SKIP_RATIO),
                   float(s.COLLAPSE_ENTROPY), bool(s.STOP_ON_COLLAPSE),
                   bool(s.UPDATE_UNSAMPLED_OPS), target, float(s.TARGET_TOLERANCE))

    @property
    def target_band(self) -> Optional[Tuple[float, float]]:
        """(lo, hi) the searched architecture's cost must lie in (None without a target)."""
        if self.target is None:
            return None
        return (self.target * (1 - self.target_tolerance),
                self.target * (1 + self.target_tolerance))


@dataclass(frozen=True)
class LatencySettings:
    """How the search's latency table is built or read (``MODEL.FNA.SEARCH.LATENCY_*``):
    ``path`` (``LATENCY_TABLE``, default ``OUTPUT_DIR/latency_table.json``), ``repeats``,
    ``threads`` (None: as they are), ``tune_malloc``, ``device``, ``batch`` and ``foreign``
    (``LATENCY_TABLE_FOREIGN``: a table from another device, used as it is)."""

    path: str
    repeats: int
    threads: Optional[int]
    tune_malloc: bool
    device: str
    batch: int
    foreign: bool

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "LatencySettings":
        s = cfg.MODEL.FNA.SEARCH
        return cls(s.LATENCY_TABLE or os.path.join(cfg.OUTPUT_DIR, "latency_table.json"),
                   int(s.LATENCY_REPEATS), int(s.LATENCY_THREADS) or None,
                   bool(s.LATENCY_TUNE_MALLOC), str(s.LATENCY_DEVICE), int(s.LATENCY_BATCH),
                   bool(s.LATENCY_TABLE_FOREIGN))
