"""SSDLite's wiring, checked where a mistake would make a detector learn nothing without any
error (issue 16: the demo's classifier sits at the hard-negative prior): the prediction rows
against the anchors' order, the background index in targets / loss / mining / inference, the
mining and normalisation over a batch by hand, the box coder's round trip, the training
mapper's boxes against the pixels they cover, and the head-norm / augmentation config keys."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import detectron2.data.transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode

import fna_d2  # noqa: F401  (registers the meta-architecture)
from fna_d2.config import get_fna_cfg
from fna_d2.modeling import ConvBN
from fna_d2.modeling.ssdlite import (Expand, MinIoURandomCrop, hard_negative_mask, ssd_losses,
                                     ssdlite_train_augmentations, ssdlite_train_mapper)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "Base-FNA-SSDLite.yaml")
C = 3  # object classes in these tests; background is column / label 3


def _cfg(*opts):
    return get_fna_cfg(BASE, ["MODEL.DEVICE", "cpu", "MODEL.SSDLITE.NUM_CLASSES", str(C)]
                       + list(opts))


@pytest.fixture(scope="module")
def plain_model():
    """No norm anywhere in the head, plain 1x1 outputs: the head is linear in its input."""
    torch.manual_seed(0)
    return build_model(_cfg("MODEL.SSDLITE.NORM", "", "MODEL.SSDLITE.HEAD_OUTPUT_NORM", "False"))


def _coordinate_maps(model):
    """Feature maps of the backbone's shapes at 320x320 whose channel 0 is the column and
    channel 1 the row of each location (both / 4, under ReLU6's 6)."""
    shapes = list(model.backbone.output_shape().values())
    maps = []
    for s, n in zip(shapes, (20, 10, 5, 3, 2, 1)):
        f = torch.zeros(1, s.channels, n, n)
        f[0, 0] = torch.arange(n).float().view(1, n) / 4
        f[0, 1] = torch.arange(n).float().view(n, 1) / 4
        maps.append(f)
    return maps


def _trace_head(head, k_cls):
    """Set every level's predictors so that, for anchor ``a`` at row ``i``, column ``j``:
    box deltas = (j, i, a, 0) and class logit ``c`` = (c + 1) * i + 1000 * a."""
    with torch.no_grad():
        for pred, k, is_box in ([(p, 4, True) for p in head.box_heads]
                                + [(p, k_cls, False) for p in head.cls_heads]):
            dw = pred.dw.conv.weight
            dw.zero_()
            dw[:, 0, 1, 1] = 1.0  # depthwise identity (3x3 centre tap)
            pw = pred.pw
            assert isinstance(pw, nn.Conv2d) and pw.bias is not None
            pw.weight.zero_()
            pw.bias.zero_()
            for a in range(pw.out_channels // k):
                if is_box:
                    pw.weight[a * 4 + 0, 0] = 4.0
                    pw.weight[a * 4 + 1, 1] = 4.0
                    pw.bias[a * 4 + 2] = float(a)
                else:
                    for c in range(k):
                        pw.weight[a * k + c, 1] = 4.0 * (c + 1)
                        pw.bias[a * k + c] = 1000.0 * a


# ---------------------------------------------------------------------- (a) rows vs anchors
def test_prediction_rows_follow_the_anchors_order(plain_model):
    """Row r of the head's output is predicted at anchor r's centre, for anchor r's index in its
    cell, on every level: (level, y, x, anchor) in both."""
    model = plain_model
    model.eval()
    maps = _coordinate_maps(model)
    _trace_head(model.head, C + 1)
    with torch.no_grad():
        cls, box = model.head(maps)
    levels = model.anchor_generator(maps)
    anchors = Boxes.cat(levels).tensor
    assert cls.shape == (1, len(anchors), C + 1) and box.shape == (1, len(anchors), 4)
    strides = model.anchor_generator.strides
    level_of = torch.cat([torch.full((len(b),), k) for k, b in enumerate(levels)])
    s = torch.tensor(strides)[level_of]
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2
    col = torch.round((centre[:, 0] - (s - 1) / 2) / s)
    row = torch.round((centre[:, 1] - (s - 1) / 2) / s)
    num = torch.tensor(model.anchor_generator.num_anchors)[level_of]
    start = torch.cumsum(torch.tensor([0] + [len(b) for b in levels]), 0)[level_of]
    cell = (torch.arange(len(anchors)) - start) % num
    assert torch.equal(box[0, :, 0], col) and torch.equal(box[0, :, 1], row)
    assert torch.equal(box[0, :, 2], cell.float())
    # the anchor's own box: index `cell` of its level's cell anchors, shifted to the centre
    for k in range(len(levels)):
        sel = level_of == k
        own = model.anchor_generator.cell(k)[cell[sel]]
        assert torch.allclose(anchors[sel], own + centre[sel].repeat(1, 2), atol=1e-3)
    for c in range(C + 1):
        assert torch.equal(cls[0, :, c], (c + 1) * row + 1000 * cell.float())


# ------------------------------------------------------------------- (b) background index
def test_background_is_the_last_class_everywhere(plain_model):
    """Targets label negatives C; the loss and the mining read column C as background;
    inference scores columns 0..C-1 only."""
    model = plain_model
    anchors = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0],
                                  [60.0, 60.0, 70.0, 70.0], [80.0, 80.0, 90.0, 90.0]]))
    gt = Boxes(torch.tensor([[20.0, 20.0, 40.0, 40.0]]))
    labels, _ = model.label_anchors(anchors, [(gt, torch.tensor([0]))])
    assert labels.tolist() == [[C, 0, C, C]]
    # a confident background (column C) on every negative and class 0 on the positive: ~0 loss
    good = torch.full((1, 4, C + 1), -20.0)
    good[0, [0, 2, 3], C] = 20.0
    good[0, 1, 0] = 20.0
    zeros = torch.zeros(1, 4, 4)
    assert ssd_losses(good, zeros, labels, zeros)["loss_cls"].item() < 1e-6
    # the mined negative is the one whose column C is lowest (highest CE), whatever column 0
    bad = good.clone()
    bad[0, 2, C] = 0.0   # negative 2: background 0 against -20 elsewhere: CE ~ 0
    bad[0, 3, C] = -5.0  # negative 3: background 5 below class 1's logit: CE ~ 5, the hardest
    bad[0, 3, 1] = 0.0
    ce = F.cross_entropy(bad[0], labels[0], reduction="none")[None]
    mask = hard_negative_mask(ce, labels, C, neg_pos_ratio=1)
    assert mask.tolist() == [[False, False, False, True]]
    # inference: one anchor whose class 2 wins; a huge background logit elsewhere is not a class
    logits = torch.full((1, 4, C + 1), -20.0)
    logits[0, :, C] = 20.0
    logits[0, 1, C] = -20.0
    logits[0, 1, 2] = 20.0
    model.eval()
    r = model.inference(anchors, logits, torch.zeros(1, 4, 4), [(100, 100)])[0]
    assert r.pred_classes.tolist() == [2]
    assert r.pred_boxes.tensor.tolist() == [[20.0, 20.0, 40.0, 40.0]]


