"""Seed / derived / super backbones: names, equivalences, RetinaNet integration, config errors."""
import json

import pytest
import torch
import torchvision
from torch import nn

from detectron2.config import get_cfg
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from fna_d2.arch import (SKIP, Arch, ArchError, Stage, detection_space, fna_retinanet_arch,
                         mobilenetv2_arch, save_arch, segmentation_space)
from fna_d2.config import add_fna_config
from fna_d2.modeling import (DerivedNet, MBConv, MixedOp, MobileNetV2Seed, SuperNet, build_op,
                             find_supernet)
from fna_d2.arch import efficientnet_lite0_arch

ALL = ["c2", "c3", "c4", "c5"]


def _x(h=64, w=64, seed=0):
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.affine:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def seed_to_canonical(sd: dict, arch=None) -> dict:
    """torchvision ``features.*`` names -> canonical ``stem.*`` / ``stages.*`` names."""
    arch = arch or mobilenetv2_arch()
    where = {}
    idx = 1
    for s, st in enumerate(arch.stages):
        for i, op in enumerate(st.ops):
            where[idx] = (s, i, op.endswith("_e1"))
            idx += 1
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] != "features":
            continue
        b = int(parts[1])
        if b == 0:
            out["stem." + {"0": "conv", "1": "bn"}[parts[2]] + "." + ".".join(parts[3:])] = v
            continue
        if b not in where:
            continue
        s, i, e1 = where[b]
        rest = parts[3:]  # after "conv"
        if e1:
            table = {("0", "0"): "dw.conv", ("0", "1"): "dw.bn", ("1",): "project.conv",
                     ("2",): "project.bn"}
        else:
            table = {("0", "0"): "expand.conv", ("0", "1"): "expand.bn", ("1", "0"): "dw.conv",
                     ("1", "1"): "dw.bn", ("2",): "project.conv", ("3",): "project.bn"}
        for key, name in table.items():
            if tuple(rest[:len(key)]) == key:
                out[f"stages.{s}.{i}.{name}." + ".".join(rest[len(key):])] = v
                break
        else:
            raise KeyError(k)
    return out


def test_seed_matches_torchvision_features():
    tv = torchvision.models.mobilenet_v2()
    _randomize_bn(tv)
    seed = MobileNetV2Seed(out_features=ALL, bn_eps=1e-5)
    res = seed.load_state_dict(tv.state_dict(), strict=False)
    assert not res.missing_keys
    assert set(res.unexpected_keys) == {k for k in tv.state_dict()
                                        if k.startswith(("features.18.", "classifier."))}
    tv.eval(), seed.eval()
    x = _x()
    out = seed(x)
    with torch.no_grad():
        ref = {"c2": tv.features[:4](x), "c3": tv.features[:7](x),
               "c4": tv.features[:14](x), "c5": tv.features[:18](x)}
    for k in ALL:
        torch.testing.assert_close(out[k], ref[k])
    shapes = seed.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "c2": (24, 4), "c3": (32, 8), "c4": (96, 16), "c5": (320, 32)}
    for k in ALL:
        assert out[k].shape[1] == shapes[k].channels and 64 // out[k].shape[-1] == shapes[k].stride


def test_derived_seed_arch_equals_seed():
    seed = MobileNetV2Seed(out_features=ALL)
    _randomize_bn(seed, 1)
    derived = DerivedNet(mobilenetv2_arch(), out_features=ALL)
    canon = seed_to_canonical(seed.state_dict())
    assert set(canon) == set(derived.state_dict())
    derived.load_state_dict(canon)
    seed.eval(), derived.eval()
    x = _x(seed=3)
    a, b = seed(x), derived(x)
    for k in ALL:
        torch.testing.assert_close(a[k], b[k])


