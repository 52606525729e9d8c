"""SSDLite (FNASSDLite): anchors against the authors' numbers, hard-negative mining against a
hand-computed case, the seed's 1280 conv remapped into the SSDLite backbone, the super
network's tap layer and temperature, and a training step and an inference on CPU."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import fna_d2  # noqa: F401  (registers the meta-architecture)
from fna_d2.arch import SSDLITE_TAP_OPS, detection_space, ssdlite_space, ssdlite_tap_stage
from fna_d2.checkpoint import remap_into_model
from fna_d2.config import get_fna_cfg
from fna_d2.errors import ConfigError
from fna_d2.modeling import MixedOp, find_supernet
from fna_d2.modeling.ssdlite import (FNASSDLite, SSDLiteDerivedNet, SSDLiteSuperNet,
                                     hard_negative_mask, ssd_losses)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "Base-FNA-SSDLite.yaml")


def _cfg(*opts):
    return get_fna_cfg(BASE, ["MODEL.DEVICE", "cpu", "MODEL.SSDLITE.NUM_CLASSES", "3"]
                       + list(opts))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(_cfg())


# ----------------------------------------------------------------------------------- anchors
def test_anchors_per_level_and_total_at_320(model):
    """The issue's numbers: 4/6/6/6/4/4 anchors per location on 20, 10, 5, 3, 2, 1 maps."""
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 320, 320))
    maps = list(feats.values())
    assert [tuple(f.shape[1:]) for f in maps] == [
        (576, 20, 20), (1280, 10, 10), (512, 5, 5), (256, 3, 3), (256, 2, 2), (128, 1, 1)]
    gen = model.anchor_generator
    assert gen.num_cell_anchors == [4, 6, 6, 6, 4, 4]
    per_level = [len(b) for b in gen(maps)]
    assert per_level == [20 * 20 * 4, 10 * 10 * 6, 5 * 5 * 6, 3 * 3 * 6, 2 * 2 * 4, 1 * 1 * 4]
    assert sum(per_level) == 2424  # 1600 + 600 + 150 + 54 + 16 + 4
    cls, box = model.head(maps)
    assert cls.shape == (1, 2424, 4) and box.shape == (1, 2424, 4)


def test_anchor_boxes_by_hand(model):
    gen = model.anchor_generator
    a = gen.grid_anchors(0, 2, 2)  # level 0: min 30, max 60, stride 16, ratios [2]
    c = 7.5  # (16 - 1) / 2
    s2, r2 = math.sqrt(30 * 60), math.sqrt(2)
    expected_first = [[c - 15, c - 15, c + 15, c + 15],
                      [c - s2 / 2, c - s2 / 2, c + s2 / 2, c + s2 / 2],
                      [c - 15 * r2, c - 15 / r2, c + 15 * r2, c + 15 / r2],   # h / w = 1 / 2
                      [c - 15 / r2, c - 15 * r2, c + 15 / r2, c + 15 * r2]]   # h / w = 2
    assert torch.allclose(a[:4], torch.tensor(expected_first), atol=1e-4)
    # location (0, 1) is the next 4 anchors, shifted by the stride in x
    assert torch.allclose(a[4:8], a[:4] + torch.tensor([16.0, 0, 16.0, 0]))
    # level 3 (stride 107): the third row / column is centred at 2 * 107 + 53
    a3 = gen.grid_anchors(3, 3, 3).view(3, 3, 6, 4)
    centre = (a3[2, 2, 0, :2] + a3[2, 2, 0, 2:]) / 2
    assert torch.allclose(centre, torch.tensor([267.0, 267.0]))


def test_anchor_config_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="ASPECT_RATIOS"):
        build_model(_cfg("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[2]]"))