# ---------------------------------------------------------- (c) mining and normalisation
def test_mining_ranks_by_loss_and_normalises_by_the_batchs_positives():
    """Two images, 2 and 1 positives: each keeps its own 3 x positives hardest negatives (by
    their cross-entropy, not by a foreground score) and the sum is divided by 3 positives."""
    bg = 2
    # per anchor: logits (class 0, class 1, background)
    rows0 = [[3.0, 0.0, 0.0], [0.0, 2.0, 0.0],                       # positives (0, 1)
             [4.0, -9.0, 3.9],    # negative 2: max foreground prob 0.52, CE 0.74
             [1.0, 1.0, 0.0],     # negative 3: max foreground prob 0.42, CE 1.86 (hardest)
             [0.0, 0.0, 2.0], [0.5, 0.0, 1.0], [0.0, 0.0, 5.0],
             [0.2, 0.1, 0.0]]     # negative 7: max foreground prob 0.37, CE 1.20
    rows1 = [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0],
             [2.0, 2.0, 0.0], [0.0, 0.0, 0.5], [0.0, 0.0, 4.0], [0.0, 1.0, 0.0]]
    logits = torch.tensor([rows0, rows1])
    labels = torch.tensor([[0, 1, bg, bg, bg, bg, bg, bg],
                           [bg, bg, bg, bg, bg, bg, bg, 1]])
    ce = -F.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]
    # by hand: image 0 keeps 6 -> all its 6 negatives; image 1 keeps 3 of its 7
    neg_ce1 = {i: ce[1, i].item() for i in range(7)}
    top3 = sorted(neg_ce1, key=neg_ce1.get, reverse=True)[:3]
    assert sorted(top3) == [0, 2, 4]  # CE 1.10, 1.55, 2.76 against 0.55, 0.10, 0.79, 0.04
    mask = hard_negative_mask(ce, labels, bg, 3)
    assert mask[0].tolist() == [False, False] + [True] * 6
    assert mask[1].tolist() == [True, False, True, False, True, False, False, False]
    out = ssd_losses(logits, torch.zeros(2, 8, 4), labels, torch.zeros(2, 8, 4))
    expected = (ce[0].sum() + ce[1, [0, 2, 4, 7]].sum()) / 3
    assert out["loss_cls"].item() == pytest.approx(expected.item(), rel=1e-6)
    # ratio 1: image 0 keeps its 2 hardest negatives by CE, anchors 3 and 7; ranking by the
    # best foreground probability would keep 2 and 3 instead
    assert ce[0, 3] > ce[0, 7] > ce[0, 2]
    fg = F.softmax(logits[0], -1)[2:, :bg].max(-1).values
    assert (fg.argsort(descending=True)[:2] + 2).sort().values.tolist() == [2, 3]
    mask1 = hard_negative_mask(ce, labels, bg, 1)
    assert mask1[0].nonzero()[:, 0].tolist() == [3, 7]


