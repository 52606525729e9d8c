"""The custom-dataset recipe of docs/tools.md, end to end: a module of the user's registers a
COCO-format dataset (a few tiles of the tree demo, copied out under new names) and
``train_net.py --import`` / ``python -m fna_d2.pipeline --import`` train and evaluate on it,
in spawned workers too; without ``--import`` the run stops at the dataset error; a module that
cannot be imported is named on one line. About a minute on 2 CPU cores (marked ``slow``)."""
from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys

import pytest
from detectron2.data import DatasetCatalog

import fna_d2  # noqa: F401  (registers the demo datasets)
from fna_d2.data.demo import ensure_demo_data
from fna_d2.errors import UserModuleError
from fna_d2.pipeline import Pipeline, main as pipeline_main
from fna_d2.user_imports import import_user_modules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT = os.path.join(ROOT, "configs", "instant_test")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: the user's module, as docs/tools.md writes it
MODULE = '''\
import os

from detectron2.data.datasets import register_coco_instances

HERE = os.path.dirname(os.path.abspath(__file__))
for split in ("train", "val"):
    register_coco_instances(f"my_trees_{split}", {}, os.path.join(HERE, f"{split}.json"),
                            os.path.join(HERE, "images"))
'''

#: a small, fast model: the instant test's seed baseline at 64 px, 1 head conv, no seed weights
SMALL_MODEL = ["MODEL.FNA.SEED_WEIGHTS", "", "MODEL.RETINANET.NUM_CONVS", "1",
               "MODEL.FPN.OUT_CHANNELS", "32", "INPUT.MIN_SIZE_TRAIN", "(64,)",
               "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64",
               "INPUT.MAX_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2", "MODEL.DEVICE", "cpu"]
SMALL = SMALL_MODEL + ["SOLVER.MAX_ITER", "2"]
MINE = ["DATASETS.TRAIN", "('my_trees_train',)", "DATASETS.TEST", "('my_trees_val',)"]


