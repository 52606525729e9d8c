"""Architectures at a given cost: the controls a NAS result is compared with.

* :func:`sample_matched`: architectures drawn **uniformly at random among the paths of a
  search space whose backbone MAdds lie within ``tol`` of a target** (what "random at the
  searched architecture's cost" means). Draws are rejection samples of independent uniform
  choices per layer, vectorised over the op-cost table; when the band is too narrow for
  rejection to find enough (fewer than ``n`` hits in ``max_draws``), a Metropolis walk whose
  moves re-draw one layer's op and are accepted only inside the band continues from the
  hits (its stationary distribution is uniform over the band too; it restarts from new
  in-band points when it stops finding new paths). Every result says which.
  Paths that differ only in where a stage's ``skip`` layers sit are one network (the derived
  network moves them to the end, :meth:`~fna_d2.arch.Arch.skips_to_end`): results are distinct
  networks, each as likely as its paths together.
* :func:`shrink_seed`: the seed (MobileNetV2) made cheaper by hand, the way an engineer
  would: either layers removed (``depth``: the last real layer of a stage becomes ``skip``,
  taking the stages in turn) or expansions lowered (``expansion``: e6 -> e3, one layer per
  stage in turn), until the cost is at most the target; the step closest to the target wins.

Costs are the backbone's MAdds (stem and every stage, :func:`fna_d2.cost.arch_cost`) at the
search's ``COST_INPUT_SIZE``: the part the search changes. The head and FPN cost the same
for every path of a space.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..arch import SKIP, Arch, SearchSpace, Stage, op_name, parse_op, seed_in_space
from ..cost import arch_cost, op_cost_table
from ..errors import ArchError

__all__ = ["Matched", "backbone_gmadds", "sample_matched", "shrink_seed", "SHRINK_MODES"]

SHRINK_MODES = ("depth", "expansion")


@dataclass
class Matched:
    """One architecture at a target cost, with how it was obtained."""

    arch: Arch
    gmadds: float
    target_gmadds: float
    method: str  # "rejection", "metropolis" or "shrink-<mode>"
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def rel_error(self) -> float:
        return self.gmadds / self.target_gmadds - 1.0


def backbone_gmadds(arch: Arch, input_size: Tuple[int, int],
                    output_stride: Optional[int] = None) -> float:
    """Backbone (stem + stages) GMAdds of ``arch`` at ``input_size`` (H, W)."""
    return arch_cost(arch, tuple(input_size), output_stride).madds / 1e9


def _check_target(target: float, tol: float) -> None:
    if not target > 0:
        raise ArchError(f"target cost must be > 0 GMAdds, got {target}")
    if not 0 < tol < 1:
        raise ArchError(f"tolerance must be in (0, 1), got {tol}")


def sample_matched(space: SearchSpace, target_gmadds: float, n: int,
                   input_size: Tuple[int, int], output_stride: Optional[int] = None,
                   tol: float = 0.03, seed: int = 0, max_draws: int = 2_000_000,
                   exclude: Sequence[Arch] = ()) -> List[Matched]:
    """``n`` distinct paths of ``space`` whose backbone GMAdds are within ``tol`` (relative)
    of ``target_gmadds`` (module doc: uniform over that band). ``exclude``: paths not to
    return (e.g. the searched architecture). :class:`ArchError` if the band holds no path or
    fewer than ``n`` distinct ones were found."""
    _check_target(target_gmadds, tol)
    if n < 1:
        raise ArchError(f"n must be >= 1, got {n}")
    table = [np.asarray(row) for row in op_cost_table(space, tuple(input_size), "madds",
                                                      output_stride)]
    fixed = _fixed_gmadds(space, input_size, output_stride, table)
    lo, hi = target_gmadds * (1 - tol), target_gmadds * (1 + tol)
    cheapest = fixed + sum(float(r.min()) for r in table)
    dearest = fixed + sum(float(r.max()) for r in table)
    if hi < cheapest or lo > dearest:
        raise ArchError(f"no path of search space {space.name!r} costs {target_gmadds:.4g} "
                        f"GMAdds +-{tol:.1%} at {input_size[0]}x{input_size[1]}: its paths "
                        f"cost {cheapest:.4g} to {dearest:.4g} GMAdds")
    rng = np.random.default_rng(seed)
    meta = {"name": "random_matched", "seed": seed, "target_gmadds": target_gmadds}
    skip = {_canonical(a) for a in exclude}
    found: Dict[Tuple[Tuple[str, ...], ...], Matched] = {}

    def take(path, c: float, method: str) -> None:
        arch = space.arch_from_path([int(v) for v in path], meta).skips_to_end()
        key = _canonical(arch)
        if key not in skip and key not in found and len(found) < n:
            found[key] = Matched(arch, float(c), target_gmadds, method)

    drawn, batch = 0, 100_000
    while len(found) < n and drawn < max_draws:
        paths = np.stack([rng.integers(len(r), size=batch) for r in table], axis=1)
        costs = fixed + sum(r[paths[:, l]] for l, r in enumerate(table))
        drawn += batch
        hit = (costs >= lo) & (costs <= hi)
        for p, c in zip(paths[hit], costs[hit]):
            take(p, c, "rejection")
            if len(found) >= n:
                break
    if len(found) < n:  # a narrow band: walk on from what rejection found
        starts = [tuple(space.path_of(m.arch)) for m in found.values()]
        starts = starts or [_greedy_into_band(table, fixed, lo, hi, rng)]
        for p, c in _metropolis(table, fixed, lo, hi, starts, n * 4, rng).items():
            take(p, c, "metropolis")
    if len(found) < n:
        raise ArchError(f"found only {len(found)} distinct architectures in search space "
                        f"{space.name!r} within +-{tol:.1%} of {target_gmadds:.4g} GMAdds "
                        f"(asked for {n})")
    for m in found.values():
        m.info["draws"] = drawn
    return list(found.values())


def _canonical(arch: Arch) -> Tuple[Tuple[str, ...], ...]:
    """What makes two architectures the same network: their ops, skips moved to the end."""
    return tuple(st.ops for st in arch.skips_to_end().stages)


def _fixed_gmadds(space, input_size, output_stride, table) -> float:
    """GMAdds of the layers every path shares (stem, single-candidate layers)."""
    first = space.arch_from_path([0] * space.num_searchable)
    return backbone_gmadds(first, input_size, output_stride) - sum(float(r[0]) for r in table)


def _greedy_into_band(table, fixed, lo, hi, rng, restarts: int = 50) -> Tuple[int, ...]:
    """A path inside [lo, hi]: from random paths, passes over the layers in random order that
    set each layer to the op bringing the cost nearest the band's centre."""
    mid = (lo + hi) / 2
    for _ in range(restarts):
        path = [int(rng.integers(len(r))) for r in table]
        cost = fixed + sum(float(r[p]) for r, p in zip(table, path))
        for _ in range(20):
            before = cost
            for l in rng.permutation(len(table)):
                rest = cost - float(table[l][path[l]])
                path[l] = int(np.argmin(np.abs(rest + table[l] - mid)))
                cost = rest + float(table[l][path[l]])
            if lo <= cost <= hi:
                return tuple(path)
            if cost == before:
                break
    raise ArchError(f"could not find a path costing {lo:.4g} to {hi:.4g} GMAdds")


