"""Latency lookup tables: shape, caching, refusal of foreign tables (device, threads,
allocator setting, shapes, format version), whole-network calibration, the allocator helper,
prediction check, and the search's latency cost.

The pytest process itself is never allocator-tuned here (tables are built with
``tune_malloc=False`` or the helper is faked): the real ``mallopt`` runs in a subprocess,
because it is process-wide and irreversible."""
from __future__ import annotations

import json
import logging
import math
import os
import statistics
import subprocess
import sys

import pytest
import torch

from fna_d2 import latency
from fna_d2.arch import mobilenetv2_arch, space_from_seed
from fna_d2.latency import (LatencyTable, LatencyTableError, get_latency_table, latency_table,
                            layer_shapes, predict_vs_measured, spearman)
from fna_d2.latency.malloc import MallocTuning

SIZE = (32, 32)


class RecordingAllocator(MallocTuning):
    """Records every tuning request and answers as an untuned process: never tunes pytest."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def apply(self, enabled=True):
        self.calls.append(enabled)
        return super().apply(False)


#: one torch thread for the whole module (see conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def space():
    return space_from_seed(mobilenetv2_arch(), (2, 2, 1, 1, 1, 1), "tiny")


@pytest.fixture(scope="module")
def cached(space, tmp_path_factory):
    path = tmp_path_factory.mktemp("lat") / "table.json"
    return path, get_latency_table(space, SIZE, str(path), repeats=2, tune_malloc=False)


def test_table_shape_and_file(space, cached):
    path, lt = cached
    table = lt.raw
    assert len(table) == space.num_searchable
    for row, (s, i) in zip(table, space.searchable_layers()):
        assert len(row) == len(space.stages[s].candidates[i])
        assert all(v > 0 and math.isfinite(v) for v in row)
    doc = json.loads(path.read_text())
    assert doc["table"] == table and doc["input_size"] == list(SIZE) and doc["unit"] == "ms"
    assert doc["device"] == latency.device_signature("cpu")
    assert doc["repeats"] == 2
    assert doc["version"] == latency.LATENCY_VERSION == 2


def test_layer_shapes_follow_the_strides(space):
    rows = layer_shapes(space, (97, 64))
    assert rows[0]["input"] == [32, 49, 32]  # after the stride-2 stem (ceil)
    last = rows[-1]
    assert last["input"][0] == 160 and last["input"][1:] == [4, 2]


def test_cached_table_is_reused(space, cached, monkeypatch):
    path, lt = cached
    for name in ("measure_latency_table", "calibrate_table"):  # what the table module calls
        monkeypatch.setattr(latency.table, name,
                            lambda *a, **k: pytest.fail("re-measured a cache"))
    assert latency_table(space, SIZE, str(path), tune_malloc=False) == lt.entries()
    assert latency_table(space, SIZE, str(path), tune_malloc=False, calibrated=False) == lt.raw


@pytest.mark.parametrize("change,match", [
    (lambda d: d["device"].update(name="Some Other CPU"), "measured on"),
    (lambda d: d["device"].update(threads=d["device"]["threads"] + 7), "measured on"),
    (lambda d: d["device"].update(torch="0.0.1"), "measured on"),
    (lambda d: d["device"].update(malloc="glibc, mmap/trim thresholds 1073741824"),
     "differs in malloc"),
    (lambda d: d["device"].pop("malloc"), "differs in malloc"),
])
def test_table_from_another_device_is_refused(space, cached, tmp_path, change, match):
    path, _ = cached
    doc = json.loads(path.read_text())
    change(doc)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    with pytest.raises(LatencyTableError, match=match):
        latency_table(space, SIZE, str(other), tune_malloc=False)


def test_table_for_other_shapes_is_refused(space, cached):
    path, _ = cached
    with pytest.raises(LatencyTableError, match="another search space or input size"):
        latency_table(space, (64, 64), str(path), tune_malloc=False)
    other_space = space_from_seed(mobilenetv2_arch(), (2, 1, 1, 1, 1, 1), "other")
    with pytest.raises(LatencyTableError, match="another search space or input size"):
        latency_table(other_space, SIZE, str(path), tune_malloc=False)


def test_predict_vs_measured_on_two_archs(space, cached):
    _, lt = cached
    first = space.arch_from_choices([[0] * st.depth for st in space.stages])
    last = space.arch_from_choices([[0]] + [[len(c) - 1 for c in st.candidates]
                                            for st in space.stages[1:]])
    rep = predict_vs_measured([first, last], lt.raw, space, SIZE, repeats=2, tune_malloc=False)
    assert rep["scale"] == 1.0 and rep["predicted_ms"] == rep["predicted_raw_ms"]
    assert rep["num_archs"] == 2
    assert len(rep["predicted_ms"]) == len(rep["measured_ms"]) == 2
    assert all(v > 0 for v in rep["predicted_ms"] + rep["measured_ms"])
    assert rep["fixed_ms"] > 0 and rep["mean_rel_error"] >= 0
    assert -1.0 <= rep["spearman"] <= 1.0


def test_spearman():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.8, abs=0.2)
    assert math.isnan(spearman([1], [1]))


@pytest.mark.parametrize("tune", [True, False])
def test_search_uses_the_latency_table(tmp_path, monkeypatch, tune):
    from _search_cfg import search_cfg
    from fna_d2.config import get_fna_cfg
    from fna_d2.engine import build_trainer

    assert get_fna_cfg().MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC is True  # the default
    recorder = RecordingAllocator()
    monkeypatch.setattr(latency.malloc, "ALLOCATOR", recorder)
    path = tmp_path / "lat.json"
    cfg = search_cfg(tmp_path / "out", **{"MODEL.FNA.SEARCH.COST": "latency",
                                          "MODEL.FNA.SEARCH.LATENCY_TABLE": str(path),
                                          "MODEL.FNA.SEARCH.LATENCY_REPEATS": 1,
                                          "MODEL.FNA.SEARCH.LATENCY_THREADS": 1,
                                          "MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC": tune})
    trainer = build_trainer(cfg)
    assert recorder.calls and set(recorder.calls) == {tune}
    doc = json.loads(path.read_text())
    scale = doc["calibration"]["scale"]
    assert trainer.cost_table == [[v * scale for v in row] for row in doc["table"]]
    assert trainer.madds_table != trainer.cost_table
    assert doc["device"]["threads"] == 1
    assert float(trainer.runner.expected_cost().detach()) > 0
    cfg.MODEL.FNA.SEARCH.COST_INPUT_SIZE = (64, 64)
    with pytest.raises(LatencyTableError, match="another search space or input size"):
        build_trainer(cfg)


def test_ops_are_timed_in_eval_mode_without_grad():
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen["training"], seen["grad"] = self.training, torch.is_grad_enabled()
            return x

    assert latency.time_module(Probe(), torch.zeros(1), repeats=1, warmup=0) >= 0
    assert seen == {"training": False, "grad": False}


# ----------------------------------------------------------------------------- allocator
_TUNE_SCRIPT = """
import json
from fna_d2 import latency as L
before = L.device_signature("cpu", 1)
first = L.apply_malloc_tuning(True)
second = L.apply_malloc_tuning(True)
off = L.apply_malloc_tuning(False)
after = L.device_signature("cpu", 1)
print(json.dumps([before, first, second, off, after]))
"""


def test_malloc_tuning_in_a_fresh_process():
    """Status, idempotence and the device key, with the real mallopt (in a subprocess: the
    setting is process-wide and irreversible)."""
    env = dict(os.environ)
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(k, None)
    out = subprocess.run([sys.executable, "-c", _TUNE_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, first, second, off, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert first == second  # idempotent
    assert first["requested"] is True and off["requested"] is False
    if before["malloc"].startswith("glibc"):
        assert before["malloc"] == "glibc, dynamic thresholds"
        assert first["tuned"] is True and first["mmap_threshold"] == latency.MALLOC_THRESHOLD
        assert off["tuned"] is True and "cannot restore" in off["reason"]
        assert after["malloc"] == first["signature"] != before["malloc"]
    else:  # another C library: a no-op that says why
        assert first["tuned"] is False and "not glibc" in first["reason"]
        assert after == before
    assert {k: v for k, v in before.items() if k != "malloc"} == \
        {k: v for k, v in after.items() if k != "malloc"}


def test_malloc_tuning_is_a_logged_noop_without_glibc(monkeypatch, caplog):
    monkeypatch.setattr(latency.malloc, "ALLOCATOR", MallocTuning(find_libc=lambda: None))
    with caplog.at_level(logging.INFO, logger="fna_d2.latency"):
        st = latency.apply_malloc_tuning(True)
    assert st["tuned"] is False and "not glibc" in st["reason"]
    assert latency.malloc.ALLOCATOR.status is None
    assert latency.malloc_signature().startswith("not glibc")
    assert any("not glibc" in r.getMessage() for r in caplog.records)
    assert latency.apply_malloc_tuning(True) == st


def test_cache_key_differs_with_the_allocator_setting(space, cached, monkeypatch):
    path, _ = cached
    untuned = latency.device_signature("cpu")
    assert json.loads(path.read_text())["device"]["malloc"] == untuned["malloc"]
    # the state apply_malloc_tuning leaves behind, without tuning the pytest process
    tuned_state = MallocTuning()
    tuned_state.status = {
        "tuned": True, "signature": f"glibc, mmap/trim thresholds {latency.MALLOC_THRESHOLD}",
        "reason": "test"}
    monkeypatch.setattr(latency.malloc, "ALLOCATOR", tuned_state)
    tuned = latency.device_signature("cpu")
    assert tuned["malloc"] != untuned["malloc"]
    with pytest.raises(LatencyTableError, match=f"{path.name}.*differs in malloc"):
        latency_table(space, SIZE, str(path), tune_malloc=True)


def test_time_module_tunes_only_when_asked(monkeypatch):
    recorder = RecordingAllocator()
    monkeypatch.setattr(latency.malloc, "ALLOCATOR", recorder)
    latency.time_module(torch.nn.Identity(), torch.zeros(1), repeats=1, warmup=0)
    assert recorder.calls == []
    latency.time_module(torch.nn.Identity(), torch.zeros(1), repeats=1, warmup=0,
                        tune_malloc=True)
    assert recorder.calls == [True]


# ----------------------------------------------------------------------------- calibration
def test_calibration_is_stored_and_applied(space, cached, tmp_path):
    path, lt = cached
    cal = json.loads(path.read_text())["calibration"]
    assert len(cal["archs"]) == 4
    ratios = [a["measured_ms"] / a["predicted_raw_ms"] for a in cal["archs"]]
    assert cal["scale"] == pytest.approx(statistics.median(ratios)) == lt.scale
    assert cal["scale"] > 0 and cal["fixed_ms"] == lt.fixed_ms > 0
    for a in cal["archs"]:  # predicted_raw = fixed + the raw entries of the arch's ops
        assert a["predicted_raw_ms"] == pytest.approx(
            cal["fixed_ms"] + sum(lt.raw[l][c] for l, c in enumerate(a["choices"])))
    # the stored scale (not a recomputed one) is what predictions use
    doc = json.loads(path.read_text())
    doc["calibration"]["scale"] = 2.5
    other = tmp_path / "scaled.json"
    other.write_text(json.dumps(doc))
    scaled = get_latency_table(space, SIZE, str(other), tune_malloc=False)
    assert scaled.raw == lt.raw and scaled.scale == 2.5
    assert latency_table(space, SIZE, str(other), tune_malloc=False) == \
        [[v * 2.5 for v in row] for row in lt.raw]
    archs = latency.default_calibration_archs(space, lt.raw)[:2]
    rep = predict_vs_measured(archs, scaled, space, SIZE, repeats=1, tune_malloc=False)
    assert rep["scale"] == 2.5 and rep["fixed_ms"] == lt.fixed_ms
    for k, arch in enumerate(archs):
        ch = space.path_of(arch, "test")
        raw = lt.fixed_ms + sum(lt.raw[l][c] for l, c in enumerate(ch))
        assert rep["predicted_raw_ms"][k] == pytest.approx(raw)
        assert rep["predicted_ms"][k] == pytest.approx(2.5 * raw) == scaled.predict(ch)
    assert rep["mean_rel_error"] != rep["mean_rel_error_raw"]


def test_default_calibration_archs_span_the_table(space, cached):
    _, lt = cached
    archs = latency.default_calibration_archs(space, lt.raw)
    assert [a.meta["name"] for a in archs] == [
        "calibration_fastest", "calibration_median", "calibration_slowest",
        "calibration_alternating"]
    pred = [lt.predict(space.path_of(a), calibrated=False) for a in archs]
    assert pred[0] == min(pred) and pred[2] == max(pred)


def test_old_format_version_is_rebuilt_with_a_message(space, cached, tmp_path, caplog):
    path, _ = cached
    doc = json.loads(path.read_text())
    doc["version"] = 1
    del doc["calibration"]
    doc["device"].pop("malloc")
    old = tmp_path / "old_table.json"
    old.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="fna_d2.latency"):
        lt = get_latency_table(space, SIZE, str(old), repeats=1, tune_malloc=False)
    msgs = [r.getMessage() for r in caplog.records if "version-1" in r.getMessage()]
    assert msgs and str(old) in msgs[0] and "re-measured" in msgs[0]
    new = json.loads(old.read_text())
    assert new["version"] == 2 and new["calibration"]["scale"] == lt.scale
    assert new["device"] == latency.device_signature("cpu")
    assert json.loads((tmp_path / "old_table.json.v1").read_text())["version"] == 1
    assert isinstance(lt, LatencyTable)


def test_newer_format_version_is_refused(space, cached, tmp_path):
    path, _ = cached
    doc = json.loads(path.read_text())
    doc["version"] = 99
    other = tmp_path / "future.json"
    other.write_text(json.dumps(doc))
    with pytest.raises(LatencyTableError, match=r"future\.json: latency table format version 99"):
        latency_table(space, SIZE, str(other), tune_malloc=False)
