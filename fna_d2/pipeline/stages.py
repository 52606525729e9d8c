"""The pipeline's stages as a table: :data:`STAGE_TABLE`, one object per stage, in pipeline
order. Each stage says which files it reads (and which stage produces them), which files it
must write, the digest of its parameters (part of its key) and how it runs.

| stage | reads | writes |
|---|---|---|
| search | search config, seed weights | ``search/searched_arch.json``, ``model_final.pth`` |
| derive | ``search/searched_arch.json`` | ``derive/arch.json``, ``derive/arch_authors.txt`` |
| adapt | adapt config, seed weights, ``derive/arch.json`` | ``adapt/model_final.pth`` |
| baseline | baseline config, seed weights | ``baseline/model_final.pth`` |
| controls, control_* | ``derive/arch.json``, adapt config | see :mod:`.controls` |
| evaluate | ``adapt/``, ``baseline/``, ``control_*/model_final.pth`` | ``evaluate/results.json`` |
| report | searched / derived arch, ``evaluate/results.json`` | ``report.md``, ``report/*.png`` |

The table is :func:`.controls.stage_table` of the pipeline's controls (``FNA_PIPELINE.CONTROLS``);
:data:`STAGE_TABLE` is the one without controls. The stages run on a
:class:`~fna_d2.pipeline.core.Pipeline` through its public methods
(configs, folders, manifests, ``launch``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from detectron2.config import CfgNode

from ..arch import load_arch, save_arch, to_authors_format
from ..errors import ArchError, ConfigError, PipelineError
from ..modeling import check_macro_structure
from ..remap import resolve_seed_uri
from ..report import write_report_files
from ..arch import seed_arch
from ..tasks import task_of
from ..utils import read_json, text_sha256, write_text
from .manifest import config_digest, write_stage_json
from .report_data import gather_report_data
from .results import pick_metric
from .workers import eval_worker, train_worker

#: what the stages are handed: the running :class:`~fna_d2.pipeline.core.Pipeline` (named, not
#: imported: core builds on this module, so importing it back would make a cycle)
Pipeline = Any

__all__ = ["StageSpec", "PipelineStage", "TrainStage", "SearchStage", "AdaptStage",
           "DeriveStage", "EvaluateStage", "ReportStage", "STAGE_TABLE", "STAGE_BY_NAME",
           "STAGES", "TRAINED", "check_adapt_arch"]

logger = logging.getLogger("fna_d2.pipeline")


@dataclass
class StageSpec:
    """One stage of one pipeline: what it reads, writes and does."""

    name: str
    dir: str
    inputs: Dict[str, str]          # absolute path -> producing stage ("" for external files)
    outputs: List[str]              # absolute paths the stage must produce
    config_digest: str              # hash of the stage's config (or of its parameters)
    run: Callable[["StageSpec", bool], Dict[str, Any]]   # (spec, resume) -> manifest extras
    extra: Dict[str, Any] = field(default_factory=dict)


class PipelineStage:
    """A stage of the table. Subclasses give ``inputs``, ``outputs``, ``digest`` and ``run``."""

    name: str = ""
    trained = False       # a training stage with its own config (search, adapt, baseline)

    def enabled(self, pipe: Pipeline) -> bool:
        return True

    def inputs(self, pipe: Pipeline) -> Dict[str, str]:
        raise NotImplementedError

    def outputs(self, pipe: Pipeline) -> List[str]:
        raise NotImplementedError

    def digest(self, pipe: Pipeline) -> str:
        raise NotImplementedError

    def run(self, pipe: Pipeline, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        """Run the stage (``resume``: continue an interrupted run); returns manifest extras."""
        raise NotImplementedError

    def spec(self, pipe: Pipeline) -> StageSpec:
        return StageSpec(self.name, pipe.stage_dir(self.name), self.inputs(pipe),
                         self.outputs(pipe), self.digest(pipe),
                         lambda spec, resume: self.run(pipe, spec, resume))


# ----------------------------------------------------------------------------- training stages
class TrainStage(PipelineStage):
    """A stage that trains with its own config, through :func:`.workers.train_worker`
    (``config_stage``: the trained stage whose config file and ``STAGE:KEY`` overrides it
    uses, itself by default)."""

    trained = True

    def __init__(self, name: str, optional: bool = False, config_stage: str = ""):
        self.name = name
        self.optional = optional     # the pipeline config may leave its config empty
        self.config_stage = config_stage or name

    def enabled(self, pipe: Pipeline) -> bool:
        return pipe.config_files.get(self.name) is not None

    def configure(self, pipe: Pipeline, cfg: CfgNode, path: str) -> None:
        """Set what the pipeline decides in the stage config (unfrozen ``cfg`` from ``path``)."""
        cfg.OUTPUT_DIR = pipe.stage_dir(self.name)

    def inputs(self, pipe: Pipeline) -> Dict[str, str]:
        cfg = pipe.stage_cfg(self.name)
        inputs: Dict[str, str] = {}
        sw = cfg.MODEL.FNA.SEED_WEIGHTS
        if sw.startswith("fna_d2://"):
            # a packaged seed: hash the converted file (built once, on first use), so a
            # re-conversion that changes the weights makes the trained stages stale
            sw = resolve_seed_uri(sw)
        if sw and "://" not in sw:
            inputs[os.path.abspath(sw)] = ""
        if cfg.MODEL.WEIGHTS and "://" not in cfg.MODEL.WEIGHTS:
            inputs[os.path.abspath(cfg.MODEL.WEIGHTS)] = ""
        return inputs

    def outputs(self, pipe: Pipeline) -> List[str]:
        return [os.path.join(pipe.stage_dir(self.name), "model_final.pth")]

    def digest(self, pipe: Pipeline) -> str:
        return config_digest(pipe.stage_cfg(self.name), pipe.root)

    def run(self, pipe: Pipeline, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        cfg = pipe.stage_cfg(self.name)
        write_text(os.path.join(spec.dir, "config.yaml"), cfg.dump())
        pipe.launch(train_worker, cfg, os.path.join(spec.dir, "train_eval.json"), pipe.threads,
                    pipe.config_files[self.name])  # the config_stage's file (core)
        return {"config_file": pipe.config_files[self.name]}


class SearchStage(TrainStage):
    """Architecture adaptation: the search config trains the super network."""

    def configure(self, pipe: Pipeline, cfg: CfgNode, path: str) -> None:
        super().configure(pipe, cfg, path)
        if cfg.MODEL.FNA.NETWORK != "super":
            raise ConfigError(f"{path}: the search config needs MODEL.FNA.NETWORK super, "
                              f"got {cfg.MODEL.FNA.NETWORK!r}")

    def outputs(self, pipe: Pipeline) -> List[str]:
        return super().outputs(pipe) + [pipe.searched_arch_path]


def check_adapt_arch(cfg: CfgNode, stage: str = "adapt") -> None:
    """Refuse an arch the seed cannot be remapped into (:class:`PipelineError`), before any
    training: ``cfg.MODEL.FNA.ARCH`` against the seed ``cfg.MODEL.FNA.SEED``."""
    what = "searched" if stage == "adapt" else "control"
    try:
        check_macro_structure(load_arch(cfg.MODEL.FNA.ARCH), seed_arch(cfg.MODEL.FNA.SEED),
                              cfg.MODEL.FNA.ARCH)
    except ArchError as e:
        raise PipelineError(f"stage {stage!r}: the {what} architecture is incompatible "
                            f"with the seed, refusing to train: {e}") from None


class AdaptStage(TrainStage):
    """Parameter adaptation: an architecture (the derived one; subclasses name another with
    :meth:`arch_input`), remapped from the seed, trained with the adapt config."""

    def arch_input(self, pipe: Pipeline) -> Tuple[str, str]:
        """(the arch file trained, the stage that writes it)."""
        return pipe.derived_arch_path, "derive"

    def configure(self, pipe: Pipeline, cfg: CfgNode, path: str) -> None:
        super().configure(pipe, cfg, path)
        cfg.MODEL.FNA.NETWORK = "derived"
        cfg.MODEL.FNA.ARCH = self.arch_input(pipe)[0]

    def inputs(self, pipe: Pipeline) -> Dict[str, str]:
        inputs = super().inputs(pipe)
        path, producer = self.arch_input(pipe)
        inputs[path] = producer
        return inputs

    def run(self, pipe: Pipeline, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        check_adapt_arch(pipe.stage_cfg(self.name), self.name)
        return super().run(pipe, spec, resume)


# ----------------------------------------------------------------------------- other stages
class DeriveStage(PipelineStage):
    """Moves skips to the end of their stage; refuses an arch the seed cannot be remapped to."""

    name = "derive"

    def inputs(self, pipe: Pipeline) -> Dict[str, str]:
        return {pipe.searched_arch_path: "search"}

    def outputs(self, pipe: Pipeline) -> List[str]:
        return [pipe.derived_arch_path, os.path.join(pipe.stage_dir(self.name),
                                                     "arch_authors.txt")]

    def digest(self, pipe: Pipeline) -> str:
        return text_sha256(f"derive seed={pipe.stage_cfg('adapt').MODEL.FNA.SEED}")

    def run(self, pipe: Pipeline, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        seed_name = pipe.stage_cfg("adapt").MODEL.FNA.SEED
        try:
            searched = load_arch(pipe.searched_arch_path)
            arch = searched.skips_to_end()
            check_macro_structure(arch, seed_arch(seed_name), pipe.searched_arch_path)
        except ArchError as e:
            raise PipelineError(f"stage 'derive': {e}; re-run stage 'search' or fix the "
                                "search config") from None
        meta = dict(arch.meta)
        meta.update({"derived_from": os.path.relpath(pipe.searched_arch_path, pipe.root),
                     "skips_moved_to_end": True, "seed": seed_name})
        arch = type(arch)(arch.stages, arch.stem_channels, meta)
        save_arch(arch, pipe.derived_arch_path)
        write_text(spec.outputs[1], to_authors_format(arch) + "\n")
        return {"ops": [list(st.ops) for st in arch.stages]}


class EvaluateStage(PipelineStage):
    """COCO AP or mIoU of the adapted net, the baseline and the controls on ``DATASETS.TEST``."""

    name = "evaluate"

    def inputs(self, pipe: Pipeline) -> Dict[str, str]:
        return {os.path.join(pipe.stage_dir(s), "model_final.pth"): s
                for s in pipe.eval_targets()}

    def outputs(self, pipe: Pipeline) -> List[str]:
        return [os.path.join(pipe.stage_dir(self.name), "results.json")]

    def digest(self, pipe: Pipeline) -> str:
        return text_sha256("evaluate" + "".join(config_digest(pipe.stage_cfg(s), pipe.root)
                                                for s in pipe.eval_targets()))

    def run(self, pipe: Pipeline, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for s in pipe.eval_targets():
            cfg = pipe.stage_cfg(s).clone()
            cfg.defrost()
            weights = os.path.join(pipe.stage_dir(s), "model_final.pth")
            cfg.MODEL.WEIGHTS = weights
            cfg.OUTPUT_DIR = os.path.join(spec.dir, s)
            cfg.freeze()
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            task, metric = task_of(cfg)
            res_path = os.path.join(cfg.OUTPUT_DIR, "results.json")
            results = self.train_eval(pipe, s, weights)
            if results is not None:
                logger.info(f"[pipeline] evaluate {s}: reusing the evaluation run at the end "
                            "of its training (same weights)")
            else:
                pipe.launch(eval_worker, cfg, res_path, pipe.threads)
                results = (read_json(res_path) or {}).get("results")
            out[s] = {"task": task, "metric": metric, "weights": weights,
                      "numbers": pick_metric(results, metric), "results": results}
        write_stage_json(spec.outputs[0], out)
        return {"numbers": {s: v["numbers"] for s, v in out.items()}}

    @staticmethod
    def train_eval(pipe: Pipeline, stage: str, weights: str) -> Optional[dict]:
        """The trainer's own final evaluation, if it evaluated exactly ``weights``."""
        path = os.path.join(pipe.stage_dir(stage), "train_eval.json")
        data = read_json(path)
        man = pipe.manifest(stage) or {}
        if not data or not data.get("results") or man.get("status") != "done":
            return None
        if os.path.getmtime(path) < os.path.getmtime(weights):
            return None
        return data["results"]


