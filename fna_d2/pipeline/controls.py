"""The pipeline's control stages (``FNA_PIPELINE.CONTROLS``, docs/controls.md): after derive,
stage ``controls`` makes each control architecture at the derived network's backbone MAdds with
:mod:`fna_d2.controls` (what ``python -m fna_d2.controls`` runs): ``random`` draws
``CONTROL_RANDOM_N`` paths of the search space within ``CONTROL_TOLERANCE`` of that cost,
``shrunk_depth`` / ``shrunk_expansion`` shrink the seed by hand to it. It writes
``controls/<name>.json`` per architecture and ``controls/controls.json`` (their costs). Then one
stage per control, ``control_<name>``, is the adapt stage with that arch file: the seed remapped
into it, trained with the adapt config (its ``adapt:`` overrides too) into ``control_<name>/``.
The evaluate stage evaluates them with the other networks; the report compares them.

| stage | reads | writes |
|---|---|---|
| controls | ``derive/arch.json``, search config (space, cost input size) | ``controls/*.json`` |
| control_<name> | adapt config, seed weights, ``controls/<name>.json`` | ``model_final.pth`` |
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from detectron2.config import CfgNode

from ..arch import load_arch, seed_arch
from ..controls import backbone_gmadds, sample_matched, shrink_seed, space_of_cfg, write_controls
from ..errors import ArchError, ConfigError, PipelineError
from ..utils import text_sha256
from .manifest import config_digest
from .stages import STAGE_TABLE, AdaptStage, PipelineStage, StageSpec

#: what the stages are handed: the running :class:`~fna_d2.pipeline.core.Pipeline` (named, not
#: imported: core builds on this module, so importing it back would make a cycle)
Pipeline = Any

__all__ = ["CONTROL_KINDS", "ControlSettings", "control_settings", "ControlsStage",
           "ControlTrainStage", "stage_table"]

#: the controls ``FNA_PIPELINE.CONTROLS`` may name: kind -> shrink mode (None: random paths)
CONTROL_KINDS: Dict[str, Optional[str]] = {"random": None, "shrunk_depth": "depth",
                                           "shrunk_expansion": "expansion"}


@dataclass(frozen=True)
class ControlSettings:
    """The pipeline config's ``FNA_PIPELINE.CONTROL*`` keys, checked."""

    kinds: Tuple[str, ...]       # CONTROLS
    random_n: int                # CONTROL_RANDOM_N
    tolerance: float             # CONTROL_TOLERANCE
    rng_seed: int                # CONTROL_RNG_SEED

    @property
    def names(self) -> List[str]:
        """One name per control architecture (and stage ``control_<name>``), in order."""
        out: List[str] = []
        for kind in self.kinds:
            out += ([f"random_{i:02d}" for i in range(self.random_n)] if kind == "random"
                    else [kind])
        return out


def control_settings(pcfg: CfgNode, where: str) -> ControlSettings:
    """Read and check the control keys of the pipeline config ``pcfg`` (from file ``where``):
    :class:`ConfigError` naming the key and value."""
    p = pcfg.FNA_PIPELINE
    kinds = tuple(str(k) for k in p.CONTROLS)
    for k in kinds:
        if k not in CONTROL_KINDS:
            raise ConfigError(f"{where}: FNA_PIPELINE.CONTROLS = {list(kinds)!r}: unknown "
                              f"control {k!r}; choose from {', '.join(CONTROL_KINDS)}")
    dup = sorted({k for k in kinds if kinds.count(k) > 1})
    if dup:
        raise ConfigError(f"{where}: FNA_PIPELINE.CONTROLS = {list(kinds)!r} names "
                          f"{', '.join(dup)} twice (FNA_PIPELINE.CONTROL_RANDOM_N sets how "
                          "many random architectures)")
    n, tol = int(p.CONTROL_RANDOM_N), float(p.CONTROL_TOLERANCE)
    if "random" in kinds and n < 1:
        raise ConfigError(f"{where}: FNA_PIPELINE.CONTROL_RANDOM_N = {n}: must be >= 1")
    if not 0 < tol < 1:
        raise ConfigError(f"{where}: FNA_PIPELINE.CONTROL_TOLERANCE = {tol}: must be in (0, 1)")
    return ControlSettings(kinds, n, tol, int(p.CONTROL_RNG_SEED))