def _subset(src_json: str, n: int, image_dir: str, out_json: str) -> int:
    """The first ``n`` images of a COCO file (and their boxes), images copied to
    ``image_dir``; returns the number of boxes."""
    with open(src_json) as f:
        data = json.load(f)
    images = data["images"][:n]
    ids = {im["id"] for im in images}
    anns = [a for a in data["annotations"] if a["image_id"] in ids]
    src_images = os.path.join(os.path.dirname(os.path.dirname(src_json)), "images")
    for im in images:
        shutil.copy(os.path.join(src_images, im["file_name"]), image_dir)
    with open(out_json, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": data["categories"]}, f)
    return len(anns)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """A folder holding the user's data (4 train, 2 val tiles) and ``my_datasets.py``."""
    d = tmp_path_factory.mktemp("user")
    demo = ensure_demo_data("fna_trees_train")
    (d / "images").mkdir()
    for split, n in (("train", 4), ("val", 2)):
        assert _subset(os.path.join(demo, "annotations", f"instances_{split}.json"), n,
                       str(d / "images"), str(d / f"{split}.json")) > 0
    (d / "my_datasets.py").write_text(MODULE)
    return d


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1")


def _train_net(cwd, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train_net.py"), *args],
                          capture_output=True, text=True, cwd=str(cwd), env=_env(), timeout=800)


def _error_lines(text: str, prefix: str) -> list:
    return [line for line in text.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("num_gpus", [1, 2])
def test_train_net_trains_and_evaluates_a_dataset_of_an_imported_module(user_dir, num_gpus):
    out = user_dir / f"out{num_gpus}"
    proc = _train_net(user_dir, "--import", "my_datasets.py", "--num-gpus", str(num_gpus),
                      "--config-file", os.path.join(INSTANT, "trees_baseline.yaml"),
                      *SMALL, *MINE, "OUTPUT_DIR", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (out / "model_final.pth").is_file()
    with open(out / "inference" / "my_trees_val" / "coco_instances_results.json") as f:
        results = json.load(f)
    with open(user_dir / "val.json") as f:
        val_ids = {im["id"] for im in json.load(f)["images"]}
    assert results and {r["image_id"] for r in results} <= val_ids
    with open(out / "metrics.json") as f:
        evals = [m for m in map(json.loads, f) if "bbox/AP" in m]
    assert len(evals) == 1 and 0.0 <= evals[0]["bbox/AP"] <= 100.0
    with open(out / "log.txt") as f:
        assert "Evaluation results for my_trees_val" in f.read()


def test_train_net_without_the_import_stops_at_the_dataset_error(user_dir):
    proc = _train_net(user_dir, "--config-file", os.path.join(INSTANT, "trees_baseline.yaml"),
                      *SMALL, *MINE, "OUTPUT_DIR", str(user_dir / "no_import"))
    assert proc.returncode == 2
    errors = _error_lines(proc.stderr, "train_net.py: error:")
    assert len(errors) == 1 and "'my_trees_train' is not registered" in errors[0], proc.stderr
    assert "--import" in errors[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("spec,words", [
    ("missing_module_xyz", ["--import missing_module_xyz", "no module named"]),
    ("nowhere/my_datasets.py", ["nowhere/my_datasets.py", "file not found"]),
    ("broken.py", ["broken.py", "ZeroDivisionError", "broken.py:2"]),
])
def test_a_module_that_cannot_be_imported_is_named_on_one_line(user_dir, spec, words):
    (user_dir / "broken.py").write_text("x = 1\ny = x / 0\n")
    proc = _train_net(user_dir, "--import", spec, "--config-file",
                      os.path.join(INSTANT, "trees_baseline.yaml"), *SMALL,
                      "OUTPUT_DIR", str(user_dir / "bad"))
    assert proc.returncode == 2
    errors = _error_lines(proc.stderr, "train_net.py: error:")
    assert len(errors) == 1 and all(w in errors[0] for w in words), proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_file_is_imported_once_per_process(tmp_path):
    counter = tmp_path / "count_me.py"
    counter.write_text("import builtins\n"
                       "builtins.fna_d2_count_me = getattr(builtins, 'fna_d2_count_me', 0) + 1\n")
    first = import_user_modules([str(counter)])
    again = import_user_modules([str(counter)])
    assert first[0] is again[0]
    assert builtins.fna_d2_count_me == 1
    with pytest.raises(UserModuleError, match="no module named 'no_such_pkg_q'"):
        import_user_modules(["no_such_pkg_q.sub"])


def test_pipeline_imports_in_its_stage_workers_and_records_the_imports(user_dir, tmp_path):
    """The instant pipeline's search stage on the user's dataset, in 2 spawned worker
    processes: the import happens there too; the manifest and re-run hints name it."""
    module = str(user_dir / "my_datasets.py")
    out = tmp_path / "pipe"
    opts = SMALL_MODEL + MINE  # the instant search's own schedule
    pipe = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=str(out),
                    num_gpus=2, opts=opts, imports=[module])
    assert "my_trees_train" in DatasetCatalog.list()
    pipe.run(["search"])
    with open(out / "search" / "stage.json") as f:
        man = json.load(f)
    assert man["status"] == "done" and man["imports"] == [module]
    assert f"--import {module}" in pipe.rerun_command("derive")


def test_pipeline_cli_imports_and_names_a_module_it_cannot_import(tmp_path, capsys):
    cfg = os.path.join(INSTANT, "trees_pipeline.yaml")
    missing = tmp_path / "nowhere.py"
    assert pipeline_main(["--import", str(missing), "--config-file", cfg, "--output-dir",
                          str(tmp_path / "p"), "--status"]) == 2
    errors = _error_lines(capsys.readouterr().err, "fna_d2.pipeline: error:")
    assert len(errors) == 1 and f"--import {missing}: file not found" in errors[0]
    marker = tmp_path / "pipeline_marker.py"
    marker.write_text("import builtins\nbuiltins.fna_d2_pipeline_marker = True\n")
    assert pipeline_main(["--import", str(marker), "--config-file", cfg, "--output-dir",
                          str(tmp_path / "p"), "--status"]) == 0
    assert builtins.fna_d2_pipeline_marker is True