def _metropolis(table, fixed, lo, hi, start, n, rng, steps_per_sample: int = 200,
                patience: int = 20, restarts: int = 20) -> Dict[Tuple[int, ...], float]:
    """Distinct in-band paths from a walk that re-draws one layer per move (uniform over the
    band at stationarity: symmetric proposal, out-of-band moves rejected). After ``patience``
    samples without a new path it restarts from a new in-band point (a band whose paths
    one-layer moves do not connect)."""
    out: Dict[Tuple[int, ...], float] = {}
    path = list(start[int(rng.integers(len(start)))])
    for _ in range(restarts):
        cost = fixed + sum(float(r[p]) for r, p in zip(table, path))
        stale = 0
        while stale < patience and len(out) < n:
            for _ in range(steps_per_sample):
                l = int(rng.integers(len(table)))
                j = int(rng.integers(len(table[l])))
                new = cost - float(table[l][path[l]]) + float(table[l][j])
                if lo <= new <= hi:
                    path[l], cost = j, new
            key = tuple(path)
            stale = stale + 1 if key in out else 0
            out.setdefault(key, cost)
        if len(out) >= n:
            break
        path = list(_greedy_into_band(table, fixed, lo, hi, rng))
    return out


def shrink_seed(seed: Arch, space: SearchSpace, target_gmadds: float,
                input_size: Tuple[int, int], output_stride: Optional[int] = None,
                mode: str = "depth") -> Matched:
    """The seed placed in ``space`` (its layers first, ``skip`` after) and shrunk by hand
    (module doc) to the step whose cost is closest to ``target_gmadds``."""
    if mode not in SHRINK_MODES:
        raise ArchError(f"shrink mode must be one of {', '.join(SHRINK_MODES)}, got {mode!r}")
    _check_target(target_gmadds, 0.5)
    stages = [list(st.ops) for st in seed_in_space(seed, space).stages]
    cost = lambda: backbone_gmadds(_arch(space, stages), input_size, output_stride)  # noqa: E731
    steps = [(cost(), [list(s) for s in stages])]
    if steps[0][0] <= target_gmadds:
        raise ArchError(f"the seed costs {steps[0][0]:.4g} GMAdds, not more than the target "
                        f"{target_gmadds:.4g}: nothing to shrink")
    order = list(range(len(stages) - 1, 0, -1))  # searchable stages, deepest first, in turn
    while steps[-1][0] > target_gmadds:
        changed = False
        for s in order:
            if steps[-1][0] <= target_gmadds:
                break
            if _shrink_one(stages[s], mode, space.stages[s].candidates):
                changed = True
                steps.append((cost(), [list(x) for x in stages]))
        if not changed:
            break
    best_cost, best = min(steps, key=lambda cs: abs(cs[0] - target_gmadds))
    arch = _arch(space, best, {"name": f"{seed.meta.get('name', 'seed')}_shrunk_{mode}",
                                     "target_gmadds": target_gmadds})
    return Matched(arch, best_cost, target_gmadds, f"shrink-{mode}", {"steps": len(steps) - 1})


def _shrink_one(ops: List[str], mode: str, candidates) -> bool:
    """Shrink one layer of a stage in place (never its first layer's existence)."""
    if mode == "depth":
        real = [i for i, op in enumerate(ops) if op != SKIP]
        if len(real) > 1 and SKIP in candidates[real[-1]]:
            ops[real[-1]] = SKIP
            return True
        return False
    for i, op in enumerate(ops):
        p = parse_op(op)
        if p is not None and p[1] == 6 and op_name(p[0], 3) in candidates[i]:
            ops[i] = op_name(p[0], 3)
            return True
    return False


def _arch(space: SearchSpace, stages: List[List[str]],
          meta: Optional[dict] = None) -> Arch:
    arch = Arch(tuple(Stage(sp.cin, sp.cout, sp.stride, tuple(ops), sp.dilation)
                      for sp, ops in zip(space.stages, stages)), space.stem_channels,
                dict(meta or {}))
    return arch.validate()
