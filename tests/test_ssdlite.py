"""SSDLite (FNASSDLite): anchors against the authors' numbers, hard-negative mining against a
hand-computed case, the seed's 1280 conv remapped into the SSDLite backbone, the super
network's tap layer and temperature, and a training step and an inference on CPU."""
import math
import os

import numpy as np
import pytest
import torch

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import fna_d2  # noqa: F401  (registers the meta-architecture)
from fna_d2.arch import SSDLITE_TAP_OPS, detection_space, ssdlite_space, ssdlite_tap_stage
from fna_d2.checkpoint import remap_into_model
from fna_d2.config import get_fna_cfg
from fna_d2.errors import ConfigError
from fna_d2.modeling import MixedOp, find_supernet
from fna_d2.modeling.ssdlite import (FNASSDLite, SSDLiteDerivedNet, SSDLiteSuperNet,
                                     hard_negative_mask, ssd_anchor_strides, ssd_losses)

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


def test_anchor_strides_follow_the_input_size():
    """Empty ANCHOR_STRIDES: input size / map size (20, 10, 5, 3, 2, 1 maps at 320; 40, 20, 10,
    5, 3, 2 at 640); the authors' 320 strides are accepted at 320 and refused at 640, where
    level 3's five centres 107 px apart would cover 535 of 640 px."""
    nominal = [16, 32, 64, 128, 256, 512]
    assert ssd_anchor_strides([], (320, 320), nominal) == pytest.approx(
        [16, 32, 64, 320 / 3, 160, 320])
    assert ssd_anchor_strides([], (640, 640), nominal) == pytest.approx(
        [16, 32, 64, 128, 640 / 3, 320])
    authors = [16, 32, 64, 107, 160, 320]
    assert ssd_anchor_strides(authors, (320, 320), nominal) == authors
    with pytest.raises(ConfigError, match=r"ANCHOR_STRIDES\[3\] = 107.*640x640.*535"):
        ssd_anchor_strides(authors, (640, 640), nominal)
    with pytest.raises(ConfigError, match="square"):
        ssd_anchor_strides([], (320, 640), nominal)
    # given strides are checked along both sides: the 320 strides do not span a 640 width
    with pytest.raises(ConfigError, match="640-px side"):
        ssd_anchor_strides(authors, (320, 640), nominal)
    # the model builds with them, and its backbone's maps are the sizes the strides assume:
    # every level's centres span the 640 input (level 3: 5 locations 128 px apart)
    model = build_model(_cfg("MODEL.SSDLITE.INPUT_SIZE", "(640, 640)",
                             "MODEL.SSDLITE.ANCHOR_STRIDES", "[]")).eval()
    gen = model.anchor_generator
    assert gen.strides == pytest.approx([16, 32, 64, 128, 640 / 3, 320])
    with torch.no_grad():
        maps = model.backbone(torch.zeros(1, 3, 640, 640))
    sizes = [f.shape[-1] for f in maps.values()]
    assert sizes == [40, 20, 10, 5, 3, 2]
    assert [s * m for s, m in zip(gen.strides, sizes)] == pytest.approx([640] * 6)
    with pytest.raises(ConfigError, match="ANCHOR_STRIDES"):
        build_model(_cfg("MODEL.SSDLITE.INPUT_SIZE", "(640, 640)"))


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
    cfg = _cfg("MODEL.SSDLITE.INPUT_SIZE", "(96, 96)", "MODEL.SSDLITE.ANCHOR_STRIDES", "[]",
               "MODEL.SSDLITE.SCORE_THRESH_TEST", "0.0",
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


# ---------------------------------------------------------------------------- augmentations
def test_crop_drops_boxes_whose_centre_leaves_the_image(tmp_path):
    import detectron2.data.transforms as T
    from PIL import Image
    from detectron2.structures import BoxMode
    from fna_d2.modeling.ssdlite import SSDDatasetMapper

    path = str(tmp_path / "img.png")
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(path)
    mapper = SSDDatasetMapper(_cfg(), is_train=True,
                              augmentations=[T.CropTransform(18, 18, 60, 60)])
    d = mapper({"file_name": path, "height": 100, "width": 100, "image_id": 0, "annotations": [
        {"bbox": [0, 0, 30, 30], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},   # c 15,15
        {"bbox": [50, 50, 20, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1},  # c 60,60
        {"bbox": [10, 60, 30, 90], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}]})  # c 20,75
    inst = d["instances"]
    assert tuple(d["image"].shape) == (3, 60, 60)
    # box 0: centre (15, 15) outside [18, 78): dropped although it overlaps the crop;
    # box 1 shifted by (-18, -18); box 2: centre (20, 75) inside, clipped to the crop
    assert inst.gt_classes.tolist() == [1, 0]
    assert inst.gt_boxes.tensor.tolist() == [[32.0, 32.0, 52.0, 52.0], [0.0, 42.0, 12.0, 60.0]]


def test_min_iou_crop_respects_its_iou():
    from fna_d2.modeling.ssdlite import MinIoURandomCrop

    two = np.array([[40.0, 40.0, 120.0, 100.0], [150.0, 20.0, 190.0, 60.0]])
    boxes = two[:1]
    aug = MinIoURandomCrop()
    np.random.seed(0)
    crops = 0
    for _ in range(40):
        t = aug.sample_crop(120, 200, boxes, 0.5)
        if t is None:
            continue
        crops += 1
        patch = np.array([t.x0, t.y0, t.x0 + t.w, t.y0 + t.h], float)
        assert t.w >= 0.3 * 200 - 1 and t.h >= 0.3 * 120 - 1 and 0.5 <= t.h / t.w <= 2.05
        lt, rb = np.maximum(patch[:2], boxes[:, :2]), np.minimum(patch[2:], boxes[:, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), 1)
        union = np.prod(patch[2:] - patch[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], 1) - inter
        assert (inter / union).min() >= 0.5 - 1e-9
        c = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert ((c > patch[:2]) & (c < patch[2:])).all(1).any()
    # the IoU is with every box: no crop has IoU 0.5 with two boxes this far apart
    assert aug.sample_crop(120, 200, two, 0.5) is None
    assert crops > 5


def test_expand_and_photometric_distortion():
    from fna_d2.modeling.ssdlite import Expand, ExpandTransform, PhotometricDistortion

    img = np.full((4, 6, 3), 10, np.uint8)
    t = ExpandTransform(2, 1, 8, 12, [1.0, 2.0, 3.0])
    out = t.apply_image(img)
    assert out.shape == (8, 12, 3) and (out[1:5, 2:8] == 10).all()
    assert out[0, 0].tolist() == [1.0, 2.0, 3.0] and out[7, 11].tolist() == [1.0, 2.0, 3.0]
    assert t.apply_box(np.array([[0.0, 0.0, 6.0, 4.0]])).tolist() == [[2.0, 1.0, 8.0, 5.0]]
    np.random.seed(0)
    sizes = {Expand([0, 0, 0]).get_transform(img).__class__.__name__ for _ in range(20)}
    assert sizes == {"NoOpTransform", "ExpandTransform"}
    # a grey image keeps R = G = B (saturation and hue act on colour only): (x + b) * c
    grey = np.full((5, 5, 3), 128, np.uint8)
    aug = PhotometricDistortion()
    for _ in range(20):
        y = aug.get_transform(grey).apply_image(grey)
        assert y.dtype == np.float32 and y.shape == grey.shape
        assert np.allclose(y, y[0, 0, 0], atol=1e-2)
        assert (128 - 32) * 0.5 - 1e-3 <= y[0, 0, 0] <= (128 + 32) * 1.5 + 1e-3


def test_train_mapper_makes_the_input_size(tmp_path):
    from PIL import Image
    from detectron2.structures import BoxMode
    from fna_d2.modeling.ssdlite import ssdlite_train_mapper

    path = str(tmp_path / "img.png")
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (90, 150, 3), np.uint8)).save(path)
    mapper = ssdlite_train_mapper(_cfg())
    np.random.seed(0)
    for _ in range(5):
        d = mapper({"file_name": path, "height": 90, "width": 150, "image_id": 0,
                    "annotations": [{"bbox": [20, 20, 80, 70], "bbox_mode": BoxMode.XYXY_ABS,
                                     "category_id": 0}]})
        assert tuple(d["image"].shape) == (3, 320, 320)
        b = d["instances"].gt_boxes.tensor
        assert len(b) <= 1 and ((b >= 0) & (b <= 320)).all()
    from fna_d2.modeling.ssdlite import ssdlite_test_mapper

    d = ssdlite_test_mapper(_cfg())({"file_name": path, "height": 90, "width": 150,
                                     "image_id": 0})
    assert tuple(d["image"].shape) == (3, 320, 320) and (d["height"], d["width"]) == (90, 150)


