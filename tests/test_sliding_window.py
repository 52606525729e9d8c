"""FNASemanticSegmentor: sliding-window inference (Cityscapes protocol, FNA spec section 6)
against whole-image inference and a hand-computed average, its config keys, and is_semantic."""
import os
from typing import Dict, List, Optional

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor, build_model
from detectron2.modeling.backbone import Backbone
from torch import nn
from torch.nn import functional as F

import fna_d2  # noqa: F401  (registers the meta-arch)
from fna_d2.config import ConfigError, get_fna_cfg
from fna_d2.modeling.sliding_window import (FNASemanticSegmentor, check_sliding_window_meta_arch,
                                            default_stride, window_starts)
from fna_d2.tasks import is_semantic, task_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = (100.0, 120.0, 80.0), (50.0, 60.0, 40.0)


class TinyBackbone(Backbone):
    """Stride-1 net: a 3x3 conv, ReLU, a ``k2`` x ``k2`` conv, ReLU. With ``k2 = 1`` the first
    conv is the only spatial layer, so padding the input with 0 is exactly the conv's own zero
    padding and padding cannot change in-image logits (with ``k2 = 3`` it can, at the border:
    the first conv's outputs in the padded region are not 0 next to the image)."""

    def __init__(self, bias: bool = False, size_div: int = 0, k2: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(8, 8, k2, padding=k2 // 2, bias=bias)
        self._size_div = size_div

    @property
    def size_divisibility(self) -> int:
        return self._size_div

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"f": F.relu(self.conv2(F.relu(self.conv1(x))))}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {"f": ShapeSpec(channels=8, stride=1)}


class ConvHead(nn.Module):
    """Translation-equivariant head (1x1 conv classifier, no pooling); ``global_term`` adds the
    spatial mean of the features (as an image-pooling branch does), so windows see different
    context and disagree."""

    def __init__(self, num_classes: int = 3, bias: bool = False, global_term: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(8, num_classes, 1, bias=bias)
        self.global_term = global_term
        self.ignore_value = 255

    def forward(self, features, targets: Optional[torch.Tensor] = None):
        x = self.conv(features["f"])
        if self.global_term:
            x = x + features["f"].mean(dim=(2, 3), keepdim=True)[:, :x.shape[1]]
        return x, {}


def _pair(window: int, stride: int = 0, bias: bool = False, global_term: bool = False,
          size_div: int = 0, k2: int = 1):
    """(SemanticSegmentor, FNASemanticSegmentor) sharing the same modules, in eval mode."""
    torch.manual_seed(0)
    backbone = TinyBackbone(bias=bias, size_div=size_div, k2=k2)
    head = ConvHead(bias=bias, global_term=global_term)
    ref = SemanticSegmentor(backbone=backbone, sem_seg_head=head, pixel_mean=MEAN,
                            pixel_std=STD).eval()
    sw = FNASemanticSegmentor(backbone=backbone, sem_seg_head=head, pixel_mean=MEAN,
                              pixel_std=STD, window_size=window, window_stride=stride).eval()
    return ref, sw


def _inputs(h: int, w: int, out_hw=None, seed: int = 0) -> List[dict]:
    g = torch.Generator().manual_seed(seed)
    d = {"image": torch.randint(0, 256, (3, h, w), generator=g).float()}
    if out_hw is not None:
        d["height"], d["width"] = out_hw
    return [d]


# ----------------------------------------------------------------------------- (a)
@pytest.mark.parametrize("size_div", [0, 4])
def test_disabled_equals_semantic_segmentor(size_div):
    ref, sw = _pair(window=0, bias=True, global_term=True, size_div=size_div)
    inputs = _inputs(13, 22, out_hw=(26, 44)) + _inputs(10, 9, seed=1)
    with torch.no_grad():
        a, b = ref(inputs), sw(inputs)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert torch.equal(x["sem_seg"], y["sem_seg"])
    assert (sw.window_size, sw.window_stride) == (0, 0)


def test_training_unchanged_with_window():
    ref, sw = _pair(window=8, stride=4, bias=True)

    class LossHead(ConvHead):
        def forward(self, features, targets=None):
            x = self.conv(features["f"])
            if self.training:
                return None, {"loss": F.cross_entropy(x, targets, ignore_index=255)}
            return x, {}

    head = LossHead(bias=True)
    ref.sem_seg_head = sw.sem_seg_head = head
    ref.train(), sw.train()
    inputs = _inputs(12, 20)
    inputs[0]["sem_seg"] = torch.randint(0, 3, (12, 20), generator=torch.Generator().manual_seed(3))
    assert torch.equal(ref(inputs)["loss"], sw(inputs)["loss"])


# ----------------------------------------------------------------------------- (b)
@pytest.mark.parametrize("hw,window,out_hw", [((20, 27), 32, None), ((17, 32), 32, (34, 64)),
                                               ((20, 27), 27, None)])
def test_window_covering_image_equals_whole_image(hw, window, out_hw):
    """With one spatial layer (a 3x3 conv on the normalised image), padding the image with 0
    (= the mean) is what the conv's own zero padding does at the image border in whole-image
    inference: the logits must match. Padding with anything but the mean (e.g. raw 0), a
    misplaced crop or a wrong resize break this."""
    ref, sw = _pair(window=window, bias=True)
    inputs = _inputs(*hw, out_hw=out_hw)
    with torch.no_grad():
        a, b = ref(inputs)[0]["sem_seg"], sw(inputs)[0]["sem_seg"]
    assert a.shape == b.shape == (3, *(out_hw or hw))
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_padding_is_visible_with_biases():
    """Control for the test above: with two 3x3 convs the first conv's outputs in the padded
    region are not 0 next to the image, so the last row / column of logits differ (padding
    effects); one pixel further in (the second conv's radius) they agree."""
    ref, sw = _pair(window=32, k2=3)
    inputs = _inputs(20, 27)
    with torch.no_grad():
        a, b = ref(inputs)[0]["sem_seg"], sw(inputs)[0]["sem_seg"]
    assert (a - b).abs().max() > 1e-4
    torch.testing.assert_close(b[:, :19, :26], a[:, :19, :26], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- (c)
def test_window_starts():
    assert window_starts(10, 6, 4) == [0, 4]
    assert window_starts(13, 6, 4) == [0, 4, 7]
    assert window_starts(6, 6, 4) == [0] and window_starts(3, 6, 4) == [0]
    assert window_starts(1024, 769, 513) == [0, 255]
    assert window_starts(2048, 769, 513) == [0, 513, 1026, 1279]
    assert default_stride(769) == 513
    with pytest.raises(ValueError):
        window_starts(10, 6, 7)


def _reference_average(model: FNASemanticSegmentor, image: torch.Tensor, ys, xs, size):
    """Per-window outputs of the tiny model, averaged by hand (explicit loops over pixels)."""
    norm = (image - torch.tensor(MEAN).view(-1, 1, 1)) / torch.tensor(STD).view(-1, 1, 1)
    h, w = norm.shape[-2:]
    sums = torch.zeros(3, h, w, dtype=torch.float64)
    counts = torch.zeros(h, w, dtype=torch.int64)
    with torch.no_grad():
        for y in ys:
            for x in xs:
                win = norm[None, :, y:y + size, x:x + size]
                out, _ = model.sem_seg_head(model.backbone(win))
                for i in range(size):
                    for j in range(size):
                        sums[:, y + i, x + j] += out[0, :, i, j].double()
                        counts[y + i, x + j] += 1
    return (sums / counts).float(), counts


def test_larger_image_is_hand_computed_average():
    """10 x 13 image, 6 x 6 windows every 4 px: rows start at 0, 4 and columns at 0, 4, 7
    (the last flush with the edge). The head adds each window's feature mean, so windows
    disagree and the average is not any single window's output."""
    size = 6
    _, sw = _pair(window=size, stride=4, bias=True, global_term=True)
    inputs = _inputs(10, 13)
    expected, counts = _reference_average(sw, inputs[0]["image"], [0, 4], [0, 4, 7], size)
    norm = (inputs[0]["image"] - sw.pixel_mean) / sw.pixel_std
    with torch.no_grad():
        logits, count = sw.sliding_window_logits(norm, return_count=True)
        out = sw(inputs)[0]["sem_seg"]
    assert bool((count > 0).all())
    assert torch.equal(count.long(), counts)
    assert int(count.max()) == 4 and int(count.min()) == 1  # overlaps really happen
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)  # no resize: same size
    # not the whole-image result (the global term sees different context per window)
    ref, _ = _pair(window=0, bias=True, global_term=True)
    with torch.no_grad():
        assert (ref(inputs)[0]["sem_seg"] - out).abs().max() > 1e-3


def test_larger_image_with_padding_in_one_dim_and_resize():
    """8 x 30 image, 12 px windows every 9 px: rows padded to 12 (one window row), columns
    start at 0, 9, 18. The net's only spatial layer is a 3x3 conv (1 px radius), so a
    window's logits equal the whole image's where the window holds the pixel's neighbours or
    its edge is the image edge. Columns 9, 11, 18, 20 average one exact and one cut window and
    differ; all others match whole-image inference exactly. The output is then resized to
    (16, 60) as sem_seg_postprocess does."""
    ref, sw = _pair(window=12, stride=9, bias=True)
    inputs = _inputs(8, 30)
    norm = (inputs[0]["image"] - sw.pixel_mean) / sw.pixel_std
    with torch.no_grad():
        logits, count = sw.sliding_window_logits(norm, return_count=True)
        whole = ref(inputs)[0]["sem_seg"]
        resized = sw(_inputs(8, 30, out_hw=(16, 60)))[0]["sem_seg"]
    assert count.shape == (8, 30) and bool((count > 0).all())
    assert count[0].tolist() == [1] * 9 + [2] * 3 + [1] * 6 + [2] * 3 + [1] * 9
    cut = [9, 11, 18, 20]
    exact = [c for c in range(30) if c not in cut]
    torch.testing.assert_close(logits[:, :, exact], whole[:, :, exact], rtol=0, atol=1e-5)
    assert (logits[:, :, cut] - whole[:, :, cut]).abs().max() > 1e-4
    expected = F.interpolate(logits[None], size=(16, 60), mode="bilinear",
                             align_corners=False)[0]
    torch.testing.assert_close(resized, expected, rtol=0, atol=1e-6)


def test_size_divisibility_padding_matches():
    """Windows are padded to the backbone's size divisibility exactly like whole images."""
    ref, sw = _pair(window=20, size_div=8)
    inputs = _inputs(20, 17)
    with torch.no_grad():
        torch.testing.assert_close(sw(inputs)[0]["sem_seg"], ref(inputs)[0]["sem_seg"],
                                   rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- (d)
def test_is_semantic_recognises_subclasses():
    cfg = get_fna_cfg()
    for name, expected in (("SemanticSegmentor", True), ("FNASemanticSegmentor", True),
                           ("RetinaNet", False), ("GeneralizedRCNN", False),
                           ("NoSuchArch", False)):
        cfg.MODEL.META_ARCHITECTURE = name
        assert is_semantic(cfg) is expected, name
    if "_TestSubSegmentor" not in META_ARCH_REGISTRY:
        @META_ARCH_REGISTRY.register()
        class _TestSubSegmentor(FNASemanticSegmentor):
            pass
    cfg.MODEL.META_ARCHITECTURE = "_TestSubSegmentor"
    assert is_semantic(cfg)
    cfg.MODEL.META_ARCHITECTURE = "FNASemanticSegmentor"
    assert task_of(cfg) == ("segmentation", "mIoU")
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    assert task_of(cfg) == ("detection", "AP")


# ----------------------------------------------------------------------------- (e)
@pytest.mark.parametrize("size,stride,key", [
    (769, 800, "MODEL.FNA.SEG.SLIDING_WINDOW_STRIDE"),
    (-1, 0, "MODEL.FNA.SEG.SLIDING_WINDOW_SIZE"),
    (769, -5, "MODEL.FNA.SEG.SLIDING_WINDOW_STRIDE"),
    (769.5, 0, "MODEL.FNA.SEG.SLIDING_WINDOW_SIZE"),
])
def test_bad_config_values_name_the_key(size, stride, key):
    cfg = get_fna_cfg(None, ["MODEL.META_ARCHITECTURE", "FNASemanticSegmentor",
                             "MODEL.DEVICE", "cpu"])
    cfg.MODEL.FNA.SEG.SLIDING_WINDOW_SIZE = size
    cfg.MODEL.FNA.SEG.SLIDING_WINDOW_STRIDE = stride
    with pytest.raises(ConfigError) as e:
        build_model(cfg)  # fails in from_config, before anything is built
    assert key in str(e.value) and str(stride if "STRIDE" in key else size) in str(e.value)


def test_direct_construction_rejects_bad_values():
    with pytest.raises(ValueError, match="window_stride"):
        _pair(window=8, stride=9)
    with pytest.raises(ValueError, match="window_size"):
        _pair(window=-8)


# ----------------------------------------------------------------------------- configs
def test_cityscapes_configs_use_sliding_window_and_demos_do_not():
    for name in ("fna_deeplabv3_adapt.yaml", "mobilenetv2_deeplabv3.yaml"):
        c = get_fna_cfg(os.path.join(ROOT, "configs", name))
        assert c.MODEL.META_ARCHITECTURE == "FNASemanticSegmentor"
        assert (c.MODEL.FNA.SEG.SLIDING_WINDOW_SIZE, c.MODEL.FNA.SEG.SLIDING_WINDOW_STRIDE) == \
            (769, 513)
        assert is_semantic(c)
    for name in ("demo/nuclei_adapt.yaml", "demo/nuclei_baseline.yaml",
                 "demo/nuclei_search.yaml", "fna_deeplabv3_search.yaml"):
        c = get_fna_cfg(os.path.join(ROOT, "configs", name))
        assert c.MODEL.FNA.SEG.SLIDING_WINDOW_SIZE == 0 and is_semantic(c)


def test_real_head_from_config_runs_windows():
    """The FNA DeepLabv3 model built from a config (seed arch, OS16, BN) runs sliding-window
    inference on a small image: windows of 48 (padded to 48 by size divisibility 16) every
    32 px on 56 x 90 -> 2 x 3 windows; output at the requested size."""
    cfg = get_fna_cfg(os.path.join(ROOT, "configs", "Base-FNA-DeepLabV3.yaml"), [
        "MODEL.META_ARCHITECTURE", "FNASemanticSegmentor", "MODEL.DEVICE", "cpu",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "MODEL.FNA.SEG.SLIDING_WINDOW_SIZE", "48",
        "MODEL.FNA.SEG.SLIDING_WINDOW_STRIDE", "32", "MODEL.FNA.NETWORK", "derived"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert isinstance(model, FNASemanticSegmentor)
    assert (model.window_size, model.window_stride) == (48, 32)
    inputs = _inputs(56, 90, out_hw=(28, 45))
    with torch.no_grad():
        out = model(inputs)[0]["sem_seg"]
    assert out.shape == (3, 28, 45) and bool(torch.isfinite(out).all())


def test_window_with_a_meta_arch_that_ignores_it_is_refused():
    """A sliding window asked of plain ``SemanticSegmentor`` (which would silently ignore it)
    is a config error naming both keys, raised before any model is built."""
    cfg = get_fna_cfg(None, ["MODEL.META_ARCHITECTURE", "SemanticSegmentor",
                             "MODEL.FNA.SEG.SLIDING_WINDOW_SIZE", 769])
    with pytest.raises(ConfigError, match=r"SLIDING_WINDOW_SIZE = 769.*'SemanticSegmentor'"):
        check_sliding_window_meta_arch(cfg)
    cfg.MODEL.META_ARCHITECTURE = "FNASemanticSegmentor"
    check_sliding_window_meta_arch(cfg)
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.FNA.SEG.SLIDING_WINDOW_SIZE = 0
    check_sliding_window_meta_arch(cfg)
