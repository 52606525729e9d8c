"""Arch files: the versioned JSON document (:meth:`~.types.Arch.to_dict`,
``{"format": "fna_d2.arch", "version": 1, ...}``) and the FNA authors' one-line-per-stage text
``[[Cin, Cout], [ops...], stride]|...``, which is parsed with :func:`json.loads` after quote
normalisation, never evaluated."""
from __future__ import annotations

import json
import re

from ..errors import ArchError
from ..utils import write_text
from .opnames import location, parse_op
from .types import Arch, Stage

__all__ = ["load_arch", "save_arch", "parse_authors_format", "to_authors_format"]

_AUTHORS_STAGE = re.compile(
    r"^\s*\[\s*\[\s*(\d+)\s*,\s*(\d+)\s*\]\s*,\s*(\[[^\]]*\])\s*,\s*(\d+)\s*\]\s*$")
#: MobileNetV2's first block, added when an authors' string starts at the 16-channel stage 1
_FIRST_BLOCK = Stage(32, 16, 1, ("k3_e1",))


def _is_first_block(st: Stage) -> bool:
    """One stride-1 layer of expansion 1: the first block of MobileNetV2 / EfficientNet-Lite."""
    if st.depth != 1 or st.stride != 1:
        return False
    try:
        parsed = parse_op(st.ops[0])
    except ArchError:
        return False
    return parsed is not None and parsed[1] == 1


def parse_authors_format(text: str, where: str = "") -> Arch:
    """Parse ``[[Cin, Cout], ['op', ...], stride]|...`` (the FNA release's format).

    As in the authors' code, the first entry is the first block and its ``Cin`` is the stem
    width. An architecture given from the 16-channel stage 1 on (no first block) gets
    MobileNetV2's fixed ``[[32, 16], ['k3_e1'], 1]`` added (stem 32). Parsed with a regular
    expression and :func:`json.loads`; nothing is evaluated."""
    if not isinstance(text, str) or not text.strip():
        raise ArchError(f"{location(where)}empty architecture string")
    stages = []
    for s, part in enumerate(text.strip().split("|")):
        m = _AUTHORS_STAGE.match(part)
        if m is None:
            raise ArchError(f"{location(where, s)}cannot parse {part.strip()!r}; expected "
                            "[[Cin, Cout], ['op', ...], stride]")
        try:
            ops = json.loads(m.group(3).replace("'", '"'))
        except json.JSONDecodeError as e:
            raise ArchError(f"{location(where, s)}bad op list {m.group(3)!r}: {e}") from None
        if not all(isinstance(o, str) for o in ops):
            raise ArchError(f"{location(where, s)}ops must be strings, got {ops!r}")
        stages.append(Stage(int(m.group(1)), int(m.group(2)), int(m.group(4)), tuple(ops)))
    if stages[0].cin == _FIRST_BLOCK.cout and not _is_first_block(stages[0]):
        stages.insert(0, _FIRST_BLOCK)
    return Arch(tuple(stages), stages[0].cin, {}).validate(where)


def to_authors_format(arch: Arch) -> str:
    """Inverse of :func:`parse_authors_format` (the stem width is the first stage's ``Cin``;
    dilation is not representable and is dropped)."""
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
    return write_text(path, arch.to_json() + "\n")
