"""Latency lookup tables: shape, caching, refusal of foreign tables, prediction check, and the
search's latency cost."""
from __future__ import annotations

import json
import math

import pytest
import torch

from fna_d2 import latency
from fna_d2.arch import mobilenetv2_arch, space_from_seed
from fna_d2.latency import (LatencyTableError, latency_table, layer_shapes,
                            predict_vs_measured, spearman)

SIZE = (32, 32)


#: one torch thread for the whole module (see conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def space():
    return space_from_seed(mobilenetv2_arch(), (2, 2, 1, 1, 1, 1), "tiny")


@pytest.fixture(scope="module")
def cached(space, tmp_path_factory):
    path = tmp_path_factory.mktemp("lat") / "table.json"
    return path, latency_table(space, SIZE, str(path), repeats=2)


def test_table_shape_and_file(space, cached):
    path, table = cached
    assert len(table) == space.num_searchable
    for row, (s, i) in zip(table, space.searchable_layers()):
        assert len(row) == len(space.stages[s].candidates[i])
        assert all(v > 0 and math.isfinite(v) for v in row)
    doc = json.loads(path.read_text())
    assert doc["table"] == table and doc["input_size"] == list(SIZE) and doc["unit"] == "ms"
    assert doc["device"] == latency.device_signature("cpu")
    assert doc["repeats"] == 2


def test_layer_shapes_follow_the_strides(space):
    rows = layer_shapes(space, (97, 64))
    assert rows[0]["input"] == [32, 49, 32]  # after the stride-2 stem (ceil)
    last = rows[-1]
    assert last["input"][0] == 160 and last["input"][1:] == [4, 2]


def test_cached_table_is_reused(space, cached, monkeypatch):
    path, table = cached
    monkeypatch.setattr(latency, "measure_latency_table",
                        lambda *a, **k: pytest.fail("re-measured a cached table"))
    assert latency_table(space, SIZE, str(path)) == table


@pytest.mark.parametrize("change,match", [
    (lambda d: d["device"].update(name="Some Other CPU"), "measured on"),
    (lambda d: d["device"].update(threads=d["device"]["threads"] + 7), "measured on"),
    (lambda d: d["device"].update(torch="0.0.1"), "measured on"),
])
def test_table_from_another_device_is_refused(space, cached, tmp_path, change, match):
    path, _ = cached
    doc = json.loads(path.read_text())
    change(doc)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    with pytest.raises(LatencyTableError, match=match):
        latency_table(space, SIZE, str(other))


def test_table_for_other_shapes_is_refused(space, cached):
    path, _ = cached
    with pytest.raises(LatencyTableError, match="another search space or input size"):
        latency_table(space, (64, 64), str(path))
    other_space = space_from_seed(mobilenetv2_arch(), (2, 1, 1, 1, 1, 1), "other")
    with pytest.raises(LatencyTableError, match="another search space or input size"):
        latency_table(other_space, SIZE, str(path))


def test_predict_vs_measured_on_two_archs(space, cached):
    _, table = cached
    first = space.arch_from_choices([[0] * st.depth for st in space.stages])
    last = space.arch_from_choices([[0]] + [[len(c) - 1 for c in st.candidates]
                                            for st in space.stages[1:]])
    rep = predict_vs_measured([first, last], table, space, SIZE, repeats=2)
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


def test_search_uses_the_latency_table(tmp_path):
    from _search_cfg import search_cfg
    from fna_d2.engine import build_trainer

    path = tmp_path / "lat.json"
    cfg = search_cfg(tmp_path / "out", **{"MODEL.FNA.SEARCH.COST": "latency",
                                          "MODEL.FNA.SEARCH.LATENCY_TABLE": str(path),
                                          "MODEL.FNA.SEARCH.LATENCY_REPEATS": 1,
                                          "MODEL.FNA.SEARCH.LATENCY_THREADS": 1})
    trainer = build_trainer(cfg)
    assert trainer.cost_table == json.loads(path.read_text())["table"]
    assert trainer.madds_table != trainer.cost_table
    assert json.loads(path.read_text())["device"]["threads"] == 1
    assert float(trainer._trainer.expected_cost()) > 0
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
