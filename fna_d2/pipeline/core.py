""":class:`Pipeline`: one pipeline config's stage configs, the state of each stage (done /
stale / partial / new / blocked, from its manifest and key) and the run of its stages
(:func:`~fna_d2.pipeline.controls.stage_table`: :data:`~fna_d2.pipeline.stages.STAGE_TABLE`
plus the control stages ``FNA_PIPELINE.CONTROLS`` asks for) in order, skipping those that are
up to date.

Every stage writes ``OUTPUT_DIR/<stage>/stage.json``: a key (SHA-256 of the stage's config and
of its input files), the hashes of its outputs, its status and wall time. A stage whose
manifest is ``done`` with the current key and untouched outputs is skipped; a stage whose key
changed is *stale*: its folder is moved to ``<stage>.stale`` and it runs again; an interrupted
stage (``running`` with the current key) resumes from its last checkpoint. One live run at a
time holds the output folder (:class:`~fna_d2.utils.OutputDirLock`): :meth:`Pipeline.run` and
:meth:`Pipeline.run_stage` refuse a folder another live run holds
(:class:`~fna_d2.errors.OutputDirLockedError`) and take over one whose holder died. See
``docs/pipeline.md``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shlex
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from detectron2.config import CfgNode

from ..arch import load_arch
from ..config import get_fna_cfg
from ..errors import ConfigError, OutputDirLockedError, PipelineError
from ..modeling import check_macro_structure
from ..arch import seed_arch
from ..user_imports import import_user_modules, normalize_import_specs
from ..utils import OutputDirLock, lock_holder, read_json
from . import manifest as mf
from .overrides import split_opts
from .controls import control_settings, stage_table
from .stages import PipelineStage, StageSpec, TrainStage
from .workers import launch_worker

__all__ = ["Pipeline"]

logger = logging.getLogger("fna_d2.pipeline")


class Pipeline:
    """Stage graph, manifests and runners for one pipeline config. ``imports``: the user's
    modules / ``.py`` files (``--import``, e.g. dataset registrations), imported here and in
    every spawned stage worker, recorded in each stage manifest and in :meth:`rerun_command`."""

    def __init__(self, config_file: str, output_dir: Optional[str] = None, num_gpus: int = 1,
                 opts: Sequence[str] = (), dist_url: str = "auto", threads: int = 0,
                 imports: Sequence[str] = ()):
        self.imports = normalize_import_specs(imports)
        import_user_modules(self.imports)
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
        #: FNA_PIPELINE.CONTROL* (checked) and the control architectures' names
        self.controls = control_settings(self.pcfg, self.config_file)
        self.control_names: List[str] = self.controls.names
        #: this pipeline's stages, in order, and by name
        self.table: Tuple[PipelineStage, ...] = stage_table(self.control_names)
        self.by_name: Dict[str, PipelineStage] = {s.name: s for s in self.table}
        #: trained stage -> its config file (None: an optional stage left out)
        self.config_files: Dict[str, Optional[str]] = {}
        for stage in self.table:
            if isinstance(stage, TrainStage) and stage.config_stage != stage.name:
                self.config_files[stage.name] = self.config_files[stage.config_stage]
            elif isinstance(stage, TrainStage):
                key = f"{stage.name.upper()}_CONFIG"
                path = self.pcfg.FNA_PIPELINE[key]
                self.config_files[stage.name] = (
                    None if stage.optional and not path
                    else self._resolve(path, base, f"FNA_PIPELINE.{key}"))
        self._cfgs: Dict[str, CfgNode] = {}
        self._lock = OutputDirLock(self.root)

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
    def controls_record_path(self) -> str:
        return os.path.join(self.stage_dir("controls"), "controls.json")

    def control_record(self, name: str) -> Dict[str, Any]:
        """Control ``name``'s row of ``controls/controls.json`` (its arch file, backbone GMAdds,
        error against the derived net's, how it was made); empty when there is none."""
        data = read_json(self.controls_record_path) or {}
        return next((r for r in data.get("architectures") or [] if r.get("name") == name), {})

    @property
    def searched_arch_path(self) -> str:
        return os.path.join(self.stage_dir("search"), "searched_arch.json")

    def stage_cfg(self, stage: str) -> CfgNode:
        """The frozen config of a trained stage (search, adapt, baseline, control_*: the adapt
        config with its ``adapt:`` overrides)."""
        if stage not in self._cfgs:
            path = self.config_files.get(stage)
            if path is None:
                raise PipelineError(f"stage {stage!r} has no config")
            spec = self.by_name[stage]
            cfg = get_fna_cfg(path, self.common_opts
                              + self.stage_opts.get(getattr(spec, "config_stage", stage), []))
            spec.configure(self, cfg, path)
            cfg.freeze()
            self._cfgs[stage] = cfg
        return self._cfgs[stage]

    def stages(self) -> List[str]:
        """The stages of this pipeline, in order (baseline only with a baseline config)."""
        return [s.name for s in self.table if s.enabled(self)]

    def trained_stages(self) -> List[str]:
        """The training stages of this pipeline, in order."""
        return [s for s in self.stages() if self.by_name[s].trained]

    def eval_targets(self) -> List[str]:
        """The trained networks the evaluate stage evaluates (all but the search)."""
        return [s for s in self.trained_stages() if s != "search"]

    def launch(self, fn: Callable, *args: Any) -> None:
        """``fn(*args)`` in ``num_gpus`` processes (detectron2's ``launch``), each importing
        :attr:`imports` first."""
        launch_worker(fn, self.num_gpus, self.dist_url, *args, imports=self.imports)

    # -- stage state
    def spec(self, stage: str) -> StageSpec:
        if stage not in self.by_name:
            raise PipelineError(f"unknown stage {stage!r}; stages: "
                                f"{', '.join(self.by_name)}")
        return self.by_name[stage].spec(self)

    def key(self, spec: StageSpec) -> Tuple[str, Dict[str, str]]:
        """(stage key, input hashes); raises if an input is missing."""
        for path, producer in spec.inputs.items():
            if not os.path.isfile(path):
                raise PipelineError(self._missing_msg(spec.name, path, producer))
        hashes = mf.file_hashes(spec.inputs, self.root)
        return mf.stage_key(spec.name, spec.config_digest, hashes), hashes

    def rerun_command(self, stages: str) -> str:
        """The command line that runs ``stages`` of this pipeline: same config, output folder
        (when it was given) and overrides, so the re-run computes the same stage keys."""
        argv = ["python", "-m", "fna_d2.pipeline", "--config-file", self.config_file]
        for spec in self.imports:
            argv += ["--import", spec]
        if self._output_dir_given:
            argv += ["--output-dir", self.root]
        return shlex.join(argv + ["--stages", stages] + self._opts)

    def _missing_msg(self, stage: str, path: str, producer: str) -> str:
        if producer:
            return (f"stage {stage!r}: input {path} is missing; run stage {producer!r} first "
                    f"({self.rerun_command(producer)})")
        return f"stage {stage!r}: input file {path} does not exist"

    def manifest(self, stage: str) -> Optional[dict]:
        """The stage's ``stage.json`` (None when it has none)."""
        return mf.read_manifest(self.stage_dir(stage))

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
            return "stale", mf.stale_reason(man, spec.config_digest, hashes)
        if man.get("status") != "done":
            holder = None if self._lock.held else lock_holder(self.root)
            if holder is not None:
                return "partial", f"running now ({holder.describe()})"
            return "partial", "interrupted; resumes from its last checkpoint"
        changed = mf.outputs_changed(man, self.root)
        if changed:
            return "stale", changed
        return "done", "up to date"

    def status_table(self) -> str:
        """One line per stage: name, state, wall time, reason."""
        rows = []
        width = max(9, *(len(s) for s in self.stages()))
        for s in self.stages():
            st, reason = self.status(s)
            wt = (self.manifest(s) or {}).get("wall_time_s")
            rows.append(f"{s:<{width}} {st:<8} {'' if wt is None else f'{wt:8.1f} s'}  {reason}")
        return "\n".join(rows)

    # -- running
    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the output folder for the block (re-entrant): raises
        :class:`~fna_d2.errors.OutputDirLockedError` naming the live run that holds it; takes
        over, with a logged warning, the lock of a run that died."""
        if not self._lock.try_acquire():
            raise OutputDirLockedError(self._lock.refusal("another run"))
        try:
            for s in self.by_name:  # e.g. a train_net.py run into one stage's folder
                holder = lock_holder(self.stage_dir(s))
                if holder is not None:
                    raise OutputDirLockedError(f"{self.stage_dir(s)} (stage {s!r}) is in use by "
                                               f"another run ({holder.describe()}): wait for "
                                               "it to finish, or use another output folder")
            yield
        finally:
            self._lock.release()

    def run(self, stages: Optional[Sequence[str]] = None, force: Sequence[str] = ()
            ) -> Dict[str, dict]:
        """Run ``stages`` (default: all) in order, holding the output folder; returns the
        manifests."""
        with self.hold():
            return self._run(stages, force)

    def _run(self, stages: Optional[Sequence[str]], force: Sequence[str]) -> Dict[str, dict]:
        selected = list(stages) if stages else self.stages()
        for s in list(selected) + list(force):
            if s not in self.stages():
                raise PipelineError(f"unknown or disabled stage {s!r}; stages of this "
                                    f"pipeline: {', '.join(self.stages())}")
        self.validate_configs()
        manifests: Dict[str, dict] = {}
        for stage in self.stages():
            if stage not in selected:
                continue
            self._check_producers(stage, selected)
            manifests[stage] = self.run_stage(stage, force=stage in force)
        return manifests

    def validate_configs(self) -> None:
        """Build every stage config (and check arch compatibility) before anything trains."""
        for s in self.trained_stages():
            self.stage_cfg(s)
        scfg, acfg = self.stage_cfg("search"), self.stage_cfg("adapt")
        if scfg.MODEL.FNA.SEED != acfg.MODEL.FNA.SEED:
            raise ConfigError(f"MODEL.FNA.SEED differs between the search config "
                              f"({scfg.MODEL.FNA.SEED!r}) and the adapt config "
                              f"({acfg.MODEL.FNA.SEED!r}); parameter adaptation remaps the "
                              "seed the search started from")
        if os.path.isfile(self.derived_arch_path):
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

    def run_stage(self, stage: str, force: bool = False) -> dict:
        """Run one stage by name (skipped when done, unless ``force``; resumed when partial;
        from scratch when stale). Its inputs must exist; whether their producers are up to
        date is not checked here (:meth:`run` does). Holds the output folder while it runs.
        Returns its manifest."""
        with self.hold():
            return self._run_stage(stage, force)

    def _run_stage(self, stage: str, force: bool) -> dict:
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
            self._clear(spec)
        if st == "new" and os.path.isdir(spec.dir) and os.listdir(spec.dir):
            logger.warning(f"[pipeline] stage {stage}: {spec.dir} holds files without a stage "
                           f"manifest; moved to {spec.dir}.stale, starting fresh")
            mf.move_away(spec.dir)
        resume = st == "partial" and not force
        missing = sorted(set((self.manifest(stage) or {}).get("imports") or ()) - set(self.imports))
        if missing:
            logger.warning(f"[pipeline] stage {stage}: its last run imported {missing}, this "
                           "one does not (--import); its datasets may be unregistered")
        logger.info(f"[pipeline] stage {stage}: {'resuming' if resume else 'running'} "
                    f"({'forced' if force else reason})")
        key, hashes = self.key(spec)
        os.makedirs(spec.dir, exist_ok=True)
        man = mf.start_manifest(stage, key, hashes, spec.config_digest,
                                self.manifest(stage) if resume else None, spec.dir)
        man["imports"] = list(self.imports)  # what a re-run must --import again
        mf.write_manifest(spec.dir, man)
        t0 = time.perf_counter()
        ended = "interrupted"
        try:
            extra = spec.run(spec, resume) or {}
            ended = "done"
        except Exception as e:
            ended = f"failed: {type(e).__name__}"
            raise
        finally:
            mf.write_manifest(spec.dir, mf.end_run(man, time.perf_counter() - t0, ended))
        missing = [p for p in spec.outputs if not os.path.isfile(p)]
        if missing:
            raise PipelineError(f"stage {stage!r} finished but did not write "
                                f"{', '.join(missing)}")
        mf.write_manifest(spec.dir, mf.finish_manifest(man, extra, spec.outputs, self.root))
        runs = len(man["runs"])
        logger.info(f"[pipeline] stage {stage}: done in {man['wall_time_s']:.1f} s"
                    + (f" (over {runs} runs)" if runs > 1 else ""))
        return man

    @staticmethod
    def _clear(spec: StageSpec) -> None:
        """Move the stage folder away; remove its outputs outside it (``report.md``)."""
        mf.move_away(spec.dir)
        for p in spec.outputs:
            if not p.startswith(spec.dir + os.sep) and os.path.isfile(p):
                os.remove(p)
