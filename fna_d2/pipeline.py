"""The FNA pipeline in one command: search -> derive -> adapt -> baseline -> evaluate -> report.

::

    python -m fna_d2.pipeline --config-file configs/demo/trees_pipeline.yaml \\
        [--num-gpus N] [--output-dir DIR] [--stages derive,adapt] [--status] [KEY VALUE ...]

The pipeline config names the stage configs (``FNA_PIPELINE.SEARCH_CONFIG``, ``ADAPT_CONFIG``,
``BASELINE_CONFIG``; relative paths are resolved against the pipeline config's folder) and the
``OUTPUT_DIR``. Trailing ``KEY VALUE`` overrides go to every stage config, except
``FNA_PIPELINE.*`` / ``OUTPUT_DIR`` (the pipeline's own) and ``STAGE:KEY`` (only that stage,
e.g. ``adapt:SOLVER.MAX_ITER 10``).

Every stage writes ``OUTPUT_DIR/<stage>/stage.json``: a key (SHA-256 of the stage's config and
of its input files), the hashes of its outputs, its status and wall time. A stage whose
manifest is ``done`` with the current key and untouched outputs is skipped; a stage whose key
changed is *stale*: its folder is moved to ``<stage>.stale`` and it runs again; an interrupted
stage (``running`` with the current key) resumes from its last checkpoint. See
``docs/pipeline.md``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from detectron2.config import CfgNode

from .errors import PipelineError  # noqa: F401  (defined there; re-exported)
from .config import ConfigError, get_fna_cfg
from .remap import resolve_seed_uri
from .tasks import NET_NAMES, task_of  # noqa: F401  (NET_NAMES re-exported)

__all__ = ["Pipeline", "PipelineError", "STAGES", "main", "split_opts"]

logger = logging.getLogger("fna_d2.pipeline")

STAGES: Tuple[str, ...] = ("search", "derive", "adapt", "baseline", "evaluate", "report")
MANIFEST = "stage.json"
TRAINED = ("search", "adapt", "baseline")
#: the network each trained stage stands for in the report


# ----------------------------------------------------------------------------- helpers
def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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


def _config_digest(cfg: CfgNode, root: str) -> str:
    """Hash of a stage config, independent of where the pipeline's output lives."""
    c = cfg.clone()
    c.defrost()
    c.OUTPUT_DIR = ""
    if c.MODEL.FNA.ARCH and os.path.abspath(c.MODEL.FNA.ARCH).startswith(root + os.sep):
        c.MODEL.FNA.ARCH = os.path.relpath(os.path.abspath(c.MODEL.FNA.ARCH), root)
    if c.MODEL.WEIGHTS and os.path.abspath(c.MODEL.WEIGHTS).startswith(root + os.sep):
        c.MODEL.WEIGHTS = os.path.relpath(os.path.abspath(c.MODEL.WEIGHTS), root)
    return text_sha256(c.dump())


# ----------------------------------------------------------------------------- workers
def _setup_worker(cfg: CfgNode, threads: int) -> None:
    """Logging for spawned workers and the torch thread count."""
    from detectron2.utils import comm

    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    from detectron2.utils.logger import setup_logger

    if comm.get_world_size() > 1:  # spawned processes start without handlers
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="fna_d2")
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detectron2")


def train_worker(cfg: CfgNode, result_path: str, threads: int = 0) -> None:
    """Train (or search) with ``cfg``, resuming from ``cfg.OUTPUT_DIR``'s last checkpoint if
    any; rank 0 writes the trainer's final evaluation (if it ran one) to ``result_path``."""
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng

    from .engine import build_trainer

    _setup_worker(cfg, threads)
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=True)
    results = trainer.train()
    if comm.is_main_process():
        _write_json(result_path, {"results": _plain(results)})


def eval_worker(cfg: CfgNode, result_path: str, threads: int = 0) -> None:
    """Evaluate ``cfg.MODEL.WEIGHTS`` on ``cfg.DATASETS.TEST``; rank 0 writes the results."""
    from detectron2.utils import comm

    from .engine import evaluate_only

    _setup_worker(cfg, threads)
    results = evaluate_only(cfg, resume=False)
    if comm.is_main_process():
        _write_json(result_path, {"results": _plain(results)})