def test_rmsprop_from_config():
    from fna_d2.engine.optim import weight_optimizer

    cfg = _cfg("SOLVER.OPTIMIZER", "RMSprop", "SOLVER.BASE_LR", "0.2",
               "SOLVER.WEIGHT_DECAY", "4e-5")
    p = torch.nn.Parameter(torch.ones(2))
    opt = weight_optimizer(cfg, [{"params": [p]}])
    assert isinstance(opt, torch.optim.RMSprop)
    g = opt.param_groups[0]
    assert (g["lr"], g["eps"], g["momentum"], g["alpha"], g["weight_decay"]) == (
        0.2, 1.0, 0.9, 0.99, 4e-5)
    with pytest.raises(ConfigError, match="SOLVER.OPTIMIZER"):
        weight_optimizer(_cfg("SOLVER.OPTIMIZER", "Adam"), [{"params": [p]}])


def test_trainers_use_the_ssdlite_mapper_and_optimizer():
    """The trainers hand SSDLite configs the authors' mapper and SOLVER.OPTIMIZER."""
    from fna_d2.engine.data import train_mapper
    from fna_d2.engine.search import SearchTrainer
    from fna_d2.engine.trainer import FNATrainer
    from fna_d2.modeling.ssdlite import SSDDatasetMapper

    cfg = _cfg("SOLVER.OPTIMIZER", "RMSprop")
    assert isinstance(train_mapper(cfg), SSDDatasetMapper)
    assert isinstance(train_mapper(cfg, augment=False), SSDDatasetMapper)
    model = build_model(cfg)
    assert isinstance(FNATrainer.build_optimizer(cfg, model), torch.optim.RMSprop)
    search = _cfg("SOLVER.OPTIMIZER", "RMSprop", "MODEL.FNA.NETWORK", "super")
    net = build_model(search)
    opt = SearchTrainer.build_optimizer(search, net)
    assert isinstance(opt, torch.optim.RMSprop)
    alphas = {id(a) for a in find_supernet(net).arch_parameters()}
    assert not any(id(p) in alphas for g in opt.param_groups for p in g["params"])