# ------------------------------------------------------------------------ hard-negative mining
def test_hard_negative_mining_by_hand():
    bg = 2
    ce = torch.tensor([[5.0, 0.1, 0.9, 0.3, 0.7, 0.5],    # 1 positive -> the 3 worst negatives
                       [0.2, 0.8, 0.4, 0.6, 0.1, 0.3],    # no positive -> no negative
                       [1.0, 2.0, 0.5, 0.4, 0.6, 3.0]])   # 2 positives, 3 negatives -> all 3
    labels = torch.tensor([[0, bg, bg, bg, bg, bg],
                           [bg, bg, bg, bg, bg, bg],
                           [1, bg, bg, 0, bg, bg]])
    mask = hard_negative_mask(ce, labels, bg, 3)
    assert mask.tolist() == [[False, False, True, False, True, True],
                             [False] * 6,
                             [False, True, True, False, True, True]]


def test_ssd_loss_by_hand():
    # 2 classes + background; logits chosen so each anchor's cross-entropy is known
    bg = 2
    p = torch.tensor([0.5, 0.25, 0.8, 0.1])  # softmax prob of the true class per anchor

    def logits_for(prob, true):
        # logit 0 for the other two classes, x for the true one: prob = e^x / (e^x + 2)
        row = torch.zeros(3)
        row[true] = math.log(2 * prob / (1 - prob))
        return row

    labels = torch.tensor([[0, bg, bg, bg]])
    logits = torch.stack([logits_for(float(q), int(t)) for q, t in zip(p, labels[0])])[None]
    deltas, targets = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    deltas[0, 0] = torch.tensor([0.5, -2.0, 0.0, 0.0])  # smooth-L1 beta 1: 0.125 + 1.5
    deltas[0, 1] = torch.tensor([9.0, 9.0, 9.0, 9.0])   # a negative: no box loss
    out = ssd_losses(logits, deltas, labels, targets, neg_pos_ratio=2, beta=1.0)
    # negatives' CE: -log .25, -log .8, -log .1; the 2 hardest: anchors 3 and 1
    expected_cls = (-math.log(0.5) - math.log(0.1) - math.log(0.25)) / 1
    assert out["loss_cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    assert out["loss_box_reg"].item() == pytest.approx(0.125 + 1.5, rel=1e-6)


# --------------------------------------------------------------------------------- remapping
def test_remap_copies_the_seeds_1280_conv(tmp_path):
    from torchvision.models import mobilenet_v2

    torch.manual_seed(1)
    seed = mobilenet_v2(weights=None)
    for m in seed.modules():  # non-trivial BN statistics, so a copy is distinguishable
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    path = str(tmp_path / "seed.pth")
    torch.save(seed.state_dict(), path)
    cfg = _cfg("MODEL.FNA.SEED_WEIGHTS", path, "MODEL.FNA.SEED_LAYOUT", "torchvision",
               "MODEL.FNA.BN_EPS", "1e-5")
    torch.manual_seed(0)
    model = build_model(cfg)
    report = remap_into_model(model, cfg)
    net = model.backbone.bottom_up
    assert isinstance(net, SSDLiteDerivedNet)
    sd = seed.state_dict()
    assert torch.equal(net.head.conv.weight, sd["features.18.0.weight"])
    for p in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(net.head.bn, p), sd[f"features.18.1.{p}"])
    # the tap layer (stage 5, layer 0) is the seed's features.14 (the first 96->160 block)
    assert torch.equal(net.stages[5][0].expand.conv.weight, sd["features.14.conv.0.0.weight"])
    unused = set(report.unused)
    assert not any(k.startswith("head.") for k in unused)


# --------------------------------------------------------------------------- super network
def test_ssdlite_space_restricts_the_tap_layer():
    space = ssdlite_space(detection_space())
    s = ssdlite_tap_stage(space)
    assert (space.stages[s].cin, space.stages[s].cout) == (96, 160)
    assert space.stages[s].candidates[0] == SSDLITE_TAP_OPS == ("k3_e6", "k5_e6", "k7_e6")
    assert space.stages[s].candidates[1] == detection_space().stages[s].candidates[1]
    assert space.num_searchable == 21


