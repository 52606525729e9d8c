"""The most probable path within a cost band: the derivation of a search run with
``MODEL.FNA.SEARCH.TARGET_COST``.

Given per layer the log-probabilities of its candidates (log softmax(alpha)) and their costs,
:func:`budgeted_path` returns the path maximising the summed log-probability (the probability
of the path under the architecture distribution) among the paths whose summed cost lies in
``[lo, hi]``: a multiple-choice knapsack, solved by dynamic programming over costs quantised
to ``resolution`` of ``hi`` (1/4000 by default) and keeping, per quantum, the best path and its
exact cost. The result always lies inside the band (exact costs are checked); quantisation
can, rarely, miss the best path by merging paths whose costs differ by less than a quantum.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

__all__ = ["budgeted_path", "path_cost"]


def path_cost(table: Sequence[Sequence[float]], path: Sequence[int]) -> float:
    """Summed cost of ``path`` (one candidate index per layer) in ``table``."""
    return float(sum(table[l][c] for l, c in enumerate(path)))


def budgeted_path(log_probs: Sequence[Sequence[float]], table: Sequence[Sequence[float]],
                  lo: float, hi: float, resolution: float = 2.5e-4) -> Optional[List[int]]:
    """The most probable path with ``lo <= cost <= hi`` (module doc); None if none was found."""
    if len(log_probs) != len(table):
        raise ValueError(f"{len(log_probs)} layers of log-probabilities but a cost table of "
                         f"{len(table)}")
    if not 0 <= lo <= hi:
        raise ValueError(f"the band must have 0 <= lo <= hi, got [{lo}, {hi}]")
    step = hi * resolution
    if step <= 0:
        return None
    bins = int(np.floor(hi / step)) + 1
    neg = -np.inf
    score = np.full(bins, neg)
    score[0] = 0.0
    exact = np.zeros(bins)  # the exact cost of the best path in each bin
    choice = []  # per layer: the candidate and the previous bin of each bin's best path
    for lp, costs in zip(log_probs, table):
        lp, costs = np.asarray(lp, dtype=np.float64), np.asarray(costs, dtype=np.float64)
        if lp.shape != costs.shape:
            raise ValueError(f"a layer has {lp.size} log-probabilities but {costs.size} costs")
        new = np.full(bins, neg)
        new_exact = np.zeros(bins)
        cand = np.full(bins, -1)
        prev = np.full(bins, -1)
        reach = np.flatnonzero(score > neg)
        for j, (p, c) in enumerate(zip(lp, costs)):
            if not np.isfinite(p):
                continue
            tgt_exact = exact[reach] + c
            tgt = np.floor(tgt_exact / step + 1e-9).astype(int)
            ok = tgt < bins
            src, tgt, tgt_exact = reach[ok], tgt[ok], tgt_exact[ok]
            val = score[src] + p
            order = np.argsort(val, kind="stable")  # the best write to a bin comes last
            src, tgt, val, tgt_exact = src[order], tgt[order], val[order], tgt_exact[order]
            better = val > new[tgt]
            src, tgt, val, tgt_exact = src[better], tgt[better], val[better], tgt_exact[better]
            new[tgt], new_exact[tgt], cand[tgt], prev[tgt] = val, tgt_exact, j, src
        score, exact = new, new_exact
        choice.append((cand, prev))
    inside = np.flatnonzero((score > neg) & (exact >= lo) & (exact <= hi))
    if inside.size == 0:
        return None
    b = int(inside[np.argmax(score[inside])])
    path = []
    for cand, prev in reversed(choice):
        path.append(int(cand[b]))
        b = int(prev[b])
    return path[::-1]
