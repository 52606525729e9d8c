"""FNATrainer: dataset checks, evaluator choice, the segmentation mapper and scheduler, a short
train + evaluate_only round trip, BN recalibration after remapping."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import detectron2.data.transforms as T
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator, SemSegEvaluator
from detectron2.projects.deeplab.lr_scheduler import WarmupPolyLR

import fna_d2  # noqa: F401  (registers backbones, heads, demo datasets)
from fna_d2.config import get_fna_cfg
from fna_d2.engine import FNATrainer, build_trainer, evaluate_only
from fna_d2.engine.data import load_sem_seg_gt, train_augmentations
from fna_d2.errors import DatasetNotRegisteredError

from _search_cfg import REPO, set_options


#: one torch thread for the whole module (see conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def trees_cfg(out, **overrides):
    """The trees demo's seed baseline shrunk to 64 px, 2 iterations, 1 head conv."""
    cfg = get_fna_cfg(os.path.join(REPO, "configs", "demo", "Base-trees.yaml"))
    cfg.MODEL.FNA.NETWORK = "derived"
    cfg.MODEL.FNA.SEED_WEIGHTS = ""
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 64
    cfg.SOLVER.MAX_ITER = 2
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.OUTPUT_DIR = str(out)
    return set_options(cfg, overrides)


def nuclei_cfg(out):
    cfg = get_fna_cfg(os.path.join(REPO, "configs", "demo", "Base-nuclei.yaml"))
    cfg.MODEL.FNA.NETWORK = "derived"
    cfg.MODEL.FNA.SEED_WEIGHTS = ""
    cfg.INPUT.MIN_SIZE_TRAIN = (64, 96)
    cfg.INPUT.CROP.SIZE = (48, 48)
    cfg.SOLVER.MAX_ITER = 10
    cfg.OUTPUT_DIR = str(out)
    return cfg


def test_unregistered_dataset_names_registered_ones_and_how_to_register(tmp_path):
    cfg = trees_cfg(tmp_path, **{"DATASETS.TRAIN": ("fna_treez_train",)})
    with pytest.raises(DatasetNotRegisteredError) as e:
        FNATrainer(cfg)
    msg = str(e.value)
    assert "DATASETS.TRAIN" in msg and "'fna_treez_train'" in msg
    assert "'fna_trees_train'" in msg and "register_coco_instances" in msg
    cfg = trees_cfg(tmp_path, **{"DATASETS.TEST": ("nope_val",)})
    with pytest.raises(DatasetNotRegisteredError, match="DATASETS.TEST: dataset 'nope_val'"):
        evaluate_only(cfg)


def test_evaluator_follows_evaluator_type(tmp_path):
    cfg = trees_cfg(tmp_path)
    assert isinstance(FNATrainer.build_evaluator(cfg, "fna_trees_val"), COCOEvaluator)
    sem = FNATrainer.build_evaluator(cfg, "fna_nuclei_val")
    assert isinstance(sem, SemSegEvaluator) and sem.sem_seg_loading_fn is load_sem_seg_gt
    name = "fna_test_unknown_type"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(evaluator_type="lvis")
    try:
        with pytest.raises(NotImplementedError, match="evaluator_type='lvis'"):
            FNATrainer.build_evaluator(cfg, name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_sem_seg_label_loader_returns_integer_arrays():
    path = DatasetCatalog.get("fna_nuclei_val")[0]["sem_seg_file_name"]
    label = load_sem_seg_gt(path)
    assert label.ndim == 2 and label.dtype.kind == "i"


def test_segmentation_mapper_crops_and_poly_schedule(tmp_path):
    cfg = nuclei_cfg(tmp_path)
    batch = next(iter(FNATrainer.build_train_loader(cfg)))
    assert len(batch) == cfg.SOLVER.IMS_PER_BATCH
    for d in batch:
        assert tuple(d["image"].shape[1:]) == (48, 48) == tuple(d["sem_seg"].shape)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    assert isinstance(FNATrainer.build_lr_scheduler(cfg, opt), WarmupPolyLR)


def test_train_then_evaluate_only(tmp_path):
    cfg = trees_cfg(tmp_path)
    trainer = build_trainer(cfg)
    assert type(trainer) is FNATrainer
    trainer.resume_or_load(resume=False)
    trainer.train()
    final = tmp_path / "model_final.pth"
    assert final.is_file() and not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    results = evaluate_only(trees_cfg(tmp_path, **{"MODEL.WEIGHTS": str(final)}))
    assert "bbox" in results and "AP" in results["bbox"]


def test_bn_recalibration_after_remapping(tmp_path):
    cfg = trees_cfg(tmp_path, **{"MODEL.FNA.SEED_WEIGHTS": "fna_d2://keras_mobilenetv2",
                                 "MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS": 2})
    trainer = FNATrainer(cfg)
    trainer.resume_or_load(resume=False)
    report = trainer.checkpointer.remap_report
    assert report is not None and report.meta["bn_recalibration"]["iters"] == 2


def test_arch_half_without_augmentation_is_resized_only(tmp_path):
    det = train_augmentations(trees_cfg(tmp_path), augment=False)
    assert [type(a) for a in det] == [T.ResizeShortestEdge]
    assert det[0].short_edge_length == (64, 64)
    seg = train_augmentations(nuclei_cfg(tmp_path), augment=False)
    assert [type(a) for a in seg] == [T.ResizeShortestEdge, T.RandomCrop_CategoryAreaConstraint]
    assert T.RandomFlip in [type(a) for a in train_augmentations(nuclei_cfg(tmp_path))]


def test_train_net_reports_bad_input_on_one_line(tmp_path):
    """train_net.py: an FNAError (here a malformed MODEL.FNA.ARCH file) is one line naming the
    file, exit code 2, no traceback."""
    bad = tmp_path / "bad_arch.json"
    bad.write_text("{not json")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file",
         os.path.join(REPO, "configs", "demo", "trees_adapt.yaml"), "MODEL.FNA.ARCH", str(bad),
         "MODEL.FNA.SEED_WEIGHTS", "", "MODEL.DEVICE", "cpu", "OUTPUT_DIR",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [l for l in proc.stderr.splitlines() if l.startswith("train_net.py: error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "invalid JSON" in errors[0], errors
