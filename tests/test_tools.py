"""``python -m fna_d2.tools``: analyze (parameters of the built model, FLOPs, activations,
structure) on an instant-test config, visualize-json (one PNG per image with detections, on a
demo dataset and on one registered by ``--import``), export handed to ``fna_d2.export``, and
bad input on one line, exit code 2."""
from __future__ import annotations

import builtins
import json
import os

import numpy as np
import pytest
from PIL import Image
from detectron2.data import DatasetCatalog

import fna_d2  # noqa: F401  (registers the demo datasets)
from fna_d2.config import get_fna_cfg
from fna_d2.data.demo import ensure_demo_data
from fna_d2.engine import FNATrainer
from fna_d2.tools.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, "configs", "instant_test", "trees_baseline.yaml")
#: the instant test's seed baseline at 64 px with 1 head conv, no seed weights
SMALL = ["MODEL.FNA.SEED_WEIGHTS", "", "MODEL.RETINANET.NUM_CONVS", "1",
         "MODEL.FPN.OUT_CHANNELS", "32", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _one_error(err: str) -> str:
    lines = [l for l in err.splitlines() if l.startswith("python -m fna_d2.tools: error:")
             or l.startswith("fna_d2.export: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_analyze_counts_the_parameters_of_the_built_model_and_flops(tmp_path, capsys):
    out = tmp_path / "analysis.json"
    rc = main(["analyze", "--config-file", BASELINE, "--tasks",
               "flop,parameter,activation,structure", "--output", str(out), *SMALL])
    assert rc == 0
    with open(out) as f:
        res = json.load(f)
    model = FNATrainer.build_model(get_fna_cfg(BASELINE, SMALL))
    assert res["parameters"] == sum(p.numel() for p in model.parameters())
    assert res["flops"] > 0 and res["flops_by_operator"]["conv"] > 0
    assert res["flops"] == pytest.approx(sum(res["flops_by_operator"].values()))
    assert res["activations_m"] > 0
    assert res["structure"] == str(model.eval())
    printed = capsys.readouterr().out
    assert f"Parameters: {res['parameters']:,}" in printed and "FLOPs" in printed


def test_analyze_flops_grow_with_the_input_size(tmp_path):
    flops = []
    for size in (64, 128):
        out = tmp_path / f"a{size}.json"
        assert main(["analyze", "--config-file", BASELINE, "--tasks", "flop", "--output",
                     str(out), *SMALL, "INPUT.MIN_SIZE_TEST", str(size),
                     "INPUT.MAX_SIZE_TEST", str(size)]) == 0
        with open(out) as f:
            flops.append(json.load(f)["flops"])
    assert flops[1] > 3 * flops[0]  # about 4x the pixels


def test_analyze_bad_task_or_dataset_is_one_line(capsys):
    assert main(["analyze", "--config-file", BASELINE, "--tasks", "flop,speed", *SMALL]) == 2
    assert "'speed'" in _one_error(capsys.readouterr().err)
    assert main(["analyze", "--config-file", BASELINE, *SMALL, "DATASETS.TEST",
                 "('nope_val',)"]) == 2
    line = _one_error(capsys.readouterr().err)
    assert "'nope_val' is not registered" in line and "--import" in line


def _results(path, dicts, scores=(0.9, 0.2)):
    """Detections at each image's first ground-truth box, one per score."""
    dets = [{"image_id": d["image_id"], "category_id": 1, "bbox": d["annotations"][0]["bbox"],
             "score": s} for d in dicts for s in scores]
    with open(path, "w") as f:
        json.dump(dets, f)


def _check_pngs(out_dir, dicts):
    files = sorted(os.listdir(out_dir))
    assert files == sorted(os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png"
                           for d in dicts)
    for d in dicts:
        name = os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png"
        drawn = np.asarray(Image.open(os.path.join(out_dir, name)).convert("RGB"))
        raw = np.asarray(Image.open(d["file_name"]).convert("RGB"))
        assert drawn.shape == (raw.shape[0], 2 * raw.shape[1], 3)  # predictions | truth
        assert (drawn[:, : raw.shape[1]] != raw).any()  # a box is drawn on the left half


def test_visualize_json_writes_one_png_per_image_with_detections(tmp_path, capsys):
    dicts = DatasetCatalog.get("fna_trees_val")[:2]
    res = tmp_path / "coco_instances_results.json"
    _results(res, dicts)
    out = tmp_path / "vis"
    assert main(["visualize-json", "--input", str(res), "--output", str(out), "--dataset",
                 "fna_trees_val", "--conf-threshold", "0.5"]) == 0
    _check_pngs(out, dicts)
    assert "2 image(s) written" in capsys.readouterr().out


def test_visualize_json_on_a_dataset_registered_by_import(tmp_path):
    demo = ensure_demo_data("fna_trees_val")
    module = tmp_path / "tools_datasets.py"
    module.write_text(
        "from detectron2.data.datasets import register_coco_instances\n"
        f"register_coco_instances('tools_trees_val', {{}}, "
        f"{os.path.join(demo, 'annotations', 'instances_val.json')!r}, "
        f"{os.path.join(demo, 'images')!r})\n")
    assert "tools_trees_val" not in DatasetCatalog.list()
    dicts = DatasetCatalog.get("fna_trees_val")[1:2]
    res = tmp_path / "results.json"
    _results(res, dicts)
    out = tmp_path / "vis"
    assert main(["visualize-json", "--import", str(module), "--input", str(res), "--output",
                 str(out), "--dataset", "tools_trees_val"]) == 0
    _check_pngs(out, dicts)


def test_visualize_json_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "not_results.json"
    bad.write_text(json.dumps({"bbox": {}}))
    assert main(["visualize-json", "--input", str(bad), "--output", str(tmp_path / "o"),
                 "--dataset", "fna_trees_val"]) == 2
    line = _one_error(capsys.readouterr().err)
    assert str(bad) in line and "not COCO instance results" in line
    assert main(["visualize-json", "--input", str(bad), "--output", str(tmp_path / "o"),
                 "--dataset", "my_unregistered_val"]) == 2
    line = _one_error(capsys.readouterr().err)
    assert "'my_unregistered_val'" in line and "--import" in line
    assert not (tmp_path / "o").exists()


def test_export_is_fna_d2_export_after_the_imports(tmp_path, capsys):
    missing = tmp_path / "nowhere.py"
    assert main(["export", "--import", str(missing), "--config-file", BASELINE]) == 2
    assert str(missing) in _one_error(capsys.readouterr().err)
    module = tmp_path / "export_marker.py"
    module.write_text("import builtins\nbuiltins.fna_d2_export_marker = True\n")
    weights = tmp_path / "no_such_model.pth"
    rc = main(["export", "--import", str(module), "--config-file", BASELINE, "--format",
               "torchscript", "--output", str(tmp_path / "exp"), *SMALL, "MODEL.WEIGHTS",
               str(weights)])
    assert rc == 2 and builtins.fna_d2_export_marker is True
    line = _one_error(capsys.readouterr().err)
    assert line.startswith("fna_d2.export: error:") and str(weights) in line
