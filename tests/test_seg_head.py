"""FNADeepLabV3Head: shapes, output stride, training step of a SemanticSegmentor and mIoU
evaluation with detectron2's SemSegEvaluator on a couple of synthetic images."""
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import SemSegEvaluator, inference_on_dataset
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from PIL import Image

import fna_d2  # noqa: F401  (registers backbones, the head, demo datasets)
from fna_d2.config import get_fna_cfg
from fna_d2.modeling.seg_head import FNADeepLabV3Head

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "Base-FNA-DeepLabV3.yaml")


def _cfg(*opts):
    cfg = get_fna_cfg(BASE, ["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3",
                             "INPUT.CROP.ENABLED", "False", "INPUT.MIN_SIZE_TEST", "96",
                             "INPUT.MAX_SIZE_TEST", "160", *opts])
    return cfg


def _inputs(n, h, w, with_target=True):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        d = {"image": torch.randint(0, 256, (3, h, w), generator=g).float(), "height": h,
             "width": w}
        if with_target:
            d["sem_seg"] = torch.randint(0, 3, (h, w), generator=g)
            d["sem_seg"][:5] = 255  # some ignored pixels
        out.append(d)
    return out


def test_head_shapes_and_output_stride():
    torch.manual_seed(0)
    model = build_model(_cfg()).eval()
    shape = model.backbone.output_shape()["c5"]
    assert (shape.channels, shape.stride) == (320, 16)
    head = model.sem_seg_head
    assert isinstance(head, FNADeepLabV3Head) and head.common_stride == 16
    # 1x1 + 3 separable atrous + pooling branches, rates 6/12/18
    assert len(head.aspp.convs) == 5
    assert [b.depthwise.dilation[0] for b in list(head.aspp.convs)[1:4]] == [6, 12, 18]
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 128, 160))
        assert feats["c5"].shape[-2:] == (8, 10)          # OS16
        logits, _ = head(feats)
        assert logits.shape == (1, 3, 128, 160)
        # a size that is not a multiple of 16 is padded, predicted and cropped back
        out = model(_inputs(2, 97, 130, with_target=False))
    assert [o["sem_seg"].shape for o in out] == [(3, 97, 130)] * 2


def test_output_stride_8_dilations():
    model = build_model(_cfg("MODEL.FNA.OUTPUT_STRIDE", "8",
                             "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS", "[12, 24, 36]")).eval()
    assert model.backbone.output_shape()["c5"].stride == 8
    assert model.sem_seg_head.common_stride == 8
    with torch.no_grad():
        assert model.backbone(torch.zeros(1, 3, 64, 64))["c5"].shape[-2:] == (8, 8)


@pytest.mark.parametrize("loss_type", ["cross_entropy", "hard_pixel_mining"])
def test_train_forward_backward(loss_type):
    torch.manual_seed(0)
    model = build_model(_cfg("MODEL.SEM_SEG_HEAD.LOSS_TYPE", loss_type)).train()
    with EventStorage():
        losses = model(_inputs(2, 97, 97))  # 97: not a multiple of the output stride
    assert set(losses) == {"loss_sem_seg"}
    loss = losses["loss_sem_seg"]
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.sem_seg_head.predictor.weight.grad is not None
    stem = model.backbone.stem.conv.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0


def test_head_errors():
    shapes = {"c5": ShapeSpec(channels=320, stride=16)}
    with pytest.raises(ValueError, match="no feature 'c4'"):
        FNADeepLabV3Head(shapes, in_feature="c4", num_classes=2)
    with pytest.raises(ValueError, match="unknown loss"):
        FNADeepLabV3Head(shapes, in_feature="c5", num_classes=2, loss_type="dice")


def test_semsegevaluator_miou(tmp_path):
    """Two synthetic images through detectron2's test loader and SemSegEvaluator."""
    rng = np.random.RandomState(0)
    recs = []
    for i in range(2):
        img = rng.randint(0, 256, (80, 112, 3), dtype=np.uint8)
        lab = (rng.rand(80, 112) > 0.5).astype(np.uint8)
        lab[:4] = 255
        ip, lp = tmp_path / f"im{i}.png", tmp_path / f"lab{i}.png"
        Image.fromarray(img).save(ip)
        Image.fromarray(lab).save(lp)
        recs.append({"file_name": str(ip), "sem_seg_file_name": str(lp), "height": 80,
                     "width": 112, "image_id": i})
    name = "fna_test_semseg_tiny"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: recs)
    MetadataCatalog.get(name).set(stuff_classes=["a", "b"], ignore_label=255,
                                  evaluator_type="sem_seg")
    try:
        cfg = _cfg("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", "INPUT.MIN_SIZE_TEST", "80",
                   "DATASETS.TEST", f"('{name}',)", "DATALOADER.NUM_WORKERS", "0")
        model = build_model(cfg).eval()
        loader = build_detection_test_loader(cfg, name)
        evaluator = SemSegEvaluator(name, distributed=False, output_dir=str(tmp_path / "ev"))
        res = inference_on_dataset(model, loader, evaluator)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    miou = res["sem_seg"]["mIoU"]
    assert 0.0 <= miou <= 100.0 and "pACC" in res["sem_seg"]
