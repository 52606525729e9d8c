"""The op vocabulary of architectures and search spaces: ``k{3,5,7}_e{1,3,6}`` (an MBConv with
kernel ``k`` and expansion ``e``) and ``skip``, the candidate sets of the paper's search
spaces, and the messages that say where a value is wrong (``"file, stage 2, layer 1: ..."``)."""
from __future__ import annotations

import re
from typing import Any, Iterable, Optional, Tuple

from ..errors import ArchError

__all__ = ["SKIP", "KERNELS", "EXPANSIONS", "FIRST_LAYER_OPS", "OTHER_LAYER_OPS", "parse_op",
           "op_name", "location", "check_positive_int"]

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


def location(source: str, stage: Optional[int] = None, layer: Optional[int] = None) -> str:
    """The prefix of an error message: ``"source, stage 2, layer 1: "`` (empty parts left out;
    ``""`` when all are)."""
    parts = [p for p in (source, None if stage is None else f"stage {stage}",
                         None if layer is None else f"layer {layer}") if p]
    return (", ".join(parts) + ": ") if parts else ""


def check_positive_int(value: Any, name: str, where: str,
                       allowed: Optional[Iterable[int]] = None) -> int:
    """``value`` if it is a positive int (not a bool), and one of ``allowed`` when given; else
    :class:`ArchError` ``"{where}{name} must be ..."``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArchError(f"{where}{name} must be a positive integer, got {value!r}")
    if allowed is not None and value not in tuple(allowed):
        raise ArchError(f"{where}{name} must be one of {tuple(allowed)}, got {value!r}")
    return value
