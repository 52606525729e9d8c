"""Every YAML under configs/ loads with get_fna_cfg and builds its model on CPU; the paper
configs carry the paper's hyperparameters (FNA spec sections 5-6)."""
import glob
import math
import os

import pytest
import torch
from detectron2.modeling import build_model

import fna_d2  # noqa: F401  (registers backbones, the head, demo datasets)
from fna_d2.config import get_fna_cfg
from fna_d2.modeling import find_supernet
from fna_d2.pipeline import Pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.relpath(p, ROOT)
                 for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
PIPELINES = [c for c in CONFIGS if c.endswith("_pipeline.yaml")]
MODELS = [c for c in CONFIGS if c not in PIPELINES]
#: stands in for a search output that does not exist yet when a config is built in isolation
STAND_IN_ARCH = os.path.join("configs", "archs", "fna_retinanet_coco.json")


def cpu_cfg(path: str, *opts: str):
    """The config with CPU device, BN instead of SyncBN, no weight file, and the published arch
    standing in for a not-yet-written search output."""
    cfg = get_fna_cfg(os.path.join(ROOT, path), list(opts))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""  # never fetch weights (URLs) in tests
    for node, key in ((cfg.MODEL.FNA, "NORM"), (cfg.MODEL.SEM_SEG_HEAD, "NORM"),
                      (cfg.MODEL.FPN, "NORM"), (cfg.MODEL.RESNETS, "NORM")):
        if node[key] == "SyncBN":
            node[key] = "BN"
    arch = cfg.MODEL.FNA.ARCH
    if arch and not os.path.isfile(os.path.join(ROOT, arch)) and arch.startswith("output"):
        cfg.MODEL.FNA.ARCH = os.path.join(ROOT, STAND_IN_ARCH)
    elif arch and not os.path.isabs(arch):
        cfg.MODEL.FNA.ARCH = os.path.join(ROOT, arch)
    return cfg


def test_configs_found():
    assert len(MODELS) >= 20 and len(PIPELINES) >= 4


@pytest.mark.parametrize("path", MODELS)
def test_config_builds_model(path):
    cfg = cpu_cfg(path)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 1e6
    if cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor":
        assert cfg.MODEL.SEM_SEG_HEAD.NAME == "FNADeepLabV3Head"
        assert model.backbone.output_shape()["c5"].stride == cfg.MODEL.FNA.OUTPUT_STRIDE
    if cfg.MODEL.FNA.NETWORK == "super":
        net = find_supernet(model)
        expected = {"detection": 21, "segmentation": 25}[cfg.MODEL.FNA.SEARCH_SPACE]
        assert net is not None and len(net.arch_parameters()) == expected


@pytest.mark.parametrize("path", PIPELINES)
def test_pipeline_config_points_at_stage_configs(path):
    pipe = Pipeline(os.path.join(ROOT, path))
    assert pipe.stage_cfg("search").MODEL.FNA.NETWORK == "super"
    assert pipe.stage_cfg("adapt").MODEL.FNA.NETWORK == "derived"
    assert pipe.stage_cfg("adapt").MODEL.FNA.ARCH == pipe.derived_arch_path
    assert pipe.stage_cfg("baseline").MODEL.FNA.ARCH == ""
    # adapt and baseline share the schedule
    a, b = pipe.stage_cfg("adapt").SOLVER, pipe.stage_cfg("baseline").SOLVER
    assert (a.MAX_ITER, a.BASE_LR, a.IMS_PER_BATCH) == (b.MAX_ITER, b.BASE_LR, b.IMS_PER_BATCH)


def _close(iters, epochs_in_iters) -> bool:
    """Iteration counts equal epoch boundaries up to rounding."""
    return len(iters) == len(epochs_in_iters) and all(
        abs(i - e) <= 0.5 for i, e in zip(iters, epochs_in_iters))


def _cfg(name):
    return get_fna_cfg(os.path.join(ROOT, "configs", name))


