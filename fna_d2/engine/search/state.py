"""What a search checkpoint holds beyond detectron2's trainer state, and when it may be
resumed: the search space's signature, every rank's own state (RetinaNet's loss EMA), the
gradient scalers' state and the resume checks (:class:`~fna_d2.errors.SearchResumeError` for
another space or another data split).

Per-rank state: the checkpoint is written by rank 0, but RetinaNet's ``loss_normalizer`` (an
EMA of each rank's own positive-anchor count) differs between ranks. The runner gathers every
rank's :func:`rank_state` after each iteration, the checkpoint stores the list in rank order
(``"ranks"``), and on resume each rank restores its own entry (:func:`own_rank_state`). The
rest (stream positions, the sampling generator, optimizers, scalers) is the same on every rank
by construction. A checkpoint from another number of processes gives each rank the mean of the
saved ranks' values, with a warning (the run goes on, not bit-exact: the per-rank split of each
batch changed anyway). A version-1 checkpoint (before this) holds rank 0's values only; they go
to every rank, as they did then.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

from torch import nn

from ...errors import SearchResumeError
from ...utils import unwrap_model

__all__ = ["STATE_VERSION", "space_signature", "module_attrs", "restore_module_attrs",
           "rank_state", "own_rank_state", "check_resumable"]

logger = logging.getLogger(__name__)

#: version of the ``"search"`` entry of the trainer state (2: per-rank state, grad scalers)
STATE_VERSION = 2


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


def rank_state(model: nn.Module) -> Dict[str, Any]:
    """This rank's own part of the search state (what differs between ranks)."""
    return {"module_attrs": module_attrs(model)}


def own_rank_state(state: Mapping[str, Any], rank: int, world: int) -> Dict[str, Any]:
    """This rank's entry of a checkpoint's ``"search"`` state (see the module doc): its own
    when the checkpoint has one per rank of this world size, else the fallbacks."""
    ranks: Optional[Sequence[Mapping[str, Any]]] = state.get("ranks")
    if ranks is None:  # version 1: rank 0's values only
        if world > 1:
            logger.warning("the search checkpoint (state version 1) holds rank 0's loss "
                           "normaliser only; every rank resumes with it (not bit-exact)")
        return {"module_attrs": dict(state.get("module_attrs", {}))}
    if len(ranks) == world:
        return dict(ranks[rank])
    logger.warning(f"the search checkpoint was written by {len(ranks)} processes, this run has "
                   f"{world}: every rank resumes with the mean of the saved ranks' loss "
                   f"normalisers (the search continues, not bit-exact)")
    names: List[str] = sorted(set().union(*(r["module_attrs"] for r in ranks)))
    return {"module_attrs": {
        n: sum(r["module_attrs"][n] for r in ranks if n in r["module_attrs"])
        / sum(1 for r in ranks if n in r["module_attrs"]) for n in names}}


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
