"""The search's recipe switches that let a run follow the FNA release (issue: the paper as it was
run): which halves are augmented, updates of ops off the sampled path, clipping of the alphas'
gradients; the COCO/Cityscapes search configs use the release's settings."""
import os

import pytest
import torch
from detectron2.data import transforms as T
from detectron2.utils.events import EventStorage

from fna_d2.config import get_fna_cfg
from fna_d2.engine.launch import build_trainer
from fna_d2.errors import ConfigError

from _search_cfg import REPO, search_cfg


def _flips(stream) -> bool:
    """Whether a search stream's mapper can flip (its augmentations include RandomFlip)."""
    augs = stream.mapper.augmentations.augs
    return any(isinstance(a, T.RandomFlip) for a in augs)


@pytest.mark.parametrize("weight_augment", [True, False])
def test_weight_half_is_augmented_only_when_asked(tmp_path, weight_augment):
    trainer = build_trainer(search_cfg(tmp_path, **{
        "MODEL.FNA.SEARCH.WEIGHT_AUGMENT": weight_augment}))
    runner = trainer.runner
    assert _flips(runner.weight_stream) is weight_augment
    assert _flips(runner.arch_stream)  # ARCH_AUGMENT keeps its default


def _op_params(trainer, layer: int, op: str):
    m = trainer.net.mixed_ops()[layer]
    return [p.detach().clone() for p in m.ops[op].parameters()]


@pytest.mark.parametrize("update_unsampled", [False, True])
def test_ops_off_the_path_get_momentum_and_decay_only_when_asked(tmp_path, update_unsampled):
    """Two weight steps: layer 0 takes op A, then op B. In the second step A is off the path;
    with zeroed gradients (the release) SGD's momentum and weight decay still move it."""
    trainer = build_trainer(search_cfg(tmp_path, **{
        "MODEL.FNA.SEARCH.UPDATE_UNSAMPLED_OPS": update_unsampled,
        "SOLVER.WEIGHT_DECAY": 1e-2, "SOLVER.MOMENTUM": 0.9}))
    runner, n = trainer.runner, trainer.net.space.num_searchable
    names = trainer.net.mixed_ops()[0].names
    a, b = [i for i, name in enumerate(names) if name != "skip"][:2]
    paths = iter([[a] * n, [b] * n])
    runner.sample_path = lambda mode: next(paths)  # the steps' paths, chosen by the test
    with EventStorage(0):
        runner.weight_step("softmax")
        before = _op_params(trainer, 0, names[a])
        runner.weight_step("softmax")
    after = _op_params(trainer, 0, names[a])
    moved = any(not torch.equal(x, y) for x, y in zip(before, after))
    assert moved is update_unsampled


def test_alpha_gradients_are_clipped_to_the_global_norm(tmp_path):
    """SOLVER.ARCH.CLIP_VALUE: the arch optimizer's step sees alpha gradients whose global L2
    norm is at most the value (and unchanged without it)."""
    seen = {}

    def norm_at_step(opt):
        step = opt.step

        def wrapped(*args, **kwargs):
            out = step(*args, **kwargs)  # the clip runs inside step, before Adam's update
            seen["norm"] = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for g in opt.param_groups
                             for p in g["params"]])).item()
            return out
        opt.step = wrapped

    norms = {}
    for clip in (0.0, 1e-4):
        trainer = build_trainer(search_cfg(tmp_path / str(clip), **{
            "MODEL.FNA.SEARCH.WARMUP_ITERS": 0, "SOLVER.ARCH.CLIP_VALUE": clip}))
        norm_at_step(trainer.runner.arch_optimizer)
        with EventStorage(0):
            trainer.runner.arch_step()
        norms[clip] = seen["norm"]
    assert norms[0.0] > 1e-3  # unclipped: the real gradient norm, well above the limit
    assert norms[1e-4] == pytest.approx(1e-4, rel=1e-3)


def test_negative_alpha_clip_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="SOLVER.ARCH.CLIP_VALUE"):
        build_trainer(search_cfg(tmp_path, **{"SOLVER.ARCH.CLIP_VALUE": -1.0}))


@pytest.mark.parametrize("name", ["fna_retinanet_search.yaml", "fna_deeplabv3_search.yaml"])
def test_paper_search_configs_run_as_the_release(name):
    cfg = get_fna_cfg(os.path.join(REPO, "configs", name))
    s = cfg.MODEL.FNA.SEARCH
    assert (s.ARCH_AUGMENT, s.WEIGHT_AUGMENT, s.UPDATE_UNSAMPLED_OPS) == (True, False, True)
    assert cfg.SOLVER.ARCH.CLIP_VALUE == 35.0
    demo = get_fna_cfg(os.path.join(REPO, "configs", "demo", "trees_search.yaml"))
    d = demo.MODEL.FNA.SEARCH  # the demos keep the settings their numbers were measured with
    assert (d.WEIGHT_AUGMENT, d.UPDATE_UNSAMPLED_OPS, demo.SOLVER.ARCH.CLIP_VALUE) == \
        (True, False, 0.0)


@pytest.mark.parametrize("relu", [True, False])
def test_p7_follows_p6_with_or_without_relu(relu):
    """MODEL.FNA.FPN_P7_RELU: detectron2's P7 = conv(relu(P6)); the release's P7 = conv(P6)."""
    from fna_d2.modeling import build_fna_retinanet_fpn_backbone
    from detectron2.layers import ShapeSpec

    cfg = search_cfg("unused", **{"MODEL.FNA.FPN_P7_RELU": relu, "MODEL.FNA.NETWORK": "seed"})
    fpn = build_fna_retinanet_fpn_backbone(cfg, ShapeSpec(channels=3))
    torch.manual_seed(0)
    c5 = torch.randn(1, fpn.top_block.p6.in_channels, 6, 6)
    p6, p7 = fpn.top_block(c5)
    assert (p6 < 0).any()  # the ReLU would change P7
    want = fpn.top_block.p7(torch.relu(p6) if relu else p6)
    assert torch.allclose(p7, want)
    assert not torch.allclose(p7, fpn.top_block.p7(p6 if relu else torch.relu(p6)))


def test_coco_retinanet_configs_drop_the_relu_before_p7_and_the_demo_keeps_it():
    for name in ("fna_retinanet_search.yaml", "fna_retinanet_adapt.yaml",
                 "mobilenetv2_retinanet.yaml"):
        assert get_fna_cfg(os.path.join(REPO, "configs", name)).MODEL.FNA.FPN_P7_RELU is False
    demo = get_fna_cfg(os.path.join(REPO, "configs", "demo", "trees_adapt.yaml"))
    assert demo.MODEL.FNA.FPN_P7_RELU is True