def test_retinanet_search_hyperparameters():
    c = _cfg("fna_retinanet_search.yaml")
    s = c.SOLVER
    assert (c.MODEL.FNA.NETWORK, c.MODEL.FNA.SEARCH_SPACE) == ("super", "detection")
    assert c.MODEL.FNA.SEED_WEIGHTS == "fna_d2://keras_mobilenetv2"
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.MOMENTUM, s.WEIGHT_DECAY) == (8, 0.02, 0.9, 1e-4)
    assert s.CLIP_GRADIENTS.ENABLED and s.CLIP_GRADIENTS.CLIP_VALUE == 35.0
    assert (s.WARMUP_ITERS, round(s.WARMUP_FACTOR, 4)) == (500, 0.3333)
    per_epoch = 117266 * 0.5 / 8
    assert s.MAX_ITER == round(14 * per_epoch)
    assert _close(s.STEPS, (8 * per_epoch, 11 * per_epoch))
    assert c.MODEL.FNA.SEARCH.WARMUP_ITERS == round(8 * per_epoch)
    assert (s.ARCH.BASE_LR, tuple(s.ARCH.BETAS), s.ARCH.WEIGHT_DECAY) == (3e-4, (0.5, 0.999), 1e-3)
    assert (c.MODEL.FNA.SEARCH.LAMBDA, c.MODEL.FNA.SEARCH.TAU) == (0.02, 10.0)
    assert tuple(c.MODEL.FNA.SEARCH.COST_INPUT_SIZE) == (800, 1088)
    assert s.WEIGHT_DECAY_NORM == s.WEIGHT_DECAY  # the release decays BN parameters too


def test_retinanet_adapt_and_baseline_hyperparameters():
    for name in ("fna_retinanet_adapt.yaml", "mobilenetv2_retinanet.yaml",
                 "fna_retinanet_coco_published.yaml"):
        c = _cfg(name)
        s = c.SOLVER
        assert (s.IMS_PER_BATCH, s.BASE_LR, s.WEIGHT_DECAY) == (32, 0.05, 5e-5)
        per_epoch = 117266 / 32
        assert s.MAX_ITER == round(12 * per_epoch)
        assert _close(s.STEPS, (8 * per_epoch, 11 * per_epoch))
        assert c.MODEL.FNA.NORM == "SyncBN" and c.MODEL.FNA.FREEZE_AT == 0
        assert s.WEIGHT_DECAY_NORM == s.WEIGHT_DECAY  # the release decays BN parameters too
    assert _cfg("mobilenetv2_retinanet.yaml").MODEL.FNA.ARCH == ""
    assert _cfg("fna_retinanet_coco_published.yaml").MODEL.FNA.ARCH == STAND_IN_ARCH


def test_weight_decay_reaches_bn_parameters_in_the_coco_configs():
    """The optimizers the trainers build decay BN weight and bias at WEIGHT_DECAY in the COCO
    configs (as the release did), and not at all in the trees demo."""
    from fna_d2.engine.search import SearchTrainer
    from fna_d2.engine.trainer import FNATrainer
    from fna_d2.modeling.ops import ConvBN

    def bn_decays(optimizer, model):
        bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
              for p in m.parameters()}
        return {g["weight_decay"] for g in optimizer.param_groups
                for p in g["params"] if id(p) in bn}

    model = torch.nn.Sequential(ConvBN(3, 8, 3))
    adapt = _cfg("fna_retinanet_adapt.yaml")
    assert bn_decays(FNATrainer.build_optimizer(adapt, model), model) == {5e-5}
    demo = _cfg("demo/trees_adapt.yaml")
    assert bn_decays(FNATrainer.build_optimizer(demo, model), model) == {0.0}
    search = _cfg("fna_retinanet_search.yaml")
    supernet = build_model(cpu_cfg("configs/instant_test/trees_search.yaml"))
    assert bn_decays(SearchTrainer.build_optimizer(search, supernet), supernet) == {1e-4}


