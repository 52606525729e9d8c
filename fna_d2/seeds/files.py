"""Reading seed checkpoints: a torch file loaded safely (``weights_only=True``) and the state
dict inside it unwrapped from the usual wrappers. Names the file in every error."""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from ..errors import RemapError

__all__ = ["unwrap_state_dict", "read_state_dict"]


def unwrap_state_dict(obj: Any, where: str = "state dict") -> "OrderedDict[str, Tensor]":
    """Return the state dict inside ``obj`` (bare, ``{"model": sd}`` or ``{"state_dict": sd}``),
    with a DDP ``module.`` prefix removed. Anything else raises :class:`RemapError`."""
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        kind = "an empty mapping" if isinstance(obj, Mapping) else type(obj).__name__
        raise RemapError(f"{where}: not a state dict (expected a mapping of parameter names to "
                         f"tensors, optionally under 'model' or 'state_dict'; got {kind})")
    out: "OrderedDict[str, Tensor]" = OrderedDict()
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise RemapError(f"{where}: not a state dict: entry {k!r} is a "
                             f"{type(v).__name__}, not a tensor")
        out[k] = v
    if all(k.startswith("module.") for k in out):
        out = OrderedDict((k[len("module."):], v) for k, v in out.items())
    return out


def read_state_dict(local: str, shown: Optional[str] = None) -> "OrderedDict[str, Tensor]":
    """The state dict in the local file ``local`` (``torch.load(weights_only=True)``, then
    :func:`unwrap_state_dict`). Errors name ``shown`` (default: ``local``), e.g. the URI the
    user gave: :class:`RemapError` when the file is missing, unreadable or not a state dict."""
    shown = local if shown is None else shown
    if not os.path.isfile(local):
        raise RemapError(f"seed weights file not found: {shown}")
    try:
        obj = torch.load(local, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise RemapError(f"{shown}: cannot be read as a torch checkpoint "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None
    return unwrap_state_dict(obj, where=shown)