def test_canonical_names_and_ops():
    d = DerivedNet(fna_retinanet_arch())
    names = set(d.state_dict())
    assert "stem.conv.weight" in names and "stem.bn.running_var" in names
    assert "stages.0.0.dw.conv.weight" in names and "stages.0.0.expand.conv.weight" not in names
    assert d.state_dict()["stages.5.2.dw.conv.weight"].shape == (480, 1, 7, 7)  # k7_e3, 3*160
    # skips moved to the end: stage 1 is k3_e6 k3_e6 skip skip
    assert isinstance(d.stages[1][2], nn.Identity) and isinstance(d.stages[1][3], nn.Identity)
    assert not any(k.startswith("stages.1.2.") for k in names)
    assert all(p.bias is None for p in d.modules() if isinstance(p, nn.Conv2d))


def test_build_op_names_and_errors():
    """Every op name of the search space builds (MBConv with its kernel / expansion, or an
    Identity for skip); unknown names and shape-changing skips are refused, naming them."""
    for k in (3, 5, 7):
        for e in (1, 3, 6):
            op = build_op(f"k{k}_e{e}", 24, 32, stride=2, dilation=1)
            assert isinstance(op, MBConv) and (op.kernel, op.expansion, op.stride) == (k, e, 2)
            assert (op.expand is None) == (e == 1) and not op.use_residual
    assert isinstance(build_op(SKIP, 32, 32), nn.Identity)
    with pytest.raises(KeyError, match=r"unknown op 'k9_e6'.*known ops: k3_e1.*skip"):
        build_op("k9_e6", 32, 32)
    with pytest.raises(ValueError, match=r"'skip' needs cin == cout and stride 1, got 24->32"):
        build_op(SKIP, 24, 32)
    with pytest.raises(ValueError, match=r"stride 2"):
        build_op(SKIP, 32, 32, stride=2)


def test_supernet_layer_counts_and_control():
    det = SuperNet(detection_space())
    seg = SuperNet(segmentation_space(), out_features=["c5"], output_stride=16)
    assert len(det.arch_parameters()) == 21 and len(seg.arch_parameters()) == 25
    assert det.arch_parameters()[0].shape == (6,) and det.arch_parameters()[1].shape == (7,)
    ids = {id(p) for p in det.arch_parameters()}
    assert not ids & {id(p) for p in det.weight_parameters()}
    assert len(det.weight_parameters()) + 21 == len(list(det.parameters()))
    names = dict(det.named_parameters())
    assert "stages.1.0.alpha" in names and "stages.1.1.ops.k5_e3.dw.conv.weight" in names
    # searchable BNs hold no tensors; fixed ones do
    sd = det.state_dict()
    assert not any(k.startswith("stages.1.") and ".bn." in k for k in sd)
    assert "stages.0.0.dw.bn.running_mean" in sd
    # deterministic sampling given a generator
    p1 = det.sample_path("softmax", torch.Generator().manual_seed(7))
    p2 = det.sample_path("softmax", torch.Generator().manual_seed(7))
    assert p1 == p2 and len(p1) == 21
    u = det.sample_path("uniform", torch.Generator().manual_seed(7))
    assert all(0 <= i < len(m.names) for i, m in zip(u, det.mixed_ops()))
    det.set_path(p1)
    assert det.current_path() == p1
    with pytest.raises(ValueError):
        det.set_path(p1[:-1])
    det.set_mixed()
    assert det.current_path() is None
    with torch.no_grad():
        for a in det.arch_parameters():
            a.zero_()
            a[1] = 1.0
    arch = det.derive()
    assert arch.stages[1].ops == ("k3_e6",) * 4  # candidates: k3_e3, k3_e6, ...
    assert detection_space().contains(arch)
    assert find_supernet(nn.Sequential(nn.Identity(), det)) is det
    assert find_supernet(nn.Linear(1, 1)) is None


def _copy_super_to_derived(sup: SuperNet, path, derived: DerivedNet) -> None:
    """Copy the chosen ops' conv weights (and the fixed layers) into the derived net."""
    sd = {}
    choices = iter(path)
    for s, st in enumerate(sup.space.stages):
        real = 0
        for i, cands in enumerate(st.candidates):
            op = cands[next(choices)] if len(cands) > 1 else cands[0]
            if op == SKIP:
                continue
            prefix = f"stages.{s}.{i}.ops.{op}." if len(cands) > 1 else f"stages.{s}.{i}."
            for k, v in sup.state_dict().items():
                if k.startswith(prefix):
                    sd[f"stages.{s}.{real}." + k[len(prefix):]] = v
            real += 1
    sd.update({k: v for k, v in sup.state_dict().items() if k.startswith("stem.")})
    res = derived.load_state_dict(sd, strict=False)
    # only the derived net's BN affine/statistics tensors are left out
    assert all(".bn." in k for k in res.missing_keys) and not res.unexpected_keys