def test_deeplab_hyperparameters():
    for name in ("fna_deeplabv3_adapt.yaml", "mobilenetv2_deeplabv3.yaml"):
        c = _cfg(name)
        s = c.SOLVER
        assert (s.IMS_PER_BATCH, s.MAX_ITER, s.BASE_LR, s.WEIGHT_DECAY) == (16, 100000, 0.01, 5e-4)
        assert s.LR_SCHEDULER_NAME == "WarmupPolyLR" and s.POLY_LR_POWER == 0.9
        assert s.WARMUP_ITERS == 5000 and math.isclose(s.BASE_LR * s.WARMUP_FACTOR, 1e-4)
        assert tuple(c.INPUT.CROP.SIZE) == (769, 769)
        assert tuple(c.INPUT.MIN_SIZE_TRAIN) == (768, 2048)  # 0.75-2.0 x 1024
        assert c.MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS == 2000
        assert c.MODEL.FNA.OUTPUT_STRIDE == 16 and c.MODEL.FNA.NORM == "SyncBN"
        assert c.DATASETS.TRAIN == ("cityscapes_fine_sem_seg_train",)
        assert c.DATASETS.TEST == ("cityscapes_fine_sem_seg_val",)


def test_deeplab_search_is_the_papers_one_gpu_recipe():
    """Paper (segmentation search, 1 GPU): 16 crops of 321 from 512x1024 frames, 80 epochs of
    the weight part, alpha from epoch 30; SGD 5 epochs linear 1e-4 -> 0.02 then cosine to 1e-3,
    momentum 0.9, wd 5e-4; Adam 1e-3 with wd 4e-5."""
    c = _cfg("fna_deeplabv3_search.yaml")
    f, s = c.MODEL.FNA.SEARCH, c.SOLVER
    assert (f.LAMBDA, f.TAU, f.COST_SCALE, f.ARCH_SPLIT) == (0.009, 45.0, 10.0, 0.2)
    assert (c.SOLVER.ARCH.BASE_LR, c.SOLVER.ARCH.WEIGHT_DECAY) == (1e-3, 4e-5)
    assert tuple(c.INPUT.CROP.SIZE) == (321, 321)
    assert (tuple(c.INPUT.MIN_SIZE_TRAIN), c.INPUT.MAX_SIZE_TRAIN) == ((512,), 1024)
    assert s.IMS_PER_BATCH == 16 and c.MODEL.FNA.NORM == c.MODEL.SEM_SEG_HEAD.NORM == "BN"
    per_epoch = 2975 * 0.8 / 16
    assert s.MAX_ITER == round(80 * per_epoch)
    assert _close([f.WARMUP_ITERS, s.WARMUP_ITERS], [30 * per_epoch, 5 * per_epoch])
    assert (s.MOMENTUM, s.WEIGHT_DECAY) == (0.9, 5e-4)
    # the schedule as the trainer builds it: 1e-4 at 0, 0.02 at the end of warm-up, cosine
    # (half of the way down at the middle of the post-warm-up part) to 1e-3 at the end
    from fna_d2.engine.trainer import FNATrainer
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=s.BASE_LR)
    sched = FNATrainer.build_lr_scheduler(c, opt)
    lrs = []
    for _ in range(s.MAX_ITER):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    w = s.WARMUP_ITERS
    assert math.isclose(lrs[0], 1e-4, rel_tol=1e-6)
    assert math.isclose(lrs[w], 0.02, rel_tol=1e-3)
    mid = w + (s.MAX_ITER - w) // 2
    assert math.isclose(lrs[mid], (0.02 + 1e-3) / 2, rel_tol=1e-2)
    assert math.isclose(lrs[-1], 1e-3, rel_tol=1e-2)
    assert all(a <= b + 1e-12 for a, b in zip(lrs[:w], lrs[1:w + 1]))  # warm-up rises
    assert all(a >= b - 1e-12 for a, b in zip(lrs[w:], lrs[w + 1:]))  # cosine falls
    # shortened to a few iterations (all warm-up), the rescaled cosine still builds and steps
    short = _cfg("fna_deeplabv3_search.yaml")
    short.SOLVER.MAX_ITER = 2
    sched = FNATrainer.build_lr_scheduler(short, opt)
    for _ in range(2):
        opt.step()
        sched.step()
    eight = _cfg("fna_deeplabv3_search_8gpu.yaml")
    assert eight.SOLVER.IMS_PER_BATCH == 16 and eight.MODEL.FNA.NORM == "SyncBN"
    assert eight.SOLVER.MAX_ITER == s.MAX_ITER
