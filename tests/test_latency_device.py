"""Latency where the network will run: the device and batch a table is timed on (in its key,
refused when they differ), the batch reaching the timed inputs, the synchronising clock for
CUDA, ``python -m fna_d2.latency build | show`` (without detectron2) and a search that uses a
table from another device only when ``MODEL.FNA.SEARCH.LATENCY_TABLE_FOREIGN`` says so.

CPU only: CUDA is exercised through the clock selection and the ConfigError without CUDA."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from fna_d2 import latency
from fna_d2.arch import mobilenetv2_arch, space_from_seed
from fna_d2.errors import ConfigError, LatencyTableError
from fna_d2.latency import (LatencyTable, get_latency_table, latency_table, layer_shapes,
                            timed_inputs)
from fna_d2.latency.cli import main as cli_main

#: one torch thread for the whole module (see conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (32, 32)
DEPTHS = (2, 2, 1, 1, 1, 1)  # tests/_search_cfg.py's TINY_DEPTHS
FOREIGN = "MODEL.FNA.SEARCH.LATENCY_TABLE_FOREIGN"
JETSON = {"type": "cuda", "name": "NVIDIA Jetson Orin Nano", "torch": "2.1.0", "batch": 1,
          "cuda": "12.2"}

# Runs ``python -m fna_d2.latency ARGS`` with detectron2 (and its config/IO stack and
# matplotlib) unimportable, as on an edge box with torch and fna_d2 only; prints which of them
# got imported anyway on the last line of stderr.
_BLOCKED = ("detectron2", "fvcore", "yacs", "iopath", "matplotlib", "pycocotools")
_NO_DETECTRON2 = f"""
import importlib.abc, json, runpy, sys
BLOCKED = {_BLOCKED!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["fna_d2.latency"] + sys.argv[1:]
code = 0
try:
    runpy.run_module("fna_d2.latency", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("LOADED " + json.dumps(loaded), file=sys.stderr)
sys.exit(code)
"""


def run_cli(*args, blocked=True):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CUDA_VISIBLE_DEVICES="")
    cmd = ([sys.executable, "-c", _NO_DETECTRON2] if blocked
           else [sys.executable, "-m", "fna_d2.latency"]) + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


class Lines(logging.Handler):
    """Collects the messages of a logger (independent of pytest's capture and propagation)."""

    def __init__(self, name):
        super().__init__(logging.INFO)
        self.messages, self.logger = [], logging.getLogger(name)

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.old = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.old)


@pytest.fixture(scope="module")
def space():
    return space_from_seed(mobilenetv2_arch(), DEPTHS, "tiny")


@pytest.fixture(scope="module")
def batch2(space, tmp_path_factory):
    path = tmp_path_factory.mktemp("lat") / "batch2.json"
    return path, get_latency_table(space, SIZE, str(path), repeats=1, tune_malloc=False,
                                   batch=2)


def _copy(path, tmp_path, name, change):
    doc = json.loads(path.read_text())
    change(doc)
    out = tmp_path / name
    out.write_text(json.dumps(doc))
    return out


# ----------------------------------------------------------------------------- the key
def test_the_key_records_device_and_batch(batch2):
    path, lt = batch2
    doc = json.loads(path.read_text())
    assert doc["device"] == latency.device_signature("cpu", None, 2)
    assert doc["device"]["type"] == "cpu" and doc["device"]["batch"] == 2
    assert lt.batch == 2 and lt.device == doc["device"]
    assert latency.device_signature("cpu", 1)["batch"] == 1  # the default batch


def test_a_table_of_another_batch_is_refused_naming_the_fix(space, batch2):
    path, _ = batch2
    with pytest.raises(LatencyTableError, match="differs in batch") as e:
        latency_table(space, SIZE, str(path), tune_malloc=False, batch=1)
    assert FOREIGN in str(e.value) and "LATENCY_BATCH" in str(e.value)
    assert latency_table(space, SIZE, str(path), tune_malloc=False, batch=2) == \
        get_latency_table(space, SIZE, str(path), tune_malloc=False, batch=2).entries()


def test_a_table_from_before_the_batch_was_keyed_is_batch_1(space, batch2, tmp_path,
                                                            monkeypatch):
    path, lt = batch2
    old = _copy(path, tmp_path, "old.json", lambda d: (d["device"].pop("batch"),
                                                        d["device"].update(threads=1)))
    monkeypatch.setattr(latency.table, "measure_table",
                        lambda *a, **k: pytest.fail("re-measured a valid version-2 table"))
    got = get_latency_table(space, SIZE, str(old), tune_malloc=False, threads=1)
    assert got.batch == 1 and got.raw == lt.raw
    with pytest.raises(LatencyTableError, match="differs in batch"):
        get_latency_table(space, SIZE, str(old), tune_malloc=False, threads=1, batch=2)


def test_the_batch_reaches_the_timed_inputs(space, monkeypatch, tmp_path):
    """Every module is timed on inputs of the requested batch, at the shapes of the space's
    layers (the oracle: :func:`layer_shapes`, which knows nothing of batches)."""
    seen = []

    def recording_clock(module, x, repeats=10, warmup=3):
        seen.append(tuple(x.shape))
        return 1.0

    monkeypatch.setattr(latency.timing, "time_module", recording_clock)  # the documented seam
    lt = get_latency_table(space, SIZE, str(tmp_path / "b3.json"), repeats=1,
                           tune_malloc=False, batch=3)
    rows = layer_shapes(space, SIZE)
    per_op = [(3, *r["input"]) for r in rows if len(r["candidates"]) > 1
              for _ in r["candidates"]]
    fixed = [(3, 3, *SIZE)] + [(3, *r["input"]) for r in rows if len(r["candidates"]) == 1]
    networks = [(3, 3, *SIZE)] * len(lt.calibration["archs"])
    assert seen == per_op + fixed + networks
    shapes = timed_inputs(space, SIZE, 3)
    assert shapes["fixed"] == fixed and shapes["network"] == networks[:1]
    assert shapes["table"] == [(3, *r["input"]) for r in rows if len(r["candidates"]) > 1]
    assert json.loads((tmp_path / "b3.json").read_text())["device"]["batch"] == 3


# ----------------------------------------------------------------------------- the clocks
def test_cuda_gets_the_synchronising_clock():
    assert latency.timer_for("cuda") is latency.timing.cuda_times
    assert latency.timer_for(torch.device("cuda", 1)) is latency.timing.cuda_times
    assert latency.timer_for("cpu") is latency.timing.cpu_times
    calls = []
    # torch.utils.benchmark.Timer runs on a CPU callable too; it synchronises only an
    # accelerator that is there
    times = latency.timing.cuda_times(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(times) == 4 and all(t > 0 for t in times)
    assert len(calls) >= 2 + 4


def test_latency_device_is_checked(monkeypatch):
    from _search_cfg import search_cfg
    from fna_d2.engine.search.config import check_search_cfg

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = search_cfg("unused", **{"MODEL.FNA.SEARCH.COST": "latency",
                                  "MODEL.FNA.SEARCH.LATENCY_DEVICE": "cuda"})
    with pytest.raises(ConfigError, match=r"MODEL\.FNA\.SEARCH\.LATENCY_DEVICE.*CUDA is not"):
        check_search_cfg(cfg)
    cfg.MODEL.FNA.SEARCH.LATENCY_DEVICE = "tpu"
    with pytest.raises(ConfigError, match=r"MODEL\.FNA\.SEARCH\.LATENCY_DEVICE"):
        check_search_cfg(cfg)
    cfg.MODEL.FNA.SEARCH.COST = "madds"  # not timed: not checked
    check_search_cfg(cfg)
    cfg.MODEL.FNA.SEARCH.COST = "latency"
    cfg.MODEL.FNA.SEARCH.LATENCY_DEVICE = "cpu"
    check_search_cfg(cfg)
    cfg.MODEL.FNA.SEARCH.LATENCY_BATCH = 0
    with pytest.raises(ConfigError, match="LATENCY_BATCH"):
        check_search_cfg(cfg)
    cfg.MODEL.FNA.SEARCH.LATENCY_BATCH = 1
    cfg.MODEL.FNA.SEARCH.LATENCY_TABLE_FOREIGN = True
    with pytest.raises(ConfigError, match="LATENCY_TABLE is empty"):
        check_search_cfg(cfg)


def test_defaults_keep_todays_tables():
    from fna_d2.config import get_fna_cfg

    s = get_fna_cfg().MODEL.FNA.SEARCH
    assert (s.LATENCY_DEVICE, s.LATENCY_BATCH, s.LATENCY_TABLE_FOREIGN) == ("cpu", 1, False)


def test_inference_net_computes_the_derived_net(space):
    """The torch-only network calibration times is DerivedNet's computation (same names, same
    output), so dropping detectron2 from the latency path changes no number."""
    from fna_d2.modeling import DerivedNet

    arch = space.arch_from_path([len(space.stages[s].candidates[i]) - 1
                                 for s, i in space.searchable_layers()])  # the largest ops
    torch.manual_seed(0)
    ref = DerivedNet(arch, out_features=["c5"]).eval()
    net = latency.InferenceNet(arch).eval()
    net.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x)["c5"])


def test_progress_counts_and_estimates():
    now, lines = [0.0], []
    p = latency.Progress(lines.append, every_s=5.0, clock=lambda: now[0])
    p.start(4, "what")
    for t in (1.0, 2.0, 7.0, 8.0):
        now[0] = t
        p.step("op")
    assert lines[0] == "latency: timing 4 modules (what)"
    assert lines[1].startswith("latency: 1/4 timed (op), 1.0 s elapsed, ~3.0 s left")
    assert lines[2].startswith("latency: 3/4 timed (op), 7.0 s elapsed, ~2.3 s left")
    assert lines[3] == "latency: 4/4 timed (op), 8.0 s elapsed" and len(lines) == 4


# ----------------------------------------------------------------------------- foreign tables
def test_foreign_tables_need_the_flag_and_matching_shapes(space, batch2, tmp_path):
    path, lt = batch2
    jetson = _copy(path, tmp_path, "jetson.json", lambda d: d.update(device=JETSON))
    with pytest.raises(LatencyTableError, match=f"measured on .*Jetson.*{FOREIGN} True"):
        latency_table(space, SIZE, str(jetson), tune_malloc=False)
    with Lines("fna_d2.latency") as log:
        got = get_latency_table(space, SIZE, str(jetson), foreign=True)
    assert isinstance(got, LatencyTable) and got.raw == lt.raw and got.device == JETSON
    assert any("Jetson Orin Nano" in m and FOREIGN in m for m in log.messages)
    with pytest.raises(LatencyTableError, match="another search space or input size"):
        get_latency_table(space, (64, 64), str(jetson), foreign=True)
    other = space_from_seed(mobilenetv2_arch(), (2, 1, 1, 1, 1, 1), "other")
    with pytest.raises(LatencyTableError, match="another search space or input size"):
        get_latency_table(other, SIZE, str(jetson), foreign=True)
    with pytest.raises(LatencyTableError, match=f"{FOREIGN} is True.*not a file"):
        get_latency_table(space, SIZE, str(tmp_path / "missing.json"), foreign=True)
    v1 = _copy(path, tmp_path, "v1.json", lambda d: d.update(version=1))
    with pytest.raises(LatencyTableError, match="cannot be re-measured"):
        get_latency_table(space, SIZE, str(v1), foreign=True)
    assert json.loads(v1.read_text())["version"] == 1  # left as it was


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def cli_table(tmp_path_factory):
    """A table of the tiny search config's space at its COST_INPUT_SIZE, built by the command
    with detectron2 unimportable."""
    path = tmp_path_factory.mktemp("cli") / "table.json"
    out = run_cli("build", "--space", "detection", "--depths", *DEPTHS, "--input-size", 96, 96,
                  "--repeats", 1, "--threads", 1, "--no-tune-malloc", "--out", path)
    return path, out


def test_the_command_builds_a_table_without_detectron2(cli_table):
    path, out = cli_table
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == "LOADED []"
    assert "timed" in out.stderr and "left" in out.stderr  # progress with time left
    doc = json.loads(path.read_text())
    space = space_from_seed(mobilenetv2_arch(), DEPTHS, "x")
    assert doc["layers"] == [r for r in layer_shapes(space, (96, 96))
                             if len(r["candidates"]) > 1]
    assert doc["device"]["batch"] == 1 and doc["device"]["threads"] == 1
    assert doc["repeats"] == 1 and f"wrote {path}" in out.stdout
    shown = run_cli("show", path)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stderr.strip().splitlines()[-1] == "LOADED []"
    assert "device: cpu" in shown.stdout and "batch 1" in shown.stdout
    assert "s6.l0" in shown.stdout and "160x3x3" in shown.stdout  # the last searchable layer


@pytest.mark.parametrize("args,match", [
    (["build", "--space", "nope", "--input-size", 8, 8, "--out", "x.json"],
     "unknown search space 'nope'"),
    (["build", "--space", "detection", "--input-size", 8, 8, "--device", "cuda", "--out",
      "x.json"], "--device: 'cuda' asks for CUDA"),
    (["build", "--space", "detection", "--input-size", 8, 8, "--device", "tpu", "--out",
      "x.json"], "--device"),
    (["build", "--space", "detection", "--input-size", 8, 8, "--depths", 1, 1, "--out",
      "x.json"], "depths has 2 entries"),
    (["build", "--space", "detection", "--input-size", 8, 8, "--batch", 0, "--out", "x.json"],
     "--batch must be >= 1"),
    (["build", "--space", "detection", "--input-size", 8, 8], "--out"),
    (["show", "missing.json"], "no such latency table file"),
])
def test_command_errors_are_one_line_and_exit_2(args, match, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    try:
        code = cli_main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.json").exists()


def test_command_refuses_to_overwrite_and_exits_2_in_a_process(cli_table):
    path, _ = cli_table
    out = run_cli("build", "--space", "detection", "--input-size", 8, 8, "--out", path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and lines[-1] == "LOADED []"
    assert lines[:-1] == [f"fna_d2.latency: error: --out {path} exists; pass --force to measure "
                          f"it again"]


def test_a_search_uses_a_table_from_another_device_only_when_told(cli_table, tmp_path,
                                                                  monkeypatch):
    from _search_cfg import search_cfg
    from fna_d2.engine import build_trainer

    path, out = cli_table
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(path.read_text())
    doc["device"] = JETSON
    jetson = tmp_path / "jetson.json"
    jetson.write_text(json.dumps(doc))
    opts = {"MODEL.FNA.SEARCH.COST": "latency", "MODEL.FNA.SEARCH.LATENCY_TABLE": str(jetson)}
    with pytest.raises(LatencyTableError, match=f"{FOREIGN} True"):
        build_trainer(search_cfg(tmp_path / "refused", **opts))
    monkeypatch.setattr(latency.table, "measure_table",
                        lambda *a, **k: pytest.fail("measured a table from another device"))
    cfg = search_cfg(tmp_path / "used", **opts, **{FOREIGN: True})
    with Lines("fna_d2") as log:
        trainer = build_trainer(cfg)
    scale = doc["calibration"]["scale"]
    assert trainer.cost_table == [[v * scale for v in row] for row in doc["table"]]
    assert any("Jetson Orin Nano" in m for m in log.messages)
    meta = trainer.outputs.derived_arch(0).meta
    assert meta["latency_device"] == JETSON and meta["cost_type"] == "latency"
    cfg.MODEL.FNA.SEARCH.COST_INPUT_SIZE = (64, 64)  # the shapes differ: refused, flag or not
    with pytest.raises(LatencyTableError, match="another search space or input size"):
        build_trainer(cfg)
