"""Alpha statistics and the collapse rule.

``skip_ratio`` = share of the skip-capable searchable layers whose argmax is ``skip``;
``skip_entropy`` = mean normalised entropy (entropy / log(#candidates), in [0, 1]) of
softmax(alpha) over those layers. The search is *skip-heavy* when ``skip_ratio >
COLLAPSE_SKIP_RATIO`` and *collapsed* when it is also committed to that choice,
``skip_entropy < COLLAPSE_ENTROPY``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import torch
from torch import nn

from ...arch import SKIP

__all__ = ["AlphaStats", "alpha_stats", "collapse_flags", "collapse_warning"]


@dataclass
class AlphaStats:
    """softmax(alpha) per searchable layer and the collapse diagnostics derived from it."""

    probs: List[List[float]]
    argmax: List[int]
    entropy: float        # mean normalised entropy over all searchable layers
    skip_entropy: float   # ... over the layers that offer skip (nan if none)
    skip_ratio: float     # share of skip-capable layers whose argmax is skip (0 if none)


def alpha_stats(net: nn.Module) -> AlphaStats:
    """:class:`AlphaStats` of the super network ``net`` (float64, on the CPU)."""
    probs, argmax, ent, skip_ent, skips = [], [], [], [], []
    for m in net.mixed_ops():
        p = torch.softmax(m.alpha.detach().double().cpu() / m.temperature, 0)
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


def collapse_flags(stats: AlphaStats, skip_ratio_limit: float, entropy_limit: float
                   ) -> Tuple[bool, bool]:
    """``(skip_heavy, collapsed)`` by the rule of the module docstring."""
    skip_heavy = stats.skip_ratio > skip_ratio_limit
    return skip_heavy, skip_heavy and stats.skip_entropy < entropy_limit


def collapse_warning(stats: AlphaStats, iteration: int, collapsed: bool,
                     skip_ratio_limit: float, entropy_limit: float) -> str:
    """The warning logged when the search becomes skip-heavy or collapses at ``iteration``."""
    return (f"search {'collapsed' if collapsed else 'is skip-heavy'} at iteration "
            f"{iteration}: skip ratio {stats.skip_ratio:.2f} > COLLAPSE_SKIP_RATIO "
            f"{skip_ratio_limit}, skip-layer entropy {stats.skip_entropy:.3f} "
            f"(COLLAPSE_ENTROPY {entropy_limit}). Consider a smaller LAMBDA or a later "
            f"start of the arch updates (WARMUP_ITERS).")
