"""``bench/bench_fna_claims.py`` cannot rot: its statistics against hand-computed values, and a
``--quick`` run on the nuclei demo that trains every network once, resumes without running
anything again, and says what is missing when a record is lost."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from _shared import bench_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "bench_fna_claims.py")


def _rec(net, seed, miou):
    return {"kind": "train", "network": net, "train_seed": seed, "mIoU": miou,
            "backbone_gmadds": 1.0}


def test_paired_differences_rank_and_verdicts_are_the_hand_computed_ones():
    S = bench_module("claims_stats")
    runs = {"searched": (10, 12, 14), "random_00": (8, 9, 10), "random_01": (11, 13, 15),
            "seed": (9, 11, 13)}
    recs = {f"train_{n}_s{s}": _rec(n, s, v) for n, vs in runs.items() for s, v in enumerate(vs)}
    g = S.demo_figures(recs, "mIoU")
    assert g["networks"]["searched"]["mean"] == pytest.approx(12.0)
    assert g["networks"]["searched"]["std"] == pytest.approx(2.0)
    p = g["paired"]["random_00"]  # diffs 2, 3, 4: mean 3, std 1, t(0.975, 2) = 4.303
    assert (p["n"], p["mean"], p["std"]) == (3, pytest.approx(3.0), pytest.approx(1.0))
    assert p["ci95_half"] == pytest.approx(4.303 / 3 ** 0.5, rel=1e-3)
    assert g["paired"]["seed"]["mean"] == pytest.approx(1.0) and g["paired"]["seed"]["std"] == 0
    assert g["rank_among_random"] == {"rank": 2, "of": 3}  # random_01 (13) beats 12
    checks = {c["name"]: c for c in S.checks({"nuclei": g}, {"nuclei": True})}
    assert checks["nuclei_searched_vs_random"]["met"] is False
    assert checks["nuclei_searched_vs_seed"]["met"] is True
    assert "beyond the seeds' spread" in checks["nuclei_searched_vs_seed"]["text"]
    partial = {c["name"]: c for c in S.checks({"nuclei": g}, {"nuclei": False})}
    assert partial["nuclei_searched_vs_seed"]["met"] is None  # no verdict on a partial run
    assert "(incomplete)" in partial["nuclei_searched_vs_seed"]["text"]


def _run(tmp_path, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, SCRIPT, "--quick", "--demos", "nuclei",
                           "--results-dir", str(tmp_path / "results"), *extra],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=900)


def test_quick_run_trains_every_network_and_resumes_from_its_records(tmp_path):
    r = _run(tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rec = tmp_path / "results" / "fna_claims" / "nuclei"
    names = {"searched", "seed", "fna_coco", "searched_target_seed", "random_00", "random_01",
             "shrunk_depth", "shrunk_expansion"}
    assert {p.stem for p in rec.glob("train_*.json")} == {f"train_{n}_s0" for n in names}
    plan = json.loads((rec / "archs" / "controls.json").read_text())
    for n in ("random_00", "random_01"):  # drawn at the searched architecture's cost
        assert abs(plan["controls"][n]["rel_error"]) <= 0.03
    doc = json.loads((tmp_path / "results" / "fna_claims.json").read_text())
    assert doc["complete"] == {"nuclei": True} and doc["missing"] == {"nuclei": []}
    nets = doc["figures"]["nuclei"]["networks"]
    assert set(nets) == names and all(v["n"] == 1 for v in nets.values())
    assert (tmp_path / "results" / "img" / "fna_claims.png").exists()
    # resumed: nothing runs again; a lost record is run again and only that one
    (rec / "train_seed_s0.json").unlink()
    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    trained = [line for line in r.stdout.splitlines() if line.startswith("[fna_claims] train_")]
    assert len(trained) == 1 and "train_seed_s0" in trained[0]
