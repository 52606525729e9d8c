"""The remap report: how each target tensor was produced (:class:`TensorRecord`, one of
:data:`STATUSES`), which seed tensors were left unused and why (:data:`UNUSED_REASONS`), and
its text and JSON forms (:class:`RemapReport`). Pure data; no tensors are kept."""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

__all__ = ["STATUSES", "UNUSED_REASONS", "TensorRecord", "RemapReport", "explain_unused",
           "status_of"]

#: report statuses, in precedence order when several changes apply to one tensor
STATUSES: Tuple[str, ...] = ("copied", "width_cropped", "kernel_padded", "kernel_cropped",
                             "zero_filled", "left_at_init")
_PRECEDENCE = ("zero_filled", "kernel_padded", "kernel_cropped", "width_cropped")


def status_of(changes: Sequence[str]) -> str:
    """The status of a tensor copied from the seed with ``changes`` made to it: the first of
    zero_filled, kernel_padded, kernel_cropped, width_cropped among them, else copied."""
    return next((c for c in _PRECEDENCE if c in changes), "copied")


@dataclass
class TensorRecord:
    """How one target tensor was produced."""

    key: str
    status: str
    source: Optional[str]
    seed_shape: Optional[Tuple[int, ...]]
    target_shape: Tuple[int, ...]
    changes: Tuple[str, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "status": self.status, "source": self.source,
                "seed_shape": None if self.seed_shape is None else list(self.seed_shape),
                "target_shape": list(self.target_shape), "changes": list(self.changes)}


def _group(key: str) -> str:
    p = key.split(".")
    return f"stage {p[1]}" if p[0] == "stages" and len(p) > 1 else p[0]


#: why a seed tensor can be left unused, in report order
UNUSED_REASONS = {
    "bn_free": "BN tensors of target layers that have no BN parameters (the super network's "
               "searchable BNs are non-affine and use batch statistics, by design)",
    "depth": "seed layers no target layer inherits from (the target stage is shallower)",
    "head": "the seed's 1x1 conv to 1280 channels / classifier (no part of a detection or "
            "segmentation backbone)",
    "other": "not explained by the target's layout",
}


def explain_unused(unused: Sequence[str], inherited: Set[Tuple[int, int]]
                   ) -> "OrderedDict[str, List[str]]":
    """Group unused canonical seed keys by :data:`UNUSED_REASONS`; ``inherited`` holds the
    ``(stage, layer)`` seed layers some target layer inherits from. Pure."""
    out: "OrderedDict[str, List[str]]" = OrderedDict((r, []) for r in UNUSED_REASONS)
    for k in unused:
        p = k.split(".")
        if p[0] in ("head", "classifier"):
            out["head"].append(k)
        elif p[0] == "stages" and len(p) > 3 and (int(p[1]), int(p[2])) not in inherited:
            out["depth"].append(k)
        elif p[0] == "stages" and ".bn." in k:
            out["bn_free"].append(k)
        else:
            out["other"].append(k)
    return OrderedDict((r, v) for r, v in out.items() if v)


@dataclass
class RemapReport:
    """Per target tensor: its status (:data:`STATUSES`); and the seed tensors left unused."""

    records: List[TensorRecord] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)
    enabled: bool = True

    @classmethod
    def disabled(cls, reason: str, **meta: Any) -> "RemapReport":
        """A report saying that nothing was remapped (and why)."""
        return cls([], [], dict(meta, reason=reason), enabled=False)

    def counts(self) -> Dict[str, int]:
        """Number of target tensors per status, plus ``unused`` seed tensors."""
        c = {s: 0 for s in STATUSES}
        for r in self.records:
            c[r.status] += 1
        c["unused"] = len(self.unused)
        return c

    def keys_with(self, status: str) -> List[str]:
        return [r.key for r in self.records if r.status == status]

    def record(self, key: str) -> TensorRecord:
        for r in self.records:
            if r.key == key:
                return r
        raise KeyError(key)

    def summary(self, max_unused: int = 6) -> str:
        """Compact text table: tensors per status per group (stem, stage s, head, ...)."""
        if not self.enabled:
            return f"FNA remapping disabled: {self.meta.get('reason', '')}"
        m = self.meta
        lines = [f"FNA remapping: seed {m.get('seed_layout', '?')} -> {m.get('target_kind', '?')}"
                 f" (width={m.get('width')}, kernel={m.get('kernel')})"]
        groups: "OrderedDict[str, Dict[str, int]]" = OrderedDict()
        for r in self.records:
            groups.setdefault(_group(r.key), {s: 0 for s in STATUSES})[r.status] += 1
        short = {"copied": "copied", "width_cropped": "w_crop", "kernel_padded": "k_pad",
                 "kernel_cropped": "k_crop", "zero_filled": "zero_fill",
                 "left_at_init": "at_init"}
        lines.append(f"{'group':<10}" + "".join(f"{short[s]:>10}" for s in STATUSES))
        for g, c in list(groups.items()) + [("total", self.counts())]:
            lines.append(f"{g:<10}" + "".join(f"{c[s]:>10}" for s in STATUSES))
        if self.unused:
            lines.append(f"unused seed tensors: {len(self.unused)}")
            for reason, keys in self.unused_by_reason().items():
                more = f", ... (+{len(keys) - max_unused})" if len(keys) > max_unused else ""
                lines.append(f"  {len(keys)} {UNUSED_REASONS[reason]}: "
                             f"{', '.join(keys[:max_unused])}{more}")
        return "\n".join(lines)

    def unused_by_reason(self) -> "OrderedDict[str, List[str]]":
        """The unused seed tensors grouped by why (see :func:`explain_unused`)."""
        inherited = {tuple(x) for x in self.meta.get("inherited_seed_layers", [])}
        return explain_unused(self.unused, inherited)

    def to_dict(self) -> Dict[str, Any]:
        return {"enabled": self.enabled, "meta": self.meta, "counts": self.counts(),
                "tensors": [r.to_dict() for r in self.records], "unused_seed_tensors":
                list(self.unused), "unused_by_reason": dict(self.unused_by_reason())}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)