class ReportStage(PipelineStage):
    """``report.md`` and ``report/*.png`` from the other stages' outputs."""

    name = "report"

    def inputs(self, pipe: Pipeline) -> Dict[str, str]:
        inputs = {pipe.searched_arch_path: "search", pipe.derived_arch_path: "derive",
                  os.path.join(pipe.stage_dir("evaluate"), "results.json"): "evaluate"}
        if pipe.control_names:  # the controls' arch files and costs (stage controls)
            inputs[pipe.controls_record_path] = "controls"
        return inputs

    def outputs(self, pipe: Pipeline) -> List[str]:
        return [os.path.join(pipe.root, "report.md")]

    def digest(self, pipe: Pipeline) -> str:
        return text_sha256("report v2")  # v2: the searched-vs-controls section

    def run(self, pipe: Pipeline, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        path = write_report_files(spec.outputs[0], gather_report_data(pipe), spec.dir)
        return {"report": os.path.relpath(path, pipe.root)}


#: every stage, in pipeline order
STAGE_TABLE: Tuple[PipelineStage, ...] = (
    SearchStage("search"),
    DeriveStage(),
    AdaptStage("adapt"),
    TrainStage("baseline", optional=True),
    EvaluateStage(),
    ReportStage(),
)
STAGE_BY_NAME: Dict[str, PipelineStage] = {s.name: s for s in STAGE_TABLE}
STAGES: Tuple[str, ...] = tuple(s.name for s in STAGE_TABLE)
TRAINED: Tuple[str, ...] = tuple(s.name for s in STAGE_TABLE if s.trained)