# ----------------------------------------------------------------------------- (d) box coder
def test_box_coder_round_trip_with_the_configured_weights(plain_model):
    coder = plain_model.box2box_transform
    assert tuple(coder.weights) == (10.0, 10.0, 5.0, 5.0)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 300
    anchors = torch.cat([xy, xy + 5 + torch.rand(50, 2, generator=g) * 100], 1)
    xy2 = torch.rand(50, 2, generator=g) * 300
    boxes = torch.cat([xy2, xy2 + 5 + torch.rand(50, 2, generator=g) * 100], 1)
    d = coder.get_deltas(anchors, boxes)
    assert torch.allclose(coder.apply_deltas(d, anchors), boxes, atol=1e-3)
    # by hand for one pair: anchor (0, 0, 20, 40), box (5, 10, 45, 50)
    d1 = coder.get_deltas(torch.tensor([[0.0, 0.0, 20.0, 40.0]]),
                          torch.tensor([[5.0, 10.0, 45.0, 50.0]]))[0]
    expected = [10 * (25 - 10) / 20, 10 * (30 - 20) / 40, 5 * math.log(40 / 20),
                5 * math.log(40 / 40)]
    assert torch.allclose(d1, torch.tensor(expected), atol=1e-5)


# ---------------------------------------------------------------- the mapper's boxes (data)
def test_train_mapper_boxes_cover_their_pixels(tmp_path):
    """White boxes on black, through the full augmentation (expand, crop, resize, flip): every
    kept box's inside is still bright and its ring outside is dark or the expand's grey."""
    from PIL import Image

    img = np.zeros((160, 240, 3), np.uint8)
    boxes = [[20, 30, 60, 70], [100, 20, 180, 60], [150, 90, 230, 150]]
    for x0, y0, x1, y1 in boxes:
        img[y0:y1, x0:x1] = 255
    path = str(tmp_path / "boxes.png")
    Image.fromarray(img).save(path)
    mapper = ssdlite_train_mapper(_cfg())
    np.random.seed(1)
    seen = 0
    for _ in range(40):
        d = mapper({"file_name": path, "height": 160, "width": 240, "image_id": 0,
                    "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
                                    for b in boxes]})
        im = d["image"].float().mean(0)  # photometric distortion: bright >= 109, dark <= 48
        for x0, y0, x1, y1 in d["instances"].gt_boxes.tensor.round().long().tolist():
            if x1 - x0 < 6 or y1 - y0 < 6:
                continue  # a sliver left by the crop's clip: too few pixels inside
            inside = im[y0 + 2:y1 - 2, x0 + 2:x1 - 2]
            assert (inside > 90).float().mean() > 0.9, (x0, y0, x1, y1)
            seen += 1
    assert seen > 40


