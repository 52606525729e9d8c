"""What a search checkpoint holds beyond detectron2's trainer state, and when it may be
resumed: the search space's signature, RetinaNet's loss EMA and the resume checks
(:class:`~fna_d2.errors.SearchResumeError` for another space or another data split)."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from torch import nn

from ...errors import SearchResumeError
from ...utils import unwrap_model

__all__ = ["STATE_VERSION", "space_signature", "module_attrs", "restore_module_attrs",
           "check_resumable"]

#: version of the ``"search"`` entry of the trainer state
STATE_VERSION = 1


def space_signature(net: nn.Module) -> Dict[str, Any]:
    """The super network's space: its name, the alpha shapes and each layer's candidates."""
    return {"name": net.space.name,
            "alpha_shapes": [list(a.shape) for a in net.arch_parameters()],
            "candidates": [list(m.names) for m in net.mixed_ops()]}


def module_attrs(model: nn.Module) -> Dict[str, float]:
    """Training state detectron2 keeps outside ``state_dict`` (RetinaNet's EMA
    ``loss_normalizer``); without it a resumed run would scale its losses differently."""
    return {name: float(m.loss_normalizer) for name, m in unwrap_model(model).named_modules()
            if isinstance(getattr(m, "loss_normalizer", None), (int, float))}


def restore_module_attrs(model: nn.Module, attrs: Mapping[str, float]) -> None:
    """Put back what :func:`module_attrs` recorded (modules that no longer exist are skipped)."""
    modules = dict(unwrap_model(model).named_modules())
    for name, value in attrs.items():
        if name in modules:
            modules[name].loss_normalizer = value


def check_resumable(state: Optional[Mapping[str, Any]], signature: Mapping[str, Any],
                    split_fingerprint: str) -> Mapping[str, Any]:
    """``state`` (a checkpoint's ``"search"`` entry) if it can continue this search, else
    :class:`SearchResumeError` saying why and what to do."""
    if state is None:
        raise SearchResumeError("the checkpoint has no search state (it was not written by "
                                "SearchTrainer); start the search in a fresh OUTPUT_DIR")
    theirs = state["space"]
    if theirs["alpha_shapes"] != signature["alpha_shapes"] or \
            theirs["candidates"] != signature["candidates"]:
        raise SearchResumeError(
            f"the checkpoint is from a search over a different search space "
            f"({theirs['name']!r}, alpha shapes {theirs['alpha_shapes']}) than this "
            f"config's ({signature['name']!r}, alpha shapes {signature['alpha_shapes']}); use "
            f"the checkpoint's config or a fresh OUTPUT_DIR")
    if state["split_fingerprint"] != split_fingerprint:
        raise SearchResumeError(
            "the checkpoint used a different arch/weight split of the training data "
            "(DATASETS.TRAIN, its images, MODEL.FNA.SEARCH.ARCH_SPLIT or SEED changed); "
            "resuming would mix data the search has kept apart. Use the original settings "
            "or a fresh OUTPUT_DIR")
    return state
