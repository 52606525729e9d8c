"""Stage manifests: the ``<stage>/stage.json`` each stage writes, the stage *key* they record
and what a manifest says about the stage's state.

A stage's key is the SHA-256 of its config digest and of the contents of its input files; the
manifest also holds ``status`` (``running`` / ``done``), the input and output hashes,
``started`` (the first run's start) / ``finished``, the stage's extras, and its ``runs``: one
entry per run of the stage (started, pid, host, wall time, how it ended). ``wall_time_s`` is
the sum over the runs: a stage interrupted and resumed counts the time of every run. A run
killed before it could record its time (``kill -9``, a lost machine) is counted up to the last
file it wrote in the stage folder.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from typing import Any, Dict, Iterable, Optional

from detectron2.config import CfgNode

from ..utils import file_sha256, read_json, text_sha256, write_json

__all__ = ["MANIFEST", "config_digest", "read_manifest", "write_manifest", "write_stage_json",
           "file_hashes", "stage_key", "stale_reason", "outputs_changed", "start_manifest",
           "finish_manifest", "end_run", "move_away"]

MANIFEST = "stage.json"
#: ``FNA_PIPELINE`` keys no stage config reads, left out of its digest: a stage's key does not
#: depend on them (and did not change when they were added)
PIPELINE_ONLY_KEYS = ("CONTROLS", "CONTROL_RANDOM_N", "CONTROL_TOLERANCE", "CONTROL_RNG_SEED")
_TIME = "%Y-%m-%d %H:%M:%S"


def write_stage_json(path: str, obj: Any) -> str:
    """The pipeline's JSON files (manifests, results): sorted keys, non-JSON values as str."""
    return write_json(path, obj, indent=2, sort_keys=True, default=str)


def config_digest(cfg: CfgNode, root: str) -> str:
    """Hash of a stage config, independent of where the pipeline's output lives: ``OUTPUT_DIR``
    blanked, :data:`PIPELINE_ONLY_KEYS` left out, ``MODEL.FNA.ARCH`` / ``MODEL.WEIGHTS`` inside
    ``root`` made relative to it."""
    c = cfg.clone()
    c.defrost()
    c.OUTPUT_DIR = ""
    for k in PIPELINE_ONLY_KEYS:  # read by the pipeline config alone
        c.FNA_PIPELINE.pop(k, None)
    if c.MODEL.FNA.ARCH and os.path.abspath(c.MODEL.FNA.ARCH).startswith(root + os.sep):
        c.MODEL.FNA.ARCH = os.path.relpath(os.path.abspath(c.MODEL.FNA.ARCH), root)
    if c.MODEL.WEIGHTS and os.path.abspath(c.MODEL.WEIGHTS).startswith(root + os.sep):
        c.MODEL.WEIGHTS = os.path.relpath(os.path.abspath(c.MODEL.WEIGHTS), root)
    return text_sha256(c.dump())


def read_manifest(stage_dir: str) -> Optional[dict]:
    """The manifest in ``stage_dir`` (None when missing or unreadable)."""
    return read_json(os.path.join(stage_dir, MANIFEST))


def write_manifest(stage_dir: str, man: dict) -> None:
    write_stage_json(os.path.join(stage_dir, MANIFEST), man)


def file_hashes(paths: Iterable[str], root: str) -> Dict[str, str]:
    """``{path relative to root: sha256}`` of existing files."""
    return {os.path.relpath(p, root): file_sha256(p) for p in paths}


def stage_key(stage: str, digest: str, hashes: Dict[str, str]) -> str:
    """The key of a stage: its name, config digest and input hashes."""
    blob = json.dumps({"stage": stage, "config": digest, "inputs": hashes}, sort_keys=True)
    return text_sha256(blob)


def stale_reason(man: dict, digest: str, hashes: Dict[str, str]) -> str:
    """Why a manifest's key differs from the current one."""
    if man.get("config_digest") != digest:
        return "its config changed"
    old = man.get("inputs") or {}
    changed = [p for p in hashes if old.get(p) != hashes[p]]
    if changed:
        return "input(s) changed: " + ", ".join(changed)
    return "its key changed"