# ---------------------------------------------------------------------------------- cost
def test_cost_reproduces_the_papers_mobilenetv2_ssdlite():
    from fna_d2.cost import detectron2_model_cost
    from fna_d2.cost.cli import PAPER_SSDLITE, paper_ssdlite_cfg

    torch.manual_seed(0)
    rep = detectron2_model_cost(build_model(paper_ssdlite_cfg()), (320, 320))
    assert set(rep) == {"backbone", "extras", "head", "total"}
    total = rep["total"]
    assert (round(total.params / 1e6, 1), round(total.madds / 1e9, 1)) == \
        PAPER_SSDLITE["mobilenetv2"] == (4.3, 0.8)
    # the backbone includes the seed's 1280 conv: 320 * 1280 weights, 10 x 10 outputs at 320
    assert rep["backbone"].madds >= 320 * 1280 * 100


def test_cost_cli_counts_an_ssdlite_config(capsys):
    from fna_d2.cost.cli import main

    assert main(["--config-file", os.path.join(ROOT, "configs", "mobilenetv2_ssdlite.yaml"),
                 "--input-size", "320", "320", "MODEL.FNA.NORM", "BN",
                 "MODEL.SSDLITE.NORM", "BN"]) == 0
    out = capsys.readouterr().out
    assert "FNASSDLite" in out and "extras" in out
    total = [line.split() for line in out.splitlines() if line.strip().startswith("total")][0]
    assert (round(float(total[1]), 1), round(float(total[2]), 1)) == (4.3, 0.8)


