"""Architectures and search spaces as plain, validated data.

An :class:`Arch` is a stem width plus a list of :class:`Stage` s; each stage has its input and
output widths, the stride and dilation of its first layer, and one op name per layer
(``k{3,5,7}_e{1,3,6}`` or ``skip``). A :class:`SearchSpace` has the same macro structure with a
tuple of candidate op names per layer. Stage 0 is the fixed ``32->16 k3_e1`` block of
MobileNetV2; it is part of every architecture so that seed, super network and derived network
share one structure (and one parameter naming, see :mod:`fna_d2.modeling.backbones`).

Files: a versioned JSON document (``{"format": "fna_d2.arch", "version": 1, ...}``) and the FNA
authors' one-line-per-stage text ``[[Cin, Cout], [ops...], stride]|...``, which is parsed with
:func:`json.loads` after quote normalisation, never with ``eval``.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .errors import ArchError  # noqa: F401  (defined there; re-exported)

__all__ = [
    "ArchError",
    "Layer",
    "iter_layers",
    "Stage",
    "Arch",
    "SearchStage",
    "SearchSpace",
    "parse_op",
    "op_name",
    "SKIP",
    "KERNELS",
    "EXPANSIONS",
    "FIRST_LAYER_OPS",
    "OTHER_LAYER_OPS",
    "mobilenetv2_arch",
    "fna_retinanet_arch",
    "detection_space",
    "segmentation_space",
    "space_from_seed",
    "load_arch",
    "save_arch",
    "parse_authors_format",
    "to_authors_format",
    "ARCH_FORMAT",
    "ARCH_VERSION",
]

ARCH_FORMAT = "fna_d2.arch"
ARCH_VERSION = 1
SKIP = "skip"
KERNELS = (3, 5, 7)
EXPANSIONS = (1, 3, 6)
_OP_RE = re.compile(r"^k([0-9]+)_e([0-9]+)$")

#: candidates of the first layer of every searched stage (the paper's 6 ops)
FIRST_LAYER_OPS: Tuple[str, ...] = tuple(f"k{k}_e{e}" for k in KERNELS for e in (3, 6))
#: candidates of the other layers: the 6 ops plus ``skip``
OTHER_LAYER_OPS: Tuple[str, ...] = FIRST_LAYER_OPS + (SKIP,)


def parse_op(name: str, where: str = "") -> Optional[Tuple[int, int]]:
    """``"k5_e6" -> (5, 6)``; ``"skip" -> None``. Unknown names raise :class:`ArchError`."""
    if name == SKIP:
        return None
    m = _OP_RE.match(name) if isinstance(name, str) else None
    if m is None or int(m.group(1)) not in KERNELS or int(m.group(2)) not in EXPANSIONS:
        known = ", ".join([f"k{k}_e{e}" for k in KERNELS for e in EXPANSIONS] + [SKIP])
        raise ArchError(f"{where}unknown op {name!r} (known ops: {known})")
    return int(m.group(1)), int(m.group(2))


def op_name(kernel: int, expansion: int) -> str:
    """Inverse of :func:`parse_op` for MBConv ops."""
    name = f"k{kernel}_e{expansion}"
    parse_op(name)
    return name


def _where(source: str, stage: Optional[int] = None, layer: Optional[int] = None) -> str:
    parts = [p for p in (source, None if stage is None else f"stage {stage}",
                         None if layer is None else f"layer {layer}") if p]
    return (", ".join(parts) + ": ") if parts else ""


def _check_int(value: Any, name: str, where: str, allowed: Optional[Iterable[int]] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArchError(f"{where}{name} must be a positive integer, got {value!r}")
    if allowed is not None and value not in tuple(allowed):
        raise ArchError(f"{where}{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


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
        w = _where(where, index)
        _check_int(self.cin, "cin", w)
        _check_int(self.cout, "cout", w)
        _check_int(self.stride, "stride", w, (1, 2))
        _check_int(self.dilation, "dilation", w)
        if not self.ops:
            raise ArchError(f"{w}a stage needs at least one layer")
        for i, op in enumerate(self.ops):
            lw = _where(where, index, i)
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
        _check_int(self.stem_channels, "stem_channels", _where(where))
        if not self.stages:
            raise ArchError(f"{_where(where)}an architecture needs at least one stage")
        prev = self.stem_channels
        for s, st in enumerate(self.stages):
            if not isinstance(st, Stage):
                raise ArchError(f"{_where(where, s)}expected a Stage, got {type(st).__name__}")
            st.validate(where, s)
            if st.cin != prev:
                raise ArchError(
                    f"{_where(where, s)}input width {st.cin} does not match the previous "
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
            raise ArchError(f"{_where(where)}expected a JSON object, got {type(d).__name__}")
        fmt, ver = d.get("format"), d.get("version")
        if fmt != ARCH_FORMAT:
            raise ArchError(f"{_where(where)}'format' must be {ARCH_FORMAT!r}, got {fmt!r}")
        if ver != ARCH_VERSION:
            raise ArchError(
                f"{_where(where)}unsupported arch file version {ver!r} (this fna_d2 reads "
                f"version {ARCH_VERSION})")
        unknown = set(d) - {"format", "version", "stem_channels", "stages", "meta"}
        if unknown:
            raise ArchError(f"{_where(where)}unknown keys {sorted(unknown)}")
        stages_in = d.get("stages")
        if not isinstance(stages_in, list):
            raise ArchError(f"{_where(where)}'stages' must be a list")
        stages = []
        for s, sd in enumerate(stages_in):
            w = _where(where, s)
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
            raise ArchError(f"{_where(where)}'meta' must be an object")
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
                raise ArchError(f"{_where(where, s)}input width {st.cin} does not match the "
                                f"previous stage's output width {prev}")
            prev = st.cout
            for i, cands in enumerate(st.candidates):
                if not cands:
                    raise ArchError(f"{_where(where, s, i)}no candidate ops")
                if len(set(cands)) != len(cands):
                    raise ArchError(f"{_where(where, s, i)}duplicate candidates {cands}")
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

    def with_output_stride(self, output_stride: Optional[int]) -> "SearchSpace":
        stages = _dilate(self.stages, self.stem_channels, output_stride)
        return SearchSpace(tuple(stages), self.stem_channels, self.name)


@dataclass(frozen=True)
class Layer:
    """One layer of an :class:`Arch` or :class:`SearchSpace` as the network builds it.

    ``ops``: the layer's op (an ``Arch``) or candidates (a ``SearchSpace``); ``in_hw`` /
    ``out_hw``: its input and output (H, W) for the network input given to
    :func:`iter_layers` (None when no input size was given). Every op of a layer keeps the
    same output shape ("same" padding: ``ceil(size / stride)``)."""

    stage: int
    index: int
    cin: int
    cout: int
    stride: int
    dilation: int
    ops: Tuple[str, ...]
    in_hw: Optional[Tuple[int, int]] = None
    out_hw: Optional[Tuple[int, int]] = None

    @property
    def searchable(self) -> bool:
        return len(self.ops) > 1


def _same_out(size: int, stride: int) -> int:
    return -(-int(size) // int(stride))


def iter_layers(net: Any, input_size: Optional[Sequence[int]] = None) -> Iterator[Layer]:
    """Every layer of ``net`` (an :class:`Arch` or :class:`SearchSpace`, as given: apply
    ``with_output_stride`` first for a dilated network) in network order, with its widths,
    stride, dilation and, when ``input_size = (H, W)`` of the image is given, its input and
    output sizes after the stride-2 stem. The one walk that cost, latency and remapping use."""
    hw = None
    if input_size is not None:
        hw = (_same_out(input_size[0], 2), _same_out(input_size[1], 2))
    for s, st in enumerate(net.stages):
        per_layer = ([(op,) for op in st.ops] if isinstance(st, Stage)
                     else list(st.candidates))
        for i, ops in enumerate(per_layer):
            cin, cout, stride = st.layer_io(i)
            out = None if hw is None else (_same_out(hw[0], stride), _same_out(hw[1], stride))
            yield Layer(s, i, cin, cout, stride, st.dilation, tuple(ops), hw, out)
            hw = out


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


# ----------------------------------------------------------------------------- shipped archs
#: MobileNetV2 1.0 stages as (t, c, n, s); stage 0 is the fixed first block.
_MBV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
         (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenetv2_arch() -> Arch:
    """The seed: MobileNetV2 1.0 (all k3, e6 except the first block)."""
    stages, cin = [], 32
    for t, c, n, s in _MBV2:
        stages.append(Stage(cin, c, s, (op_name(3, t),) * n))
        cin = c
    return Arch(tuple(stages), 32, {"name": "mobilenetv2"}).validate()


def fna_retinanet_arch() -> Arch:
    """The architecture FNA found for RetinaNet on COCO (paper, Table/figure in sec. 7)."""
    text = ("[[32, 16], ['k3_e1'], 1]|[[16, 24], ['k3_e6', 'k3_e6', 'skip', 'skip'], 2]|"
            "[[24, 32], ['k7_e6', 'k5_e6', 'skip', 'skip'], 2]|"
            "[[32, 64], ['k3_e6', 'k5_e6', 'k7_e6', 'k3_e6'], 2]|"
            "[[64, 96], ['k5_e6', 'k7_e6', 'skip', 'skip'], 1]|"
            "[[96, 160], ['k7_e6', 'k7_e6', 'k7_e3', 'k7_e6'], 2]|[[160, 320], ['k7_e6'], 1]")
    arch = parse_authors_format(text)
    return Arch(arch.stages, arch.stem_channels, {"name": "fna_retinanet_coco",
                                                  "source": "FNA paper (ICLR 2020)"})


def space_from_seed(seed: Arch, depths: Sequence[int], name: str = "custom") -> SearchSpace:
    """Expand ``seed`` into a search space: stage 0 stays fixed; stage ``s>0`` gets
    ``depths[s-1]`` layers whose first layer chooses among :data:`FIRST_LAYER_OPS` and the
    rest among :data:`OTHER_LAYER_OPS` (the paper's rule; the seed's macro structure, i.e. its
    widths and strides, defines the space)."""
    seed.validate("seed")
    if len(depths) != len(seed.stages) - 1:
        raise ArchError(f"depths has {len(depths)} entries but the seed has "
                        f"{len(seed.stages) - 1} searchable stages")
    stages = [SearchStage(seed.stages[0].cin, seed.stages[0].cout, seed.stages[0].stride,
                          tuple((op,) for op in seed.stages[0].ops), seed.stages[0].dilation)]
    for s, (st, n) in enumerate(zip(seed.stages[1:], depths), start=1):
        _check_int(n, "depth", _where("", s))
        cands = []
        for i in range(n):
            cin, cout, stride = st.layer_io(i)
            shape_kept = cin == cout and stride == 1
            cands.append(OTHER_LAYER_OPS if (i > 0 and shape_kept) else FIRST_LAYER_OPS)
        stages.append(SearchStage(st.cin, st.cout, st.stride, tuple(cands), st.dilation))
    return SearchSpace(tuple(stages), seed.stem_channels, name).validate()


def detection_space(seed: Optional[Arch] = None) -> SearchSpace:
    """The paper's RetinaNet space: 4,4,4,4,4,1 layers (21 searchable)."""
    return space_from_seed(seed or mobilenetv2_arch(), (4, 4, 4, 4, 4, 1), "detection")


