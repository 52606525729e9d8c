"""``bench/gpu_check.py`` cannot rot: its ``--quick`` CPU run builds both trainers from the real
COCO configs, times them and writes the result file (checked here against the formula of the
projection, recomputed from the recorded numbers), and the full check refuses to run without
CUDA. The docs section labels a CPU result as one and says plainly when nothing ran on a GPU."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from _shared import bench_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "gpu_check.py")



def _run(args, tmp_path, **env):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             DETECTRON2_DATASETS=str(tmp_path / "datasets"), **env)
    return subprocess.run([sys.executable, SCRIPT] + list(args), cwd=str(tmp_path), env=e,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "gpu_check.json"
    r = _run(["--quick", "--out", str(out), "--work", str(tmp / "work")], tmp,
             CUDA_VISIBLE_DEVICES="")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(out, encoding="utf-8") as fh:
        return json.load(fh), r


def test_quick_run_times_both_configs_and_records_the_machine(quick):
    doc, r = quick
    assert doc["quick"] is True and doc["name"] == "gpu_check"
    m = doc["machine"]
    assert m["cpu"] and m["torch"] and m["date"] and "cuda_version" in m
    assert m["gpu"] is None  # no GPU: none is claimed
    assert sorted((x["config"], x["precision"]) for x in doc["runs"]) == [
        ("adapt", "bf16"), ("adapt", "fp32"), ("search", "bf16"), ("search", "fp32")]
    for rec in doc["runs"]:
        assert rec["status"] == "ok", rec
        assert rec["peak_memory_mb"] is None  # CPU: no GPU memory to report
        # the first conv computed in the dtype asked for (bf16: SOLVER.AMP took effect)
        want = "torch.bfloat16" if rec["precision"] == "bf16" else "torch.float32"
        assert rec["observed_dtypes"] == [want], rec
        assert rec["input_sizes_hw"] and all(min(hw) == bench_module('gpu_check_data').QUICK_SIZE for hw in rec["input_sizes_hw"])
        for s in rec["s_per_iter"].values():
            assert s["n"] == 1 and s["median"] > 0
    search, adapt = [next(x for x in doc["runs"] if (x["config"], x["precision"]) == (c, "fp32"))
                     for c in ("search", "adapt")]
    assert set(search["s_per_iter"]) == {"weight_step", "iteration"}
    assert set(adapt["s_per_iter"]) == {"step"}
    assert re.search(r"ETA \d", r.stderr)  # progress with an ETA goes to stderr
    assert any("--quick" in n for n in doc["notes"])


def test_projection_is_the_formula_of_the_recorded_numbers(quick):
    doc, _ = quick
    sch = doc["schedules"]
    # the paper schedules as the COCO configs state them, not the quick run's
    assert (sch["search"]["max_iter"], sch["search"]["warmup_iters"]) == (102608, 58633)
    assert sch["search"]["per_gpu_batch"] == 1 and sch["adapt"]["per_gpu_batch"] == 4
    search, adapt = [next(x for x in doc["runs"] if (x["config"], x["precision"]) == (c, "fp32"))
                     for c in ("search", "adapt")]
    s, w, m = search["s_per_iter"], sch["search"]["warmup_iters"], sch["search"]["max_iter"]
    want = (w * s["weight_step"]["median"] + (m - w) * s["iteration"]["median"]) * 8 / 3600
    assert search["projection"]["gpu_hours"] == pytest.approx(want, rel=1e-9)
    want = sch["adapt"]["max_iter"] * adapt["s_per_iter"]["step"]["median"] * 8 / 3600
    assert adapt["projection"]["gpu_hours"] == pytest.approx(want, rel=1e-9)
    for rec, paper in ((search, 6.0), (adapt, 3.2)):
        p = rec["projection"]
        assert p["gpu_days"] == pytest.approx(p["gpu_hours"] / 24)
        assert p["paper_gpu_days"] == paper
        assert p["ratio_to_paper"] == pytest.approx(p["gpu_hours"] / (paper * 24))
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["runs_completed"]["met"] is True
    assert checks["wall_time_min"]["met"] is None  # no verdict on a quick run


def test_docs_section_labels_a_cpu_result_and_says_when_nothing_ran_on_a_gpu(quick):
    doc, _ = quick
    section = bench_module("sections.gpu_check")
    text = "\n".join(section.section(doc, os.path.join(ROOT, "docs", "benchmarks.md")))
    assert "CPU smoke result" in text
    assert "not run on a GPU yet" in "\n".join(section.summary(doc))
    assert "Not run on a GPU yet" in "\n".join(section.section(None, "docs/benchmarks.md"))


def _script():
    return bench_module("gpu_check")


def test_quick_inputs_give_every_stride2_conv_an_input_two_pixels_wide(tmp_path):
    """torch 2.14.1's CPU bfloat16 conv returns NaN weight gradients for a stride-2 conv whose
    input is 1 pixel wide (what a 64-pixel portrait image gave P7: a flaky NaN in CI's bf16
    adaptation step). The quick inputs, padded as the model pads them, must avoid that shape."""
    g, data = _script(), bench_module("gpu_check_data")
    from detectron2.modeling import build_model
    from fna_d2.config import get_fna_cfg
    a = g.parse(["--quick", "--work", str(tmp_path)])
    opts = g.run_opts("adapt", "fp32", a, g.schedule("adapt"), "coco_2017_val", str(tmp_path))
    cfg = get_fna_cfg(os.path.join(ROOT, g.CONFIGS["adapt"]), [str(o) for o in opts])
    model = build_model(cfg).eval()
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2):
            m.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    for w, h in data.image_shapes(True):
        assert min(w, h) == data.QUICK_SIZE
        with torch.no_grad():
            model([{"image": torch.zeros(3, h, w), "height": h, "width": w}])
    assert seen and min(min(hw) for hw in seen) >= 2, sorted(set(seen))


def test_full_check_refuses_to_run_without_cuda(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CI may have a GPU one day
    stored = os.path.join(ROOT, "bench", "results", "gpu_check.json")
    before = os.stat(stored).st_mtime_ns if os.path.exists(stored) else None
    assert _script().main(["--work", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--quick" in err
    assert (os.stat(stored).st_mtime_ns if os.path.exists(stored) else None) == before
    assert not (tmp_path / "work").exists()  # refused before doing anything


def test_fp16_on_a_cpu_is_refused_with_the_reason():
    g = _script()
    why = g.refusal(g.parse(["--quick", "--precisions", "fp32,fp16"]))
    assert why and "bf16" in why
    assert g.refusal(g.parse(["--quick", "--precisions", "fp32,bf16"])) is None