def test_supernet_path_equals_derived_net():
    torch.manual_seed(0)
    sup = SuperNet(detection_space(), out_features=ALL)
    path = sup.sample_path("uniform", torch.Generator().manual_seed(3))
    # force a skip in the middle of stage 1 (layers 1..3 are searchable indices 1..3)
    path[1], path[2] = 6, 1
    sup.set_path(path)
    arch = sup.path_arch(path)
    assert arch.stages[1].ops[1] == SKIP
    derived = DerivedNet(arch, out_features=ALL)

    for s in range(len(arch.stages)):
        got = []
        for layer, op_i in zip(sup.stages[s], _stage_choices(sup, path, s)):
            mod = layer.ops[layer.names[op_i]] if isinstance(layer, MixedOp) else layer
            got += [c.weight.shape for c in mod.modules() if isinstance(c, nn.Conv2d)]
        want = [c.weight.shape for c in derived.stages[s].modules() if isinstance(c, nn.Conv2d)]
        assert got == want, s
    _copy_super_to_derived(sup, path, derived)
    sup.train(), derived.train()
    x = _x()
    a, b = sup(x), derived(x)
    for k in ALL:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4)


def _stage_choices(sup, path, s):
    offset = sum(1 for (ss, _) in sup.space.searchable_layers() if ss < s)
    out = []
    for cands in sup.space.stages[s].candidates:
        if len(cands) > 1:
            out.append(path[offset])
            offset += 1
        else:
            out.append(0)
    return out


def test_mixed_mode_is_softmax_weighted_sum():
    torch.manual_seed(0)
    sup = SuperNet(detection_space(), out_features=["c3"])
    layer = sup.stages[1][1]
    x = torch.randn(2, 24, 8, 8)
    with torch.no_grad():
        layer.alpha.copy_(torch.randn(7))
        w = torch.softmax(layer.alpha, 0)
        ref = sum(w[i] * layer.ops[n](x) for i, n in enumerate(layer.names))
        torch.testing.assert_close(layer(x), ref)
        layer.mode, layer.index = "path", 6
        torch.testing.assert_close(layer(x), x)


def test_output_stride_16():
    for net in (MobileNetV2Seed(out_features=ALL, output_stride=16),
                DerivedNet(fna_retinanet_arch(), out_features=ALL, output_stride=16),
                SuperNet(segmentation_space(), out_features=ALL, output_stride=16)):
        shapes = net.output_shape()
        assert [shapes[k].stride for k in ALL] == [4, 8, 16, 16]
        out = net(_x(64, 64))
        assert out["c5"].shape[-2:] == (4, 4) and out["c4"].shape[-2:] == (4, 4)
    d = DerivedNet(mobilenetv2_arch(), output_stride=16)
    assert d.stages[5][0].dw.conv.stride == (1, 1) and d.stages[5][0].dw.conv.dilation == (2, 2)
    assert d.stages[6][0].dw.conv.dilation == (2, 2) and d.stages[6][0].dw.conv.padding == (2, 2)
    d8 = DerivedNet(mobilenetv2_arch(), output_stride=8, out_features=["c5"])
    assert d8.output_shape()["c5"].stride == 8 and d8.stages[5][0].dw.conv.dilation == (4, 4)


@pytest.mark.parametrize("norm", ["BN", "SyncBN", "FrozenBN", "GN"])
def test_norms(norm):
    d = DerivedNet(fna_retinanet_arch(), norm=norm, bn_eps=1e-4, bn_momentum=0.03)
    assert d(_x())["c5"].shape == (2, 320, 2, 2)
    bn = d.stages[1][0].dw.bn
    if norm in ("BN", "SyncBN"):
        assert (bn.eps, bn.momentum) == (1e-4, 0.03)
    if norm == "GN":
        assert d.stem.bn.num_groups == 32 and d.stages[0][0].project.bn.num_groups == 16


