"""Arch files: the versioned JSON document (:meth:`~.types.Arch.to_dict`,
``{"format": "fna_d2.arch", "version": 1, ...}``) and the FNA authors' one-line-per-stage text
``[[Cin, Cout], [ops...], stride]|...``, which is parsed with :func:`json.loads` after quote
normalisation, never evaluated.

The architecture record every checkpoint fna_d2 writes carries under
:data:`CHECKPOINT_ARCH_KEY` (:func:`arch_record`): the kind of backbone, its architecture as
the JSON document (derived and seed networks) or its search space's name (super networks), and
where the architecture came from. :func:`read_checkpoint_arch` reads it back without reading
the checkpoint's tensors (``torch.load(weights_only=True)``, memory-mapped)."""
from __future__ import annotations

import copy
import functools
import json
import os
import re
from typing import Any, Dict, Optional

from ..errors import ArchError, CheckpointError
from ..utils import peek_torch_file, write_text
from .opnames import location, parse_op
from .types import Arch, Stage

__all__ = ["load_arch", "save_arch", "parse_authors_format", "to_authors_format",
           "CHECKPOINT_ARCH_KEY", "NETWORK_KINDS", "arch_record", "record_arch",
           "read_checkpoint_arch"]

#: key of the architecture record in a checkpoint's top-level dict (beside "model")
CHECKPOINT_ARCH_KEY = "fna_d2_arch"
_RECORD_FORMAT = "fna_d2.checkpoint_arch"
_RECORD_VERSION = 1
#: record "network" -> what it is (the parameter layout differs between them)
NETWORK_KINDS = {"derived": "derived network", "seed": "torchvision-layout MobileNetV2 seed",
                 "super": "super network"}

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


def arch_record(network: str, arch: Optional[Arch] = None, search_space: Optional[str] = None,
                source: Optional[str] = None) -> Dict[str, Any]:
    """The record a checkpoint carries: ``network`` (a key of :data:`NETWORK_KINDS`), ``arch``
    as its JSON document (None for a super network), the ``search_space`` name (super
    networks) and ``source``, where the architecture came from (e.g. ``MODEL.FNA.ARCH=...``).
    Plain JSON-like data, so ``torch.load(weights_only=True)`` reads it."""
    if network not in NETWORK_KINDS:
        raise ArchError(f"unknown network kind {network!r}; known: {', '.join(NETWORK_KINDS)}")
    return {"format": _RECORD_FORMAT, "version": _RECORD_VERSION, "network": network,
            "arch": arch.to_dict() if arch is not None else None,
            "search_space": search_space, "source": source}


def record_arch(record: Any, where: str) -> Optional[Arch]:
    """The :class:`Arch` of a record (None for a super network), validated; a malformed
    record raises :class:`ArchError` naming ``where`` (the checkpoint)."""
    if not isinstance(record, dict) or record.get("format") != _RECORD_FORMAT:
        raise ArchError(f"{where}: {CHECKPOINT_ARCH_KEY!r} is not an fna_d2 architecture record")
    if record.get("version") != _RECORD_VERSION or record.get("network") not in NETWORK_KINDS:
        raise ArchError(f"{where}: unsupported architecture record (version "
                        f"{record.get('version')!r}, network {record.get('network')!r}); this "
                        f"fna_d2 reads version {_RECORD_VERSION}")
    if record.get("arch") is None:
        return None
    return Arch.from_dict(record["arch"], where=f"{where} [{CHECKPOINT_ARCH_KEY}]")


def read_checkpoint_arch(path: str) -> Optional[Dict[str, Any]]:
    """The architecture record of the local torch checkpoint ``path``, or None when the file
    has none (a checkpoint of another program, a bare state dict) or is not a torch file
    fna_d2 would read (``.pkl`` / ``.pyth``, which detectron2 reads itself; URLs). A torch
    file that cannot be read raises :class:`CheckpointError` naming it."""
    if "://" in path or not os.path.isfile(path) or path.endswith((".pkl", ".pyth")):
        return None
    st = os.stat(path)  # the model is built, then loaded: read a file once while unchanged
    return copy.deepcopy(_read_record(os.path.abspath(path), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=4)
def _read_record(path: str, mtime_ns: int, size: int) -> Optional[Dict[str, Any]]:
    try:
        obj = peek_torch_file(path)
    except Exception as e:  # unpickling and zip errors come in many types
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint "
                              f"({type(e).__name__}: {first})") from None
    if not isinstance(obj, dict) or CHECKPOINT_ARCH_KEY not in obj:
        return None
    return obj[CHECKPOINT_ARCH_KEY]
