"""Reading seed checkpoints: a torch file loaded safely (``weights_only=True``) and the state
dict inside it unwrapped from the usual wrappers. Names the file in every error.
:func:`is_detectron2_checkpoint` recognises a trained detectron2 model (which belongs in
``MODEL.WEIGHTS``, not in ``MODEL.FNA.SEED_WEIGHTS``)."""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from ..errors import RemapError

__all__ = ["unwrap_state_dict", "read_checkpoint", "read_state_dict",
           "is_detectron2_checkpoint"]


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


def read_checkpoint(local: str, shown: Optional[str] = None) -> Any:
    """The object in the local torch file ``local`` (``torch.load(weights_only=True)``).
    Errors name ``shown`` (default: ``local``), e.g. the URI the user gave:
    :class:`RemapError` when the file is missing or unreadable."""
    shown = local if shown is None else shown
    if not os.path.isfile(local):
        raise RemapError(f"seed weights file not found: {shown}")
    try:
        return torch.load(local, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise RemapError(f"{shown}: cannot be read as a torch checkpoint "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None


def read_state_dict(local: str, shown: Optional[str] = None) -> "OrderedDict[str, Tensor]":
    """The state dict in the local file ``local`` (:func:`read_checkpoint`, then
    :func:`unwrap_state_dict`). Errors name ``shown`` (default: ``local``):
    :class:`RemapError` when the file is missing, unreadable or not a state dict."""
    shown = local if shown is None else shown
    return unwrap_state_dict(read_checkpoint(local, shown), where=shown)


#: the top-level module of every detectron2 meta-architecture's parameters
_D2_PREFIXES = ("backbone.", "proposal_generator.", "roi_heads.", "sem_seg_head.", "head.")


def is_detectron2_checkpoint(obj: Any) -> bool:
    """True for what detectron2's checkpointer writes or reads as a whole model: a mapping
    with a ``"model"`` state dict and an ``"iteration"`` (a trained checkpoint) or
    ``"__author__"`` (a model-zoo file), or whose ``"model"`` keys are a meta-architecture's
    (``backbone.*`` with ``head.*`` / ``roi_heads.*`` ...)."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
        return False
    if "iteration" in obj or "__author__" in obj:
        return True
    keys = [k for k in obj["model"] if isinstance(k, str)]
    return any(k.startswith("backbone.") for k in keys) and \
        any(k.startswith(_D2_PREFIXES[1:]) for k in keys)
