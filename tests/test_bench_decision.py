"""``bench/bench_search_decision.py`` measures what it says: entropy, top-1, margin and churn
of a search folder, and the agreement of search seeds, against hand-computed values."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
from _shared import bench_module

from fna_d2.arch import save_arch, seed_arch


def _layer(probs, names):
    return {"candidates": names, "probs": probs, "argmax": names[probs.index(max(probs))]}


def _search_dir(tmp_path, early_ops, final_ops):
    """A search output folder: alpha_probs.json at iteration 400, archs at 300 and 400 that
    differ in the layers where ``early_ops`` and ``final_ops`` differ."""
    names = ["k3_e3", "k3_e6", "skip"]
    layers = [_layer([0.5, 0.3, 0.2], names), _layer([0.1, 0.1, 0.8], names)]
    for l in layers:
        l["alpha"] = [math.log(p) for p in l["probs"]]
    h = [-sum(p * math.log(p) for p in l["probs"]) / math.log(3) for l in layers]
    (tmp_path / "arch").mkdir()
    (tmp_path / "alpha_probs.json").write_text(json.dumps(
        {"iteration": 400, "entropy": sum(h) / 2, "layers": layers}))
    for it, ops in ((300, early_ops), (400, final_ops)):
        arch = seed_arch("mobilenetv2")
        stages = list(arch.stages)
        stages[1] = dataclasses.replace(stages[1], ops=tuple(ops))
        save_arch(dataclasses.replace(arch, stages=tuple(stages)),
                  str(tmp_path / "arch" / f"arch_iter{it:07d}.json"))
    return sum(h) / 2


def test_search_stats_are_the_hand_computed_ones(tmp_path):
    D = bench_module("bench_search_decision")
    ent = _search_dir(tmp_path, ["k3_e6", "k3_e6"], ["k3_e6", "k5_e6"])
    s = D.search_stats(str(tmp_path))
    assert s["entropy"] == pytest.approx(ent)
    assert s["top1"] == pytest.approx((0.5 + 0.8) / 2)
    assert s["margin"] == pytest.approx((0.2 + 0.7) / 2)
    assert s["ops"] == ["k3_e3", "skip"]
    assert s["logit_range"] == pytest.approx((math.log(0.5 / 0.2) + math.log(8)) / 2)
    assert s["churn_from"] == 300
    assert s["churn"] == pytest.approx(1 / 2)  # one of the 2 searchable layers changed


def test_agreement_against_chance():
    D = bench_module("bench_search_decision")
    runs = [{"ops": ["a", "b", "c", "d"]}, {"ops": ["a", "b", "x", "y"]},
            {"ops": ["a", "z", "c", "y"]}]
    # pairs: (0,1) 2/4, (0,2) 2/4, (1,2) 2/4
    assert D.agreement(runs) == pytest.approx(0.5)
    assert D.agreement(runs[:1]) is None
    assert D.chance_agreement([6, 7, 2]) == pytest.approx((1 / 6 + 1 / 7 + 1 / 2) / 3)
    settings = {"s": {"entropy": {"mean": 0.5}, "agreement": 0.5, "chance_agreement": 0.45},
                "t": {"entropy": {"mean": 0.99}, "agreement": 0.9, "chance_agreement": 0.2}}
    c = {x["name"]: x["met"] for x in D.checks(settings)}
    assert c == {"s_entropy": True, "s_agreement": False, "t_entropy": False,
                 "t_agreement": True}


def test_signal_summary_is_the_hand_computed_one():
    A = bench_module("alpha_signal")
    # per-batch means / stds of 4 components, the cost term's gradient
    sig = {"mean": [0.1, -0.1, 0.3, -0.3], "std": [1.0, 1.0, 0.1, 0.1],
           "cost": [0.0, 0.0, 0.0, 0.0], "batches": 16}
    out = A.summarize_signal(sig, arch_steps=250, lrs=[0.01])
    assert out["median_snr"] == pytest.approx((0.1 + 3.0) / 2)  # SNRs 0.1, 0.1, 3, 3
    assert out["noise_floor_snr"] == pytest.approx(math.sqrt(2 / math.pi) / 4)
    snr = out["median_snr_with_cost"]
    assert out["expected_drift"]["0.01"] == pytest.approx(250 * 0.01 * snr / math.sqrt(1 + snr ** 2))
    # the cost gradient adds to the task's mean: SNRs (0.1+1)/1, (-0.1+1)/1, ...
    sig["cost"] = [1.0, 1.0, 0.0, 0.0]
    out = A.summarize_signal(sig, arch_steps=250, lrs=[0.01])
    assert out["median_cost_over_noise"] == pytest.approx(0.5)  # 1, 1, 0, 0
    assert out["median_snr_with_cost"] == pytest.approx((1.1 + 3.0) / 2)


def test_quick_run_measures_signal_and_the_remapped_kernels_are_one_function(tmp_path):
    """End to end at instant size: a search record with its statistics, and the signal at
    three states; remapping starts a layer's k3/k5/k7 candidates of one expansion as the same
    function (spread 0), e3 and e6 as different ones."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, os.path.join(root, "bench", "bench_search_decision.py"),
                        "--quick", "--settings", "default", "--signal",
                        "--results-dir", str(tmp_path / "results")],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((tmp_path / "results" / "search_decision.json").read_text())
    s = doc["settings"]["default"]
    assert s["seeds"] == 1 and 0 < s["entropy"]["mean"] <= 1 and s["agreement"] is None
    states = doc["signal"]["states"]
    assert list(states) == ["start (remapped)", "end of warm-up", "end"]
    start = states["start (remapped)"]
    assert start["spread_same_expansion"] < 1e-5
    assert start["spread_across"] > 0.05
    assert start["noise_floor_snr"] == pytest.approx(math.sqrt(2 / math.pi) / math.sqrt(2))