class ControlsStage(PipelineStage):
    """The control architectures at the derived network's backbone MAdds (module doc)."""

    name = "controls"

    def enabled(self, pipe: Pipeline) -> bool:
        return bool(pipe.control_names)

    def inputs(self, pipe: Pipeline) -> Dict[str, str]:
        return {pipe.derived_arch_path: "derive"}

    def outputs(self, pipe: Pipeline) -> List[str]:
        d = pipe.stage_dir(self.name)
        return [os.path.join(d, f"{n}.json") for n in pipe.control_names] + [
            pipe.controls_record_path]

    def digest(self, pipe: Pipeline) -> str:
        s = pipe.controls
        return text_sha256(json.dumps({
            "kinds": s.kinds, "random_n": s.random_n, "tolerance": s.tolerance,
            "rng_seed": s.rng_seed, "seed": pipe.stage_cfg("adapt").MODEL.FNA.SEED,
            "search": config_digest(pipe.stage_cfg("search"), pipe.root)}, sort_keys=True))

    def run(self, pipe: Pipeline, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        s = pipe.controls
        space, size, os_, _ = space_of_cfg(pipe.stage_cfg("search"), pipe.config_files["search"])
        seed = pipe.stage_cfg("adapt").MODEL.FNA.SEED
        derived = load_arch(pipe.derived_arch_path)
        target = backbone_gmadds(derived, size, os_)
        results, names = [], []
        for kind in s.kinds:
            try:
                if CONTROL_KINDS[kind] is None:
                    found = sample_matched(space, target, s.random_n, size, os_, s.tolerance,
                                           s.rng_seed, exclude=[derived])
                    names += [f"random_{i:02d}" for i in range(len(found))]
                else:
                    found = [shrink_seed(seed_arch(seed), space, target, size, os_,
                                         CONTROL_KINDS[kind])]
                    names.append(kind)
            except ArchError as e:
                raise PipelineError(
                    f"stage 'controls': control {kind!r} (FNA_PIPELINE.CONTROLS "
                    f"{list(s.kinds)!r}) at the derived net's {target:.4g} backbone GMAdds: "
                    f"{e}; leave it out of FNA_PIPELINE.CONTROLS") from None
            results += found
        write_controls(results, spec.dir, names, {
            "search_space": space.name, "input_size": list(size), "output_stride": os_,
            "seed": seed, "target_gmadds": target, "tolerance": s.tolerance,
            "rng_seed": s.rng_seed,
            "target_arch": os.path.relpath(pipe.derived_arch_path, pipe.root)})
        return {"target_gmadds": target,
                "controls": {n: {"gmadds": m.gmadds, "rel_error": m.rel_error,
                                 "method": m.method} for n, m in zip(names, results)}}


class ControlTrainStage(AdaptStage):
    """``control_<name>``: the adapt stage with ``controls/<name>.json`` as its arch."""

    def __init__(self, control: str):
        super().__init__(f"control_{control}", config_stage="adapt")
        self.control = control

    def arch_input(self, pipe: Pipeline) -> Tuple[str, str]:
        return os.path.join(pipe.stage_dir("controls"), f"{self.control}.json"), "controls"

    def run(self, pipe: Pipeline, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        extra = super().run(pipe, spec, resume)
        rec = pipe.control_record(self.control)
        extra.update(control=self.control, arch_file=os.path.relpath(
            self.arch_input(pipe)[0], pipe.root), **{k: rec.get(k) for k in (
                "gmadds", "rel_error", "method")})
        return extra


def stage_table(controls: Sequence[str]) -> Tuple[PipelineStage, ...]:
    """The stages of a pipeline with control architectures ``controls`` (names, as
    :attr:`ControlSettings.names`): :data:`~.stages.STAGE_TABLE` with stage ``controls`` and
    one ``control_<name>`` per control before evaluate (none without controls)."""
    if not controls:
        return STAGE_TABLE
    names = [s.name for s in STAGE_TABLE]
    at = names.index("evaluate")
    return (STAGE_TABLE[:at] + (ControlsStage(),)
            + tuple(ControlTrainStage(c) for c in controls) + STAGE_TABLE[at:])