def segmentation_space(seed: Optional[Arch] = None) -> SearchSpace:
    """The paper's DeepLabv3 space: 4,4,6,6,4,1 layers (25 searchable)."""
    return space_from_seed(seed or mobilenetv2_arch(), (4, 4, 6, 6, 4, 1), "segmentation")


# ----------------------------------------------------------------------------- files
_AUTHORS_STAGE = re.compile(r"^\s*\[\s*\[\s*(\d+)\s*,\s*(\d+)\s*\]\s*,\s*(\[[^\]]*\])\s*,\s*(\d+)\s*\]\s*$")


def parse_authors_format(text: str, where: str = "") -> Arch:
    """Parse ``[[Cin, Cout], ['op', ...], stride]|...`` (the FNA release's format).

    The first stage may be the fixed ``[[32, 16], ['k3_e1'], 1]``; if it is absent it is added.
    Parsed with a regular expression and :func:`json.loads`; nothing is evaluated."""
    if not isinstance(text, str) or not text.strip():
        raise ArchError(f"{_where(where)}empty architecture string")
    stages = []
    for s, part in enumerate(text.strip().split("|")):
        m = _AUTHORS_STAGE.match(part)
        if m is None:
            raise ArchError(f"{_where(where, s)}cannot parse {part.strip()!r}; expected "
                            "[[Cin, Cout], ['op', ...], stride]")
        try:
            ops = json.loads(m.group(3).replace("'", '"'))
        except json.JSONDecodeError as e:
            raise ArchError(f"{_where(where, s)}bad op list {m.group(3)!r}: {e}") from None
        if not all(isinstance(o, str) for o in ops):
            raise ArchError(f"{_where(where, s)}ops must be strings, got {ops!r}")
        stages.append(Stage(int(m.group(1)), int(m.group(2)), int(m.group(4)), tuple(ops)))
    if stages[0].cin != 32 or stages[0].cout != 16:
        if stages[0].cin == 16:
            stages.insert(0, Stage(32, 16, 1, ("k3_e1",)))
    return Arch(tuple(stages), 32, {}).validate(where)


def to_authors_format(arch: Arch) -> str:
    """Inverse of :func:`parse_authors_format` (dilation is not representable and is dropped)."""
    return "|".join(f"[[{s.cin}, {s.cout}], {list(s.ops)!r}, {s.stride}]" for s in arch.stages)


def load_arch(path: str) -> Arch:
    """Read an arch file: the versioned JSON document, or a text file in the authors' format."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ArchError(f"{path}: cannot read arch file ({e.strerror})") from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: "
                            f"{e.msg}") from None
        return Arch.from_dict(d, where=path)
    return parse_authors_format(stripped, where=path)


def save_arch(arch: Arch, path: str) -> str:
    """Write ``arch`` as a versioned JSON file atomically (temp file + rename)."""
    arch.validate()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(arch.to_json() + "\n")
    os.replace(tmp, path)
    return path


def softmax_entropy(probs: Sequence[float]) -> float:
    """Entropy (nats) of a probability vector; a helper for search diagnostics."""
    return -sum(p * math.log(p) for p in probs if p > 0)