def test_super_network_tap_is_the_mixed_expansion():
    cfg = _cfg("MODEL.FNA.NETWORK", "super", "MODEL.FNA.SEARCH.TEMPERATURE", "0.9",
               "MODEL.FNA.SEARCH_DEPTHS", "[1, 1, 1, 1, 2, 1]")
    torch.manual_seed(0)
    net = SSDLiteSuperNet(cfg, None)
    layer = net.stages[5][0]
    assert isinstance(layer, MixedOp) and layer.names == SSDLITE_TAP_OPS
    with torch.no_grad():
        layer.alpha.copy_(torch.tensor([0.3, -0.2, 0.9]))
    w = torch.softmax(torch.tensor([0.3, -0.2, 0.9]) / 0.9, 0)
    assert torch.allclose(layer.weights(), w)
    x = torch.randn(2, 96, 8, 8)
    net.eval()
    with torch.no_grad():
        from fna_d2.modeling.ssdlite import tap_forward
        tap, out = tap_forward(layer, x)
        expected = sum(wi * op.expand(x) for wi, op in zip(w, layer.ops.values()))
        assert tap.shape == (2, 576, 8, 8) and torch.allclose(tap, expected, atol=1e-5)
        assert torch.allclose(out, layer(x), atol=1e-5)
        net.set_path([0] * len(net.mixed_ops()))
        tap, _ = tap_forward(layer, x)
        assert torch.allclose(tap, layer.ops["k3_e6"].expand(x))


def test_seed_network_is_refused():
    with pytest.raises(ConfigError, match="MODEL.FNA.NETWORK"):
        build_model(_cfg("MODEL.FNA.NETWORK", "seed"))


# ------------------------------------------------------------------------ train and inference
def _batch():
    inst = Instances((60, 80))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 78.0, 58.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    empty = Instances((64, 64), gt_boxes=Boxes(torch.zeros(0, 4)),
                      gt_classes=torch.zeros(0, dtype=torch.long))
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randint(0, 256, (3, 60, 80), generator=g).float(), "instances": inst,
             "height": 120, "width": 160},
            {"image": torch.randint(0, 256, (3, 64, 64), generator=g).float(),
             "instances": empty}]


def test_training_step_and_inference():
    cfg = _cfg("MODEL.SSDLITE.INPUT_SIZE", "(96, 96)", "MODEL.SSDLITE.SCORE_THRESH_TEST", "0.0",
               "TEST.DETECTIONS_PER_IMAGE", "50")
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, FNASSDLite)
    model.train()
    losses = model(_batch())
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    for name in ("backbone.bottom_up.stem.conv.weight", "backbone.bottom_up.head.conv.weight",
                 "backbone.extras.0.project.conv.weight", "head.cls_heads.1.pw.conv.weight",
                 "head.box_heads.0.dw.conv.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        out = model(_batch())
    r = out[0]["instances"]
    assert isinstance(r, Instances) and r.image_size == (120, 160)  # scaled to height/width
    assert 0 < len(r) <= 50 and r.pred_classes.max() < 3
    b = r.pred_boxes.tensor
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 160).all() and (b[:, 3] <= 120).all()
    assert out[1]["instances"].image_size == (64, 64)


def test_matching_assigns_a_box_equal_to_an_anchor(model):
    anchors = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0],
                                  [21.0, 21.0, 41.0, 41.0], [60.0, 60.0, 70.0, 70.0]]))
    gt = Boxes(torch.tensor([[20.0, 20.0, 40.0, 40.0]]))
    labels, deltas = model.label_anchors(anchors, [(gt, torch.tensor([1]))])
    # IoU with anchor 2: 361 / 439 = 0.82 >= 0.5: positive too; anchors 0 and 3 background
    assert labels.tolist() == [[3, 1, 1, 3]]
    assert torch.allclose(deltas[0, 1], torch.zeros(4), atol=1e-6)