def outputs_changed(man: dict, root: str) -> Optional[str]:
    """The first recorded output that is missing or no longer has its hash (None: all intact)."""
    for rel, h in (man.get("outputs") or {}).items():
        p = os.path.join(root, rel)
        if not os.path.isfile(p):
            return f"output {rel} is missing"
        if file_sha256(p) != h:
            return f"output {rel} was modified after the stage wrote it"
    return None


def _last_write(stage_dir: Optional[str]) -> Optional[float]:
    """The newest modification time of the files under ``stage_dir`` (None: no files)."""
    newest = None
    for d, _, files in os.walk(stage_dir or ""):
        for f in files:
            try:
                t = os.path.getmtime(os.path.join(d, f))
            except OSError:
                continue
            newest = t if newest is None else max(newest, t)
    return newest


def _epoch(text: Optional[str]) -> Optional[float]:
    try:
        return time.mktime(time.strptime(str(text), _TIME))
    except ValueError:
        return None


def _settled_runs(prev: dict, stage_dir: Optional[str]) -> list:
    """``prev``'s runs, the last one's wall time estimated when it was killed without
    recording it (from its start to the last file written in ``stage_dir``)."""
    runs = [dict(r) for r in prev.get("runs") or []]
    if not runs:  # a manifest from before runs were recorded
        earlier = float(prev.get("wall_time_s") or 0.0)
        if prev.get("status") != "running":
            return [{"started": prev.get("started"), "wall_time_s": earlier, "ended": "done"}]
        if earlier > 0:
            runs.append({"started": None, "wall_time_s": earlier, "ended": "earlier runs"})
        runs.append({"started": prev.get("started"), "started_epoch": _epoch(prev.get("started")),
                     "wall_time_s": None})
    last = runs[-1]
    if last.get("wall_time_s") is None:
        t0, t1 = last.get("started_epoch"), _last_write(stage_dir)
        last["wall_time_s"] = max(0.0, t1 - t0) if t0 is not None and t1 is not None else 0.0
        last["ended"] = "killed (counted up to the last file it wrote)"
    return runs


def start_manifest(stage: str, key: str, hashes: Dict[str, str], digest: str,
                   prev: Optional[dict] = None, stage_dir: Optional[str] = None) -> dict:
    """The ``running`` manifest of a stage that starts, or resumes after ``prev`` (the
    manifest in ``stage_dir``, whose runs it keeps). Its last run is this one, without a wall
    time until :func:`end_run` records it."""
    now = time.strftime(_TIME)
    runs = _settled_runs(prev, stage_dir) if prev else []
    runs.append({"started": now, "started_epoch": time.time(), "pid": os.getpid(),
                 "host": socket.gethostname(), "wall_time_s": None})
    return {"stage": stage, "status": "running", "key": key, "inputs": hashes,
            "config_digest": digest, "started": (prev or {}).get("started") or now,
            "runs": runs, "wall_time_s": _total(runs)}


def _total(runs: list) -> float:
    return float(sum(r.get("wall_time_s") or 0.0 for r in runs))


def end_run(man: dict, seconds: float, ended: str) -> dict:
    """Record the wall time and end (``done``, ``failed: ...``, ``interrupted``) of ``man``'s
    current run; ``wall_time_s`` becomes the sum over all its runs."""
    man["runs"][-1].update(wall_time_s=float(seconds), ended=ended)
    man["wall_time_s"] = _total(man["runs"])
    return man


def finish_manifest(man: dict, extra: Dict[str, Any], outputs: Iterable[str], root: str) -> dict:
    """``man`` marked ``done`` with the stage's extras and the hashes of its outputs."""
    man.update(extra)
    man["outputs"] = file_hashes(outputs, root)
    man["status"] = "done"
    man["finished"] = time.strftime(_TIME)
    return man


def move_away(d: str) -> None:
    """Move folder ``d`` to ``d.stale`` (replacing an older one)."""
    if not os.path.isdir(d):
        return
    old = d + ".stale"
    if os.path.isdir(old):
        shutil.rmtree(old)
    os.replace(d, old)