def _plain(obj: Any) -> Any:
    """Nested (Ordered)dicts of numbers -> JSON-able plain data (NaN kept as None)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item"):
        obj = obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def pick_metric(results: Optional[dict], metric: str) -> Dict[str, Optional[float]]:
    """The headline numbers of a detectron2 results dict: AP/AP50/AP75 or mIoU/fwIoU/pACC
    (None where detectron2 reported NaN, e.g. AP of a detector with no detections)."""
    if not results:
        return {}
    keys = {"AP": ("bbox", ("AP", "AP50", "AP75")),
            "mIoU": ("sem_seg", ("mIoU", "fwIoU", "pACC"))}[metric]
    task_res = results.get(keys[0])
    if task_res is None:  # results of several test sets: take the first that has it
        for v in results.values():
            if isinstance(v, dict) and keys[0] in v:
                task_res = v[keys[0]]
                break
    if not isinstance(task_res, dict):
        return {}
    return {k: (None if task_res.get(k) is None else float(task_res[k])) for k in keys[1]
            if k in task_res}


# ----------------------------------------------------------------------------- stages
@dataclass
class StageSpec:
    """What a stage reads, writes and does."""

    name: str
    dir: str
    inputs: Dict[str, str]          # absolute path -> producing stage ("" for external files)
    outputs: List[str]              # absolute paths the stage must produce
    config_digest: str              # hash of the stage's config (or of its parameters)
    run: Callable[["StageSpec", bool], Dict[str, Any]]   # (spec, resume) -> manifest extras
    extra: Dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Stage graph, manifests and runners for one pipeline config."""

    def __init__(self, config_file: str, output_dir: Optional[str] = None, num_gpus: int = 1,
                 opts: Sequence[str] = (), dist_url: str = "auto", threads: int = 0):
        self.config_file = os.path.abspath(config_file)
        pipe_opts, self.common_opts, self.stage_opts = split_opts(opts)
        self.pcfg = get_fna_cfg(self.config_file, pipe_opts + self.common_opts)
        self.root = os.path.abspath(output_dir or self.pcfg.OUTPUT_DIR)
        self._output_dir_given = bool(output_dir)
        self._opts = [str(o) for o in opts]
        self.num_gpus = int(num_gpus)
        self.dist_url = dist_url
        self.threads = int(threads)
        base = os.path.dirname(self.config_file)
        p = self.pcfg.FNA_PIPELINE
        self.config_files: Dict[str, Optional[str]] = {
            "search": self._resolve(p.SEARCH_CONFIG, base, "FNA_PIPELINE.SEARCH_CONFIG"),
            "adapt": self._resolve(p.ADAPT_CONFIG, base, "FNA_PIPELINE.ADAPT_CONFIG"),
            "baseline": (self._resolve(p.BASELINE_CONFIG, base, "FNA_PIPELINE.BASELINE_CONFIG")
                         if p.BASELINE_CONFIG else None),
        }
        self._cfgs: Dict[str, CfgNode] = {}

    # -- configs and paths
    def _resolve(self, path: str, base: str, key: str) -> str:
        if not path:
            raise ConfigError(f"{self.config_file}: {key} is empty; the pipeline needs it")
        full = path if os.path.isabs(path) else os.path.join(base, path)
        if not os.path.isfile(full):
            raise ConfigError(f"{self.config_file}: {key} = {path!r}: file not found "
                              f"(looked for {full})")
        return full

    def stage_dir(self, stage: str) -> str:
        return os.path.join(self.root, stage)

    @property
    def derived_arch_path(self) -> str:
        return os.path.join(self.stage_dir("derive"), "arch.json")

    @property
    def searched_arch_path(self) -> str:
        return os.path.join(self.stage_dir("search"), "searched_arch.json")

    def stage_cfg(self, stage: str) -> CfgNode:
        """The frozen config of a trained stage (search, adapt, baseline)."""
        if stage not in self._cfgs:
            path = self.config_files[stage]
            if path is None:
                raise PipelineError(f"stage {stage!r} has no config")
            cfg = get_fna_cfg(path, self.common_opts + self.stage_opts.get(stage, []))
            cfg.OUTPUT_DIR = self.stage_dir(stage)
            if stage == "adapt":
                cfg.MODEL.FNA.NETWORK = "derived"
                cfg.MODEL.FNA.ARCH = self.derived_arch_path
            if stage == "search" and cfg.MODEL.FNA.NETWORK != "super":
                raise ConfigError(f"{path}: the search config needs MODEL.FNA.NETWORK super, "
                                  f"got {cfg.MODEL.FNA.NETWORK!r}")
            cfg.freeze()
            self._cfgs[stage] = cfg
        return self._cfgs[stage]

    def stages(self) -> List[str]:
        return [s for s in STAGES if s != "baseline" or self.config_files["baseline"]]

    def _eval_targets(self) -> List[str]:
        return [s for s in ("adapt", "baseline") if s in self.stages()]

    # -- stage specs
    def spec(self, stage: str) -> StageSpec:
        d = self.stage_dir(stage)
        if stage in TRAINED:
            cfg = self.stage_cfg(stage)
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
            outputs = [os.path.join(d, "model_final.pth")]
            if stage == "search":
                outputs.append(self.searched_arch_path)
            if stage == "adapt":
                inputs[self.derived_arch_path] = "derive"
            return StageSpec(stage, d, inputs, outputs, _config_digest(cfg, self.root),
                             self._run_train)
        if stage == "derive":
            seed = self.stage_cfg("adapt").MODEL.FNA.SEED
            return StageSpec(stage, d, {self.searched_arch_path: "search"},
                             [self.derived_arch_path, os.path.join(d, "arch_authors.txt")],
                             text_sha256(f"derive seed={seed}"), self._run_derive)
        if stage == "evaluate":
            inputs = {os.path.join(self.stage_dir(s), "model_final.pth"): s
                      for s in self._eval_targets()}
            digests = "".join(_config_digest(self.stage_cfg(s), self.root)
                              for s in self._eval_targets())
            return StageSpec(stage, d, inputs, [os.path.join(d, "results.json")],
                             text_sha256("evaluate" + digests), self._run_evaluate)
        if stage == "report":
            inputs = {self.searched_arch_path: "search", self.derived_arch_path: "derive",
                      os.path.join(self.stage_dir("evaluate"), "results.json"): "evaluate"}
            return StageSpec(stage, d, inputs, [os.path.join(self.root, "report.md")],
                             text_sha256("report v1"), self._run_report)
        raise PipelineError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")

    def key(self, spec: StageSpec) -> Tuple[str, Dict[str, str]]:
        """(stage key, input hashes); raises if an input is missing."""
        hashes = {}
        for path, producer in spec.inputs.items():
            if not os.path.isfile(path):
                raise PipelineError(self._missing_msg(spec.name, path, producer))
            hashes[os.path.relpath(path, self.root)] = file_sha256(path)
        blob = json.dumps({"stage": spec.name, "config": spec.config_digest, "inputs": hashes},
                          sort_keys=True)
        return text_sha256(blob), hashes

    def rerun_command(self, stages: str) -> str:
        """The command line that runs ``stages`` of this pipeline: same config, output folder
        (when it was given) and overrides, so the re-run computes the same stage keys."""
        argv = ["python", "-m", "fna_d2.pipeline", "--config-file", self.config_file]
        if self._output_dir_given:
            argv += ["--output-dir", self.root]
        return shlex.join(argv + ["--stages", stages] + self._opts)

    def _missing_msg(self, stage: str, path: str, producer: str) -> str:
        if producer:
            return (f"stage {stage!r}: input {path} is missing; run stage {producer!r} first "
                    f"({self.rerun_command(producer)})")
        return f"stage {stage!r}: input file {path} does not exist"

    def manifest(self, stage: str) -> Optional[dict]:
        return _read_json(os.path.join(self.stage_dir(stage), MANIFEST))

    def status(self, stage: str) -> Tuple[str, str]:
        """("done" | "stale" | "partial" | "new" | "blocked", reason)."""
        spec = self.spec(stage)
        man = self.manifest(stage)
        try:
            key, hashes = self.key(spec)
        except PipelineError as e:
            return "blocked", str(e)
        if man is None:
            return "new", "never run"
        if man.get("key") != key:
            return "stale", self._stale_reason(man, spec, hashes)
        if man.get("status") != "done":
            return "partial", "interrupted; resumes from its last checkpoint"
        for rel, h in (man.get("outputs") or {}).items():
            p = os.path.join(self.root, rel)
            if not os.path.isfile(p):
                return "stale", f"output {rel} is missing"
            if file_sha256(p) != h:
                return "stale", f"output {rel} was modified after the stage wrote it"
        return "done", "up to date"

    def _stale_reason(self, man: dict, spec: StageSpec, hashes: Dict[str, str]) -> str:
        if man.get("config_digest") != spec.config_digest:
            return "its config changed"
        old = man.get("inputs") or {}
        changed = [p for p in hashes if old.get(p) != hashes[p]]
        if changed:
            return "input(s) changed: " + ", ".join(changed)
        return "its key changed"

    # -- running
    def run(self, stages: Optional[Sequence[str]] = None, force: Sequence[str] = ()
            ) -> Dict[str, dict]:
        """Run ``stages`` (default: all) in order; returns the manifests."""
        selected = list(stages) if stages else self.stages()
        for s in list(selected) + list(force):
            if s not in self.stages():
                raise PipelineError(f"unknown or disabled stage {s!r}; stages of this "
                                    f"pipeline: {', '.join(self.stages())}")
        self._validate_configs()
        manifests: Dict[str, dict] = {}
        for stage in self.stages():
            if stage not in selected:
                continue
            self._check_producers(stage, selected)
            manifests[stage] = self._run_stage(stage, force=stage in force)
        return manifests

    def _validate_configs(self) -> None:
        """Build every stage config (and check arch compatibility) before anything trains."""
        for s in TRAINED:
            if s in self.stages():
                self.stage_cfg(s)
        from .modeling.backbones import check_macro_structure
        from .seeds_arch import seed_arch

        scfg, acfg = self.stage_cfg("search"), self.stage_cfg("adapt")
        if scfg.MODEL.FNA.SEED != acfg.MODEL.FNA.SEED:
            raise ConfigError(f"MODEL.FNA.SEED differs between the search config "
                              f"({scfg.MODEL.FNA.SEED!r}) and the adapt config "
                              f"({acfg.MODEL.FNA.SEED!r}); parameter adaptation remaps the "
                              "seed the search started from")
        if os.path.isfile(self.derived_arch_path):
            from .arch import load_arch

            check_macro_structure(load_arch(self.derived_arch_path),
                                  seed_arch(acfg.MODEL.FNA.SEED), self.derived_arch_path)

    def _check_producers(self, stage: str, selected: Sequence[str]) -> None:
        """An input produced by a stage that is not selected must be up to date."""
        for path, producer in self.spec(stage).inputs.items():
            if not producer or producer in selected:
                continue
            st, reason = self.status(producer)
            if st == "blocked":  # the producer's own input is missing: name the first stage
                raise PipelineError(f"stage {stage!r} cannot run: {reason}")
            if st != "done":
                raise PipelineError(
                    f"stage {stage!r} needs {os.path.relpath(path, self.root)} from stage "
                    f"{producer!r}, which is {st} ({reason}); re-run stage {producer!r} "
                    f"(--stages {producer},{stage}, or run the whole pipeline)")

    def _run_stage(self, stage: str, force: bool = False) -> dict:
        spec = self.spec(stage)
        st, reason = self.status(stage)
        if st == "done" and not force:
            logger.info(f"[pipeline] stage {stage}: up to date, skipped")
            man = self.manifest(stage)
            man["skipped"] = True
            return man
        if st == "blocked":
            raise PipelineError(reason)
        if st == "stale" or force:
            why = "forced" if force else reason
            logger.warning(f"[pipeline] stage {stage}: stale ({why}); re-running it from "
                           f"scratch (old outputs moved to {spec.dir}.stale)")
            self._move_away(spec.dir)
            if stage == "report" and os.path.isfile(spec.outputs[0]):
                os.remove(spec.outputs[0])
        if st == "new" and os.path.isdir(spec.dir) and os.listdir(spec.dir):
            logger.warning(f"[pipeline] stage {stage}: {spec.dir} holds files without a stage "
                           f"manifest; moved to {spec.dir}.stale, starting fresh")
            self._move_away(spec.dir)
        resume = st == "partial" and not force
        logger.info(f"[pipeline] stage {stage}: {'resuming' if resume else 'running'} "
                    f"({'forced' if force else reason})")
        key, hashes = self.key(spec)
        os.makedirs(spec.dir, exist_ok=True)
        prev = self.manifest(stage) if resume else None
        man = {"stage": stage, "status": "running", "key": key, "inputs": hashes,
               "config_digest": spec.config_digest,
               "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "wall_time_s": float((prev or {}).get("wall_time_s", 0.0))}
        self._write_manifest(stage, man)
        t0 = time.perf_counter()
        try:
            extra = spec.run(spec, resume) or {}
        finally:
            man["wall_time_s"] += time.perf_counter() - t0
            self._write_manifest(stage, man)
        missing = [p for p in spec.outputs if not os.path.isfile(p)]
        if missing:
            raise PipelineError(f"stage {stage!r} finished but did not write "
                                f"{', '.join(missing)}")
        man.update(extra)
        man["outputs"] = {os.path.relpath(p, self.root): file_sha256(p) for p in spec.outputs}
        man["status"] = "done"
        man["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self._write_manifest(stage, man)
        logger.info(f"[pipeline] stage {stage}: done in {man['wall_time_s']:.1f} s")
        return man

    def _write_manifest(self, stage: str, man: dict) -> None:
        _write_json(os.path.join(self.stage_dir(stage), MANIFEST), man)

    @staticmethod
    def _move_away(d: str) -> None:
        if not os.path.isdir(d):
            return
        old = d + ".stale"
        if os.path.isdir(old):
            shutil.rmtree(old)
        os.replace(d, old)

    def _launch(self, fn: Callable, *args: Any) -> None:
        from detectron2.engine import launch

        launch(fn, self.num_gpus, dist_url=self.dist_url, args=args)

    # -- stage bodies
    def _run_train(self, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        cfg = self.stage_cfg(spec.name)
        if spec.name == "adapt":
            self._check_adapt_arch(cfg)
        with open(os.path.join(spec.dir, "config.yaml"), "w", encoding="utf-8") as f:
            f.write(cfg.dump())
        result_path = os.path.join(spec.dir, "train_eval.json")
        self._launch(train_worker, cfg, result_path, self.threads)
        return {"config_file": self.config_files[spec.name]}

    def _check_adapt_arch(self, cfg: CfgNode) -> None:
        """Refuse an arch the seed cannot be remapped into, before any training."""
        from .arch import ArchError, load_arch
        from .modeling.backbones import check_macro_structure
        from .seeds_arch import seed_arch

        try:
            check_macro_structure(load_arch(cfg.MODEL.FNA.ARCH), seed_arch(cfg.MODEL.FNA.SEED),
                                  cfg.MODEL.FNA.ARCH)
        except ArchError as e:
            raise PipelineError(f"stage 'adapt': the searched architecture is incompatible "
                                f"with the seed, refusing to train: {e}") from None

    def _run_derive(self, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        from .arch import ArchError, load_arch, save_arch, to_authors_format
        from .modeling.backbones import check_macro_structure
        from .seeds_arch import seed_arch

        seed_name = self.stage_cfg("adapt").MODEL.FNA.SEED
        try:
            searched = load_arch(self.searched_arch_path)
            arch = searched.skips_to_end()
            check_macro_structure(arch, seed_arch(seed_name), self.searched_arch_path)
        except ArchError as e:
            raise PipelineError(f"stage 'derive': {e}; re-run stage 'search' or fix the "
                                "search config") from None
        meta = dict(arch.meta)
        meta.update({"derived_from": os.path.relpath(self.searched_arch_path, self.root),
                     "skips_moved_to_end": True, "seed": seed_name})
        arch = type(arch)(arch.stages, arch.stem_channels, meta)
        save_arch(arch, self.derived_arch_path)
        with open(spec.outputs[1], "w", encoding="utf-8") as f:
            f.write(to_authors_format(arch) + "\n")
        return {"ops": [list(st.ops) for st in arch.stages]}

    def _run_evaluate(self, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for s in self._eval_targets():
            cfg = self.stage_cfg(s).clone()
            cfg.defrost()
            weights = os.path.join(self.stage_dir(s), "model_final.pth")
            cfg.MODEL.WEIGHTS = weights
            cfg.OUTPUT_DIR = os.path.join(spec.dir, s)
            cfg.freeze()
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            task, metric = task_of(cfg)
            res_path = os.path.join(cfg.OUTPUT_DIR, "results.json")
            reused = self._reuse_train_eval(s, weights)
            if reused is not None:
                logger.info(f"[pipeline] evaluate {s}: reusing the evaluation run at the end "
                            "of its training (same weights)")
                results = reused
            else:
                self._launch(eval_worker, cfg, res_path, self.threads)
                results = (_read_json(res_path) or {}).get("results")
            out[s] = {"task": task, "metric": metric, "weights": weights,
                      "numbers": pick_metric(results, metric), "results": results}
        _write_json(spec.outputs[0], out)
        return {"numbers": {s: v["numbers"] for s, v in out.items()}}

    def _reuse_train_eval(self, stage: str, weights: str) -> Optional[dict]:
        """The trainer's own final evaluation, if it evaluated exactly ``model_final.pth``."""
        path = os.path.join(self.stage_dir(stage), "train_eval.json")
        data = _read_json(path)
        man = self.manifest(stage) or {}
        if not data or not data.get("results") or man.get("status") != "done":
            return None
        if os.path.getmtime(path) < os.path.getmtime(weights):
            return None
        return data["results"]

    def _run_report(self, spec: StageSpec, resume: bool) -> Dict[str, Any]:
        from .report import build_report

        path = build_report(self, spec)
        return {"report": os.path.relpath(path, self.root)}

    # -- status table
    def status_table(self) -> str:
        rows = []
        for s in self.stages():
            st, reason = self.status(s)
            man = self.manifest(s) or {}
            wt = man.get("wall_time_s")
            rows.append(f"{s:<9} {st:<8} {'' if wt is None else f'{wt:8.1f} s'}  {reason}")
        return "\n".join(rows)


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m fna_d2.pipeline",
        description="FNA pipeline: search -> derive -> adapt -> baseline -> evaluate -> report")
    ap.add_argument("--config-file", required=True, help="pipeline config (FNA_PIPELINE.*)")
    ap.add_argument("--num-gpus", type=int, default=1, help="processes per stage (launch)")
    ap.add_argument("--output-dir", default=None, help="overrides the config's OUTPUT_DIR")
    ap.add_argument("--stages", default="", help=f"comma list out of {','.join(STAGES)}")
    ap.add_argument("--force", default="", help="comma list of stages to re-run anyway")
    ap.add_argument("--status", action="store_true", help="print each stage's status and exit")
    ap.add_argument("--dist-url", default="auto", help="launch() rendezvous URL")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads per process (0: torch's default). On a loaded "
                         "machine 1 can be many times faster than oversubscribed threads")
    ap.add_argument("opts", nargs=argparse.REMAINDER,
                    help="KEY VALUE overrides (every stage), STAGE:KEY VALUE (one stage)")
    return ap.parse_args(argv)


def _csv(s: str) -> List[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from detectron2.utils.logger import setup_logger


    try:
        pipe = Pipeline(args.config_file, args.output_dir, args.num_gpus, args.opts,
                        args.dist_url, args.threads)
        os.makedirs(pipe.root, exist_ok=True)
        log = os.path.join(pipe.root, "pipeline_log.txt")
        setup_logger(log, name="fna_d2")
        setup_logger(log, name="detectron2")
        if args.status:
            print(pipe.status_table())
            return 0
        pipe.run(_csv(args.stages) or None, force=_csv(args.force))
    except (PipelineError, ConfigError) as e:
        print(f"fna_d2.pipeline: error: {e}", file=sys.stderr)
        return 2
    print(f"[pipeline] report: {os.path.join(pipe.root, 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