def test_freeze_at():
    d = DerivedNet(mobilenetv2_arch(), freeze_at=2)
    assert not any(p.requires_grad for p in d.stem.parameters())
    assert not any(p.requires_grad for p in d.stages[0].parameters())
    assert all(p.requires_grad for p in d.stages[1].parameters())
    s = MobileNetV2Seed(freeze_at=3)
    assert not any(p.requires_grad for p in s.features[:4].parameters())
    assert all(p.requires_grad for p in s.features[4].parameters())
    with pytest.raises(ValueError, match="FREEZE_AT"):
        DerivedNet(mobilenetv2_arch(), freeze_at=9)


# ----------------------------------------------------------------------------- config
def _cfg(network="seed", **fna):
    cfg = get_cfg()
    add_fna_config(cfg)
    cfg.MODEL.FNA.NETWORK = network
    for k, v in fna.items():
        setattr(cfg.MODEL.FNA, k, v)
    cfg.MODEL.BACKBONE.NAME = "build_fna_backbone"
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def retinanet_cfg(network="seed", **fna):
    cfg = _cfg(network, **fna)
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    cfg.MODEL.BACKBONE.NAME = "build_fna_retinanet_fpn_backbone"
    cfg.MODEL.RETINANET.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)]
                                        for s in (32, 64, 128, 256, 512)]
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.INPUT.FORMAT = "RGB"
    return cfg


@pytest.mark.parametrize("network", ["seed", "super", "derived"])
def test_retinanet_train_and_inference(network, tmp_path):
    torch.manual_seed(0)
    fna = {}
    if network == "derived":
        fna["ARCH"] = save_arch(fna_retinanet_arch(), str(tmp_path / "a.json"))
    model = build_model(retinanet_cfg(network, **fna))
    assert model.backbone.output_shape()["p6"].stride == 64
    # P6 from C5 (320 channels), P7 from P6
    assert model.backbone.top_block.p6.in_channels == 320
    sup = find_supernet(model)
    assert (sup is not None) == (network == "super")
    if sup is not None:
        sup.set_path(sup.sample_path("uniform", torch.Generator().manual_seed(0)))
    img = torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)
    inst = Instances((64, 96))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0]]))
    inst.gt_classes = torch.tensor([1])
    model.train()
    with EventStorage():
        losses = model([{"image": img, "instances": inst}])
        total = sum(losses.values())
        total.backward()
    assert torch.isfinite(total)
    bb = model.backbone.bottom_up
    assert bb.stem.conv.weight.grad is not None if network != "seed" else \
        bb.features[0][0].weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model([{"image": img, "height": 64, "width": 96}])
    assert "instances" in out[0]