def test_temperature_in_sampling_and_expected_cost():
    from fna_d2.cost import expected_cost

    cfg = _cfg("MODEL.FNA.NETWORK", "super", "MODEL.FNA.SEARCH.TEMPERATURE", "0.5",
               "MODEL.FNA.SEARCH_DEPTHS", "[1, 1, 1, 1, 1, 1]")
    net = SSDLiteSuperNet(cfg, None)
    alphas = net.arch_parameters()
    with torch.no_grad():
        for a in alphas:
            a.zero_()
            a[0] = 1.0  # softmax(a / 0.5) puts e^2 / (e^2 + n - 1) on candidate 0
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([net.sample_path("softmax", g) for _ in range(2000)])
    n = len(net.mixed_ops()[0].names)
    p0 = math.exp(2) / (math.exp(2) + n - 1)
    assert abs(float((draws[:, 0] == 0).float().mean()) - p0) < 0.04
    table = [[1.0] + [0.0] * (len(a) - 1) for a in alphas]
    cost = expected_cost(alphas, table, temperature=0.5)
    expected = sum(math.exp(2) / (math.exp(2) + len(a) - 1) for a in alphas)
    assert float(cost) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="TEMPERATURE"):
        SSDLiteSuperNet(_cfg("MODEL.FNA.NETWORK", "super", "MODEL.FNA.SEARCH.TEMPERATURE", "0",
                             "MODEL.FNA.SEARCH_DEPTHS", "[1, 1, 1, 1, 1, 1]"), None)


# ------------------------------------------------------------------ end to end (instant tests)
INSTANT = os.path.join(ROOT, "configs", "instant_test")


def _keras_seed_or_skip():
    try:
        from fna_d2.seeds.keras_mobilenetv2 import seed_weights_path

        seed_weights_path("keras_mobilenetv2")
    except Exception as e:  # package missing or conversion impossible here
        pytest.skip(f"Keras MobileNetV2 seed unavailable: {e}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_instant_training_gives_coco_ap(tmp_path):
    """train_net's machinery (build_trainer) trains the instant SSDLite baseline on the tree
    demo and evaluates it with detectron2's COCOEvaluator."""
    from fna_d2.engine.launch import build_trainer

    _keras_seed_or_skip()
    path = os.path.join(INSTANT, "trees_ssdlite_baseline.yaml")
    cfg = get_fna_cfg(path, ["OUTPUT_DIR", str(tmp_path), "TEST.EVAL_PERIOD", "2"])
    trainer = build_trainer(cfg, config_file=path)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    assert 0.0 <= results["bbox"]["AP"] <= 100.0 and "AP50" in results["bbox"]
    assert os.path.isfile(tmp_path / "model_final.pth")
    import json

    tensors = json.load(open(tmp_path / "remap_report.json"))["tensors"]
    status = {t["key"]: t["status"] for t in tensors}
    assert status["head.conv.weight"] == status["head.bn.running_var"] == "copied"  # 1280 conv


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_instant_search_derives_an_e6_tap_layer(tmp_path):
    from fna_d2.arch import load_arch
    from fna_d2.engine.launch import build_trainer

    _keras_seed_or_skip()
    path = os.path.join(INSTANT, "trees_ssdlite_search.yaml")
    cfg = get_fna_cfg(path, ["OUTPUT_DIR", str(tmp_path)])
    trainer = build_trainer(cfg, config_file=path)
    trainer.resume_or_load(resume=False)
    trainer.train()
    net = find_supernet(trainer.model)
    assert isinstance(net, SSDLiteSuperNet) and net.temperature == 0.9
    arch = load_arch(str(tmp_path / "searched_arch.json"))
    assert arch.stages[5].ops[0] in SSDLITE_TAP_OPS


# ---------------------------------------------------------------------------------- export
def test_ssdlite_backbone_exports_to_torchscript_and_onnx():
    """The six maps (taps + extras) trace and export to ONNX with the eager values."""
    import io
    import warnings

    class Maps(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone, self.names = backbone, list(backbone.output_shape())

        def forward(self, x):
            out = self.backbone(x)
            return tuple(out[n] for n in self.names)

    torch.manual_seed(0)
    model = Maps(build_model(_cfg()).backbone).eval()
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = model(x)
        traced = torch.jit.trace(model, (x,))
        for a, b in zip(traced(x), ref):
            assert torch.allclose(a, b, atol=1e-5)
        onnx = pytest.importorskip("onnx")
        f = io.BytesIO()
        torch.onnx.export(model, (x,), f, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=model.names)
    proto = onnx.load_from_string(f.getvalue())
    onnx.checker.check_model(proto)
    assert [o.name for o in proto.graph.output] == [f"ssd{i}" for i in range(6)]
    ort = pytest.importorskip("onnxruntime")
    got = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()})
    for g, r in zip(got, ref):
        assert g.shape == tuple(r.shape)
        assert np.allclose(g, r.numpy(), atol=1e-4 * max(1.0, float(r.abs().max())))
