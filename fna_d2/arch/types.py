"""Architectures and search spaces as plain, validated data.

An :class:`Arch` is a stem width plus a list of :class:`Stage` s; each stage has its input and
output widths, the stride and dilation of its first layer, and one op name per layer
(``k{3,5,7}_e{1,3,6}`` or ``skip``, :mod:`.opnames`). A :class:`SearchSpace` has the same macro
structure with a tuple of candidate op names per layer. Stage 0 is the fixed ``32->16 k3_e1``
block of MobileNetV2; it is part of every architecture so that seed, super network and derived
network share one structure (and one parameter naming, see :mod:`fna_d2.modeling`).

:meth:`Arch.to_dict` / :meth:`Arch.from_dict` are the versioned JSON document
(``{"format": "fna_d2.arch", "version": 1, ...}``) that :mod:`.files` reads and writes.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ArchError
from .opnames import SKIP, check_positive_int, location, parse_op

__all__ = ["Stage", "Arch", "SearchStage", "SearchSpace", "ARCH_FORMAT", "ARCH_VERSION"]

ARCH_FORMAT = "fna_d2.arch"
ARCH_VERSION = 1


@dataclass(frozen=True)
class Stage:
    """One stage: ``ops[i]`` is the op of layer ``i``; the first layer has ``stride``."""

    cin: int
    cout: int
    stride: int
    ops: Tuple[str, ...]
    dilation: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))

    @property
    def depth(self) -> int:
        return len(self.ops)

    def layer_io(self, i: int) -> Tuple[int, int, int]:
        """(cin, cout, stride) of layer ``i``."""
        return (self.cin, self.cout, self.stride) if i == 0 else (self.cout, self.cout, 1)

    def validate(self, where: str = "", index: Optional[int] = None) -> None:
        w = location(where, index)
        check_positive_int(self.cin, "cin", w)
        check_positive_int(self.cout, "cout", w)
        check_positive_int(self.stride, "stride", w, (1, 2))
        check_positive_int(self.dilation, "dilation", w)
        if not self.ops:
            raise ArchError(f"{w}a stage needs at least one layer")
        for i, op in enumerate(self.ops):
            lw = location(where, index, i)
            parse_op(op, lw)
            cin, cout, stride = self.layer_io(i)
            if op == SKIP and (cin != cout or stride != 1):
                raise ArchError(
                    f"{lw}'skip' is only allowed where shapes are kept, but this layer maps "
                    f"{cin}->{cout} channels with stride {stride}")


@dataclass(frozen=True)
class Arch:
    """A network: stem (3->``stem_channels``, stride 2) followed by ``stages``."""

    stages: Tuple[Stage, ...]
    stem_channels: int = 32
    meta: Dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))

    def validate(self, where: str = "") -> "Arch":
        """Check ops, widths and strides; return ``self``. Raises :class:`ArchError`."""
        check_positive_int(self.stem_channels, "stem_channels", location(where))
        if not self.stages:
            raise ArchError(f"{location(where)}an architecture needs at least one stage")
        prev = self.stem_channels
        for s, st in enumerate(self.stages):
            if not isinstance(st, Stage):
                raise ArchError(f"{location(where, s)}expected a Stage, got {type(st).__name__}")
            st.validate(where, s)
            if st.cin != prev:
                raise ArchError(
                    f"{location(where, s)}input width {st.cin} does not match the previous "
                    f"stage's output width {prev}")
            prev = st.cout
        return self

    @property
    def depths(self) -> Tuple[int, ...]:
        return tuple(st.depth for st in self.stages)

    def without_meta(self) -> "Arch":
        return Arch(self.stages, self.stem_channels, {})

    def skips_to_end(self) -> "Arch":
        """Move ``skip`` layers to the end of their stage (the paper's derived-net rule).

        The first layer is never ``skip`` (validation forbids it where shapes change; where
        they do not, it is kept at its place only if all layers are ``skip``)."""
        stages = []
        for st in self.stages:
            real = [op for op in st.ops if op != SKIP]
            if not real:
                stages.append(st)
                continue
            ops = tuple(real + [SKIP] * (len(st.ops) - len(real)))
            stages.append(Stage(st.cin, st.cout, st.stride, ops, st.dilation))
        return Arch(tuple(stages), self.stem_channels, dict(self.meta))

    def with_output_stride(self, output_stride: Optional[int]) -> "Arch":
        """Dilate stages once the accumulated stride reaches ``output_stride`` (DeepLab rule)."""
        return Arch(_dilate(self.stages, self.stem_channels, output_stride),
                    self.stem_channels, dict(self.meta))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": ARCH_FORMAT,
            "version": ARCH_VERSION,
            "stem_channels": self.stem_channels,
            "stages": [
                {"cin": s.cin, "cout": s.cout, "stride": s.stride, "dilation": s.dilation,
                 "ops": list(s.ops)} for s in self.stages
            ],
            "meta": copy.deepcopy(self.meta),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> "Arch":
        """Parse and validate the JSON document form (see :meth:`to_dict`)."""
        if not isinstance(d, dict):
            raise ArchError(f"{location(where)}expected a JSON object, got {type(d).__name__}")
        fmt, ver = d.get("format"), d.get("version")
        if fmt != ARCH_FORMAT:
            raise ArchError(f"{location(where)}'format' must be {ARCH_FORMAT!r}, got {fmt!r}")
        if ver != ARCH_VERSION:
            raise ArchError(
                f"{location(where)}unsupported arch file version {ver!r} (this fna_d2 reads "
                f"version {ARCH_VERSION})")
        unknown = set(d) - {"format", "version", "stem_channels", "stages", "meta"}
        if unknown:
            raise ArchError(f"{location(where)}unknown keys {sorted(unknown)}")
        stages_in = d.get("stages")
        if not isinstance(stages_in, list):
            raise ArchError(f"{location(where)}'stages' must be a list")
        stages = []
        for s, sd in enumerate(stages_in):
            w = location(where, s)
            if not isinstance(sd, dict):
                raise ArchError(f"{w}expected an object with cin, cout, stride, ops")
            missing = {"cin", "cout", "stride", "ops"} - set(sd)
            if missing:
                raise ArchError(f"{w}missing keys {sorted(missing)}")
            extra = set(sd) - {"cin", "cout", "stride", "ops", "dilation"}
            if extra:
                raise ArchError(f"{w}unknown keys {sorted(extra)}")
            if not isinstance(sd["ops"], list) or not all(isinstance(o, str) for o in sd["ops"]):
                raise ArchError(f"{w}'ops' must be a list of op names, got {sd['ops']!r}")
            stages.append(Stage(sd["cin"], sd["cout"], sd["stride"], tuple(sd["ops"]),
                                sd.get("dilation", 1)))
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise ArchError(f"{location(where)}'meta' must be an object")
        return cls(tuple(stages), d.get("stem_channels", 32), meta).validate(where)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


@dataclass(frozen=True)
class SearchStage:
    """A stage of a search space: ``candidates[i]`` are the ops layer ``i`` chooses from."""

    cin: int
    cout: int
    stride: int
    candidates: Tuple[Tuple[str, ...], ...]
    dilation: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(tuple(c) for c in self.candidates))

    @property
    def depth(self) -> int:
        return len(self.candidates)

    def layer_io(self, i: int) -> Tuple[int, int, int]:
        return (self.cin, self.cout, self.stride) if i == 0 else (self.cout, self.cout, 1)

    def stage_with(self, ops: Sequence[str]) -> Stage:
        return Stage(self.cin, self.cout, self.stride, tuple(ops), self.dilation)


@dataclass(frozen=True)
class SearchSpace:
    """Macro structure plus per-layer candidates. Layers with >1 candidate are searchable."""

    stages: Tuple[SearchStage, ...]
    stem_channels: int = 32
    name: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))

    def validate(self, where: str = "") -> "SearchSpace":
        """Every candidate path must be a valid :class:`Arch`; raises :class:`ArchError`."""
        prev = self.stem_channels
        for s, st in enumerate(self.stages):
            if st.cin != prev:
                raise ArchError(f"{location(where, s)}input width {st.cin} does not match the "
                                f"previous stage's output width {prev}")
            prev = st.cout
            for i, cands in enumerate(st.candidates):
                if not cands:
                    raise ArchError(f"{location(where, s, i)}no candidate ops")
                if len(set(cands)) != len(cands):
                    raise ArchError(f"{location(where, s, i)}duplicate candidates {cands}")
                for op in cands:
                    ops = [c[0] for c in st.candidates]
                    ops[i] = op
                    st.stage_with(ops).validate(where, s)
        return self

    def searchable_layers(self) -> List[Tuple[int, int]]:
        """(stage, layer) of every layer with more than one candidate, in order."""
        return [(s, i) for s, st in enumerate(self.stages)
                for i, c in enumerate(st.candidates) if len(c) > 1]

    @property
    def num_searchable(self) -> int:
        return len(self.searchable_layers())

    def arch_from_choices(self, choices: Sequence[Sequence[int]], meta: Optional[dict] = None
                          ) -> Arch:
        """Build the :class:`Arch` that picks ``candidates[i][choices[s][i]]`` per layer."""
        if len(choices) != len(self.stages):
            raise ArchError(f"expected choices for {len(self.stages)} stages, got {len(choices)}")
        stages = []
        for s, (st, ch) in enumerate(zip(self.stages, choices)):
            if len(ch) != st.depth:
                raise ArchError(f"stage {s}: expected {st.depth} choices, got {len(ch)}")
            stages.append(st.stage_with([st.candidates[i][j] for i, j in enumerate(ch)]))
        return Arch(tuple(stages), self.stem_channels, dict(meta or {})).validate()

    def contains(self, arch: Arch) -> bool:
        """True if ``arch`` is one path of this space (ignoring meta)."""
        if len(arch.stages) != len(self.stages) or arch.stem_channels != self.stem_channels:
            return False
        for a, b in zip(arch.stages, self.stages):
            if (a.cin, a.cout, a.stride, a.dilation) != (b.cin, b.cout, b.stride, b.dilation):
                return False
            if a.depth != b.depth or any(op not in c for op, c in zip(a.ops, b.candidates)):
                return False
        return True

    def arch_from_path(self, path: Sequence[int], meta: Optional[dict] = None) -> Arch:
        """The :class:`Arch` that takes candidate ``path[l]`` at searchable layer ``l`` (in
        :meth:`searchable_layers` order) and the only candidate everywhere else."""
        if len(path) != self.num_searchable:
            raise ArchError(f"expected one candidate index per searchable layer of search space "
                            f"{self.name!r} ({self.num_searchable}), got {len(path)}")
        it = iter(path)
        choices = [[next(it) if len(c) > 1 else 0 for c in st.candidates] for st in self.stages]
        return self.arch_from_choices(choices, meta)

    def path_of(self, arch: Arch, where: str = "") -> List[int]:
        """Inverse of :meth:`arch_from_path`: the candidate index of ``arch`` 's op at every
        searchable layer. :class:`ArchError` (prefixed by ``where``) if ``arch`` is not a path
        of this space."""
        if not self.contains(arch):
            raise ArchError(f"{location(where)}architecture is not a path of search space "
                            f"{self.name!r}")
        return [self.stages[s].candidates[i].index(arch.stages[s].ops[i])
                for s, i in self.searchable_layers()]

    def with_output_stride(self, output_stride: Optional[int]) -> "SearchSpace":
        stages = _dilate(self.stages, self.stem_channels, output_stride)
        return SearchSpace(tuple(stages), self.stem_channels, self.name)


def _dilate(stages, stem_channels, output_stride):
    """Apply the DeepLab output-stride rule to a sequence of (Search)Stage."""
    if output_stride is None or output_stride <= 0:
        return tuple(stages)
    if output_stride & (output_stride - 1) or output_stride < 4:
        raise ArchError(f"output stride must be a power of two >= 4, got {output_stride}")
    acc, dil, out = 2, 1, []  # the stem has stride 2
    for st in stages:
        stride, dilation = st.stride, st.dilation
        if acc >= output_stride:
            dil *= stride
            stride, dilation = 1, dil
        else:
            acc *= stride
        out.append(type(st)(st.cin, st.cout, stride,
                            st.ops if isinstance(st, Stage) else st.candidates, dilation))
    return tuple(out)