# ------------------------------------------------------------------------------ config keys
def test_head_output_norm_key_builds_the_authors_or_a_plain_output_conv(plain_model):
    authors = build_model(_cfg())
    for pred in list(authors.head.cls_heads) + list(authors.head.box_heads):
        assert isinstance(pred.pw, ConvBN) and pred.pw.conv.bias is None
        assert isinstance(pred.pw.bn, nn.BatchNorm2d)
    for pred in list(plain_model.head.cls_heads) + list(plain_model.head.box_heads):
        assert type(pred.pw) is nn.Conv2d and pred.pw.bias is not None
    assert get_fna_cfg(BASE).MODEL.SSDLITE.HEAD_OUTPUT_NORM is True


@pytest.mark.parametrize("expand,crop", [(True, True), (False, True), (True, False),
                                         (False, False)])
def test_ssd_augmentation_keys_drop_expand_and_crop(expand, crop):
    cfg = _cfg("INPUT.SSD.EXPAND", str(expand), "INPUT.SSD.MIN_IOU_CROP", str(crop))
    augs = ssdlite_train_augmentations(cfg)
    assert any(isinstance(a, Expand) for a in augs) == expand
    assert any(isinstance(a, MinIoURandomCrop) for a in augs) == crop
    assert isinstance(augs[-2], T.Resize) and isinstance(augs[-1], T.RandomFlip)
    assert len(augs) == 3 + expand + crop


@pytest.mark.parametrize("name", ["trees_ssdlite_search.yaml", "trees_ssdlite_adapt.yaml",
                                  "trees_ssdlite_baseline.yaml"])
def test_demo_stages_share_the_demo_recipe_and_coco_keeps_the_authors(name):
    """Search, adaptation and baseline of the SSDLite demo train with one recipe (640x640 with
    the authors' anchor sizes and strides computed for it, the authors' head, no expand / crop,
    IoU 0.4); the COCO configs keep the authors' 320x320, augmentation and IoU."""
    demo = get_fna_cfg(os.path.join(ROOT, "configs", "demo", name))
    assert tuple(demo.MODEL.SSDLITE.INPUT_SIZE) == (640, 640)
    assert tuple(demo.MODEL.FNA.SEARCH.COST_INPUT_SIZE) == (640, 640)
    assert list(demo.MODEL.SSDLITE.ANCHOR_STRIDES) == []
    assert demo.MODEL.SSDLITE.HEAD_OUTPUT_NORM is True
    assert demo.INPUT.SSD.EXPAND is False and demo.INPUT.SSD.MIN_IOU_CROP is False
    assert demo.MODEL.SSDLITE.IOU_THRESHOLD == 0.4
    for coco in ("fna_ssdlite_search.yaml", "mobilenetv2_ssdlite.yaml"):
        cfg = get_fna_cfg(os.path.join(ROOT, "configs", coco))
        assert demo.MODEL.ANCHOR_GENERATOR.SIZES == cfg.MODEL.ANCHOR_GENERATOR.SIZES
        assert tuple(cfg.MODEL.SSDLITE.INPUT_SIZE) == (320, 320)
        assert cfg.MODEL.SSDLITE.HEAD_OUTPUT_NORM is True and cfg.MODEL.SSDLITE.IOU_THRESHOLD == 0.5
        assert cfg.INPUT.SSD.EXPAND is True and cfg.INPUT.SSD.MIN_IOU_CROP is True