def test_build_fna_backbone_networks(tmp_path):
    assert isinstance(build_backbone(_cfg("seed")), MobileNetV2Seed)
    assert isinstance(build_backbone(_cfg("derived")), DerivedNet)  # empty ARCH: the seed
    sup = build_backbone(_cfg("super", SEARCH_SPACE="segmentation", OUT_FEATURES=["c5"],
                              OUTPUT_STRIDE=16))
    assert isinstance(sup, SuperNet) and len(sup.arch_parameters()) == 25
    assert sup.output_shape()["c5"].stride == 16
    txt = tmp_path / "a.txt"
    txt.write_text("[[16, 24], ['k3_e6', 'k5_e3'], 2]|[[24, 32], ['k3_e6'], 2]|"
                   "[[32, 64], ['k3_e6'], 2]|[[64, 96], ['k3_e6'], 1]|"
                   "[[96, 160], ['k3_e6'], 2]|[[160, 320], ['k3_e6'], 1]\n")
    d = build_backbone(_cfg("derived", ARCH=str(txt)))
    assert d.arch.depths == (1, 2, 1, 1, 1, 1, 1)
    # the EfficientNet-Lite0 seed
    eff = build_backbone(_cfg("seed", SEED="efficientnet_lite0", OUT_FEATURES=ALL))
    assert isinstance(eff, DerivedNet) and eff.arch.stages[2].ops == ("k5_e6", "k5_e6")
    assert [eff.output_shape()[k].channels for k in ALL] == [24, 40, 112, 320]
    effsup = build_backbone(_cfg("super", SEED="efficientnet_lite0"))
    assert effsup.space.stages[5].cout == 192 and len(effsup.arch_parameters()) == 21
    assert effsup(_x())["c5"].shape == (2, 320, 2, 2)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"MODEL\.FNA\.NETWORK.*'superr'"):
        build_backbone(_cfg("superr"))
    missing = str(tmp_path / "nope.json")
    with pytest.raises(ArchError, match=r"MODEL\.FNA\.ARCH.*nope\.json"):
        build_backbone(_cfg("derived", ARCH=missing))
    bad = tmp_path / "bad.json"
    d = mobilenetv2_arch().to_dict()
    d["stages"][2]["ops"][1] = "k9_e6"
    bad.write_text(json.dumps(d))
    with pytest.raises(ArchError, match=r"MODEL\.FNA\.ARCH.*bad\.json.*stage 2, layer 1.*k9_e6"):
        build_backbone(_cfg("derived", ARCH=str(bad)))
    wide = tmp_path / "wide.json"
    stages = list(mobilenetv2_arch().stages)
    stages[3] = Stage(32, 72, 2, ("k3_e6",))
    stages[4] = Stage(72, 96, 1, ("k3_e6",))
    save_arch(Arch(tuple(stages)), str(wide))
    with pytest.raises(ArchError, match=r"MODEL\.FNA\.ARCH.*wide\.json.*stage 3: 32->72.*"
                                        r"MODEL\.FNA\.SEED.*32->64"):
        build_backbone(_cfg("derived", ARCH=str(wide)))
    with pytest.raises(ArchError, match=r"MODEL\.FNA\.SEED"):
        build_backbone(_cfg("derived", ARCH=str(wide), SEED="efficientnet_lite0"))
    with pytest.raises(ValueError, match=r"MODEL\.FNA\.OUT_FEATURES.*'res5'"):
        build_backbone(_cfg("seed", OUT_FEATURES=["c3", "res5"]))
    with pytest.raises(ValueError, match=r"MODEL\.FNA\.SEARCH_SPACE.*'big'"):
        build_backbone(_cfg("super", SEARCH_SPACE="big"))
    with pytest.raises(ArchError, match=r"MODEL\.FNA\.SEARCH_DEPTHS=\[2, 2\].*depths has 2"):
        build_backbone(_cfg("super", SEARCH_DEPTHS=[2, 2]))
    with pytest.raises(ArchError, match=r"MODEL\.FNA\.SEARCH_DEPTHS.*stage 3.*depth"):
        build_backbone(_cfg("super", SEARCH_DEPTHS=[2, 2, 0, 1, 1, 1]))
    with pytest.raises(ArchError, match=r"MODEL\.FNA\.SEED.*'resnet'"):
        build_backbone(_cfg("seed", SEED="resnet"))
    cfg = retinanet_cfg("seed", OUT_FEATURES=["c3", "c4"])
    with pytest.raises(ValueError, match=r"MODEL\.FNA\.OUT_FEATURES.*'c5'"):
        build_model(cfg)


def test_search_depths_override_the_space():
    net = build_backbone(_cfg("super", SEARCH_DEPTHS=[2, 2, 1, 1, 1, 1]))
    assert net.space.stages[1].depth == 2 and net.space.stages[3].depth == 1
    # 16->24 s2 (2 layers: first + 1 with skip), 24->32 (2), then 4 single first layers
    assert net.space.num_searchable == 8 and len(net.arch_parameters()) == 8
    assert [len(c) for c in net.space.stages[1].candidates] == [6, 7]


def test_efficientnet_lite0_arch():
    a = efficientnet_lite0_arch()
    assert a.depths == (1, 2, 2, 3, 3, 4, 1)
    assert [s.cout for s in a.stages] == [16, 24, 40, 80, 112, 192, 320]
