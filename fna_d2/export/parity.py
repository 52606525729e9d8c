"""Parity of an exported model with the eager one on the same image.

Each output passes when ``max |exported - eager| <= tolerance * max(1, max |eager|)`` (the
tolerance is relative to the output's magnitude, so pixel coordinates and scores in [0, 1]
share one number). Detections are first compared in order; when their order or number
differs (near-equal scores swap places under rounding: a model early in training scores many
boxes alike), every detection above the other side's lowest score must have a counterpart of
the same class with a score within the tolerance, and the box distance is measured to the
closest such counterpart.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Sequence

import torch

__all__ = ["OutputParity", "Parity", "compare_outputs"]


@dataclass
class OutputParity:
    name: str
    shape: List[int]           # the eager output's
    exported_shape: List[int]
    max_abs_diff: float        # inf: shapes differ / unmatched detections
    limit: float               # tolerance * max(1, max |eager|)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.limit


@dataclass
class Parity:
    tolerance: float
    outputs: List[OutputParity]
    method: str = "elementwise"
    unmatched: int = 0
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.unmatched == 0 and all(o.ok for o in self.outputs)

    @property
    def max_abs_diff(self) -> float:
        return max((o.max_abs_diff for o in self.outputs), default=0.0)

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["ok"] = self.ok
        d["max_abs_diff"] = self.max_abs_diff
        return d

    def summary(self) -> str:
        parts = [f"{o.name} {o.max_abs_diff:.3g} (limit {o.limit:.3g}, "
                 f"shape {'x'.join(map(str, o.shape)) or 'scalar'})" for o in self.outputs]
        head = f"parity {'ok' if self.ok else 'FAILED'} ({self.method}): max |exported - eager|: "
        tail = f"; {self.unmatched} detections without a counterpart" if self.unmatched else ""
        return head + ", ".join(parts) + tail + "".join(f"; {n}" for n in self.notes)


def _limit(ref: torch.Tensor, tol: float) -> float:
    return tol * max(1.0, float(ref.abs().max()) if ref.numel() else 0.0)


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _elementwise(names: Sequence[str], ref: Sequence[torch.Tensor],
                 got: Sequence[torch.Tensor], tol: float) -> List[OutputParity]:
    return [OutputParity(n, list(r.shape), list(g.shape), _diff(r, g), _limit(r, tol))
            for n, r, g in zip(names, ref, got)]


def _one_way(a, b, tol: float, box_limit: float):
    """(max score diff, max box diff, unmatched) for the detections of ``a`` that ``b`` must
    hold: those scoring above b's lowest score by more than the tolerance."""
    (ab, as_, ac), (bb, bs, bc) = a, b
    floor = float(bs.min()) + tol if bs.numel() else float("-inf")
    ds = db = 0.0
    unmatched = 0
    for i in range(len(as_)):
        if float(as_[i]) <= floor:
            continue
        cand = (bc == ac[i]) & ((bs.double() - float(as_[i])).abs() <= tol)
        if not bool(cand.any()):  # no detection of its class with a score that close
            unmatched += 1
            ds = float("inf")
            continue
        dist = (bb[cand].double() - ab[i].double()).abs().max(dim=1).values
        j = int(dist.argmin())
        unmatched += int(float(dist[j]) > box_limit)
        db = max(db, float(dist[j]))
        ds = max(ds, abs(float(bs[cand][j]) - float(as_[i])))
    return ds, db, unmatched


def _matched(names, ref, got, tol: float) -> Parity:
    box_limit = _limit(ref[0], tol)
    s1, b1, u1 = _one_way(ref, got, tol, box_limit)
    s2, b2, u2 = _one_way(got, ref, tol, box_limit)
    outs = [OutputParity(names[0], list(ref[0].shape), list(got[0].shape), max(b1, b2),
                         box_limit),
            OutputParity(names[1], list(ref[1].shape), list(got[1].shape), max(s1, s2),
                         _limit(ref[1], tol)),
            OutputParity(names[2], list(ref[2].shape), list(got[2].shape), 0.0, 0.0)]
    return Parity(tol, outs, "detections matched by class and score", u1 + u2,
                  [f"{len(ref[1])} eager / {len(got[1])} exported detections"])


def compare_outputs(names: Sequence[str], ref: Sequence[torch.Tensor],
                    got: Sequence[torch.Tensor], tolerance: float, detection: bool) -> Parity:
    """Parity of exported outputs ``got`` with the eager ``ref`` (both in ``names`` order)."""
    if len(got) != len(ref):
        return Parity(tolerance, [], notes=[f"the export has {len(got)} outputs, the eager "
                                            f"model {len(ref)} ({', '.join(names)})"],
                      unmatched=abs(len(got) - len(ref)))
    ref = [r.detach().cpu() for r in ref]
    got = [g.detach().cpu() for g in got]
    direct = Parity(tolerance, _elementwise(names, ref, got, tolerance))
    if not detection or direct.ok:
        if detection:
            direct.notes.append(f"{len(ref[1])} detections")
        return direct
    return _matched(names, ref, got, tolerance)
