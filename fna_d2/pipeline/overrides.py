"""The ``KEY VALUE`` overrides of a pipeline run, split by whom they are for: the pipeline
config itself (``FNA_PIPELINE.*``, ``OUTPUT_DIR``), every stage config, or one trained stage
(``STAGE:KEY``, e.g. ``adapt:SOLVER.BASE_LR 0.02``)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from ..errors import ConfigError
from .stages import TRAINED

__all__ = ["split_opts"]


def split_opts(opts: Sequence[str]) -> Tuple[List[str], List[str], Dict[str, List[str]]]:
    """Split ``KEY VALUE`` overrides into (pipeline, every stage, per stage)."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got {opts}")
    pipe: List[str] = []
    common: List[str] = []
    per: Dict[str, List[str]] = {}
    for k, v in zip(opts[0::2], opts[1::2]):
        if k.startswith("--"):
            raise ConfigError(f"{k!r} among the KEY VALUE overrides: put options such as "
                              "--stages/--force before the overrides")
        if ":" in k:
            stage, key = k.split(":", 1)
            if stage not in TRAINED:
                raise ConfigError(f"override {k!r}: stage prefix must be one of {TRAINED}")
            per.setdefault(stage, []).extend([key, v])
        elif k.startswith("FNA_PIPELINE.") or k == "OUTPUT_DIR":
            pipe.extend([k, v])
        else:
            common.extend([k, v])
    return pipe, common, per
