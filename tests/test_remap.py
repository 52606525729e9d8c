"""Parameter remapping (fna_d2.remap): identity, function preservation, the depth/width/kernel
rules, ablation strategies, seed layout adapters and error messages."""
import random
import re
from collections import OrderedDict

import pytest
import torch
import torchvision

from fna_d2 import remap as R
from fna_d2 import seeds
from fna_d2.arch import (Arch, Stage, detection_space, fna_retinanet_arch, mobilenetv2_arch)
from fna_d2.modeling import DerivedNet, SuperNet
from fna_d2.arch import efficientnet_lite0_arch

MBV2_DEPTHS = (1, 2, 3, 4, 3, 3, 1)


def _randomize_bn(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BN non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.track_running_stats:
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5
            m.num_batches_tracked.fill_(7)
    return net


@pytest.fixture(scope="module")
def seed_net() -> DerivedNet:
    torch.manual_seed(0)
    return _randomize_bn(DerivedNet(mobilenetv2_arch(), out_features=["c2", "c3", "c4", "c5"]))


@pytest.fixture(scope="module")
def seed_sd(seed_net):
    return OrderedDict((k, v.clone()) for k, v in seed_net.state_dict().items())


def _stage(arch: Arch, s: int, ops) -> Arch:
    st = arch.stages[s]
    stages = list(arch.stages)
    stages[s] = Stage(st.cin, st.cout, st.stride, tuple(ops), st.dilation)
    return Arch(tuple(stages), arch.stem_channels).validate()


# ----------------------------------------------------------------------------- identity
@pytest.mark.parametrize("width", R.WIDTH_STRATEGIES)
@pytest.mark.parametrize("kernel", R.KERNEL_STRATEGIES)
def test_remap_into_own_arch_is_identity(seed_sd, width, kernel):
    arch = mobilenetv2_arch()
    for init in (None, seed_sd):
        out, rep = R.remap(seed_sd, arch, arch, width=width, kernel=kernel, target_init=init)
        assert list(out) == list(seed_sd)
        for k, v in seed_sd.items():
            assert torch.equal(out[k], v), k
        assert rep.counts()["copied"] == len(seed_sd)
        assert rep.unused == []


def test_identity_from_inferred_arch_and_auto_layout(seed_sd):
    out, rep = R.remap(seed_sd, None, mobilenetv2_arch())
    assert all(torch.equal(out[k], seed_sd[k]) for k in seed_sd)
    assert rep.meta["seed_layout"] == "fna_d2"


# ----------------------------------------------------------------------------- function
def test_wider_kernels_and_skip_layers_preserve_the_function(seed_net, seed_sd):
    """Extra layers are skip, kernels grow (centre, zero-padded): same outputs (eval mode)."""
    seed = mobilenetv2_arch()
    ops = {1: ["k5_e6", "skip", "k7_e6", "skip"], 2: ["k7_e6", "k5_e6", "skip", "k3_e6"],
           3: ["k5_e6", "k7_e6", "k5_e6", "k7_e6", "skip"], 4: ["k7_e6", "k3_e6", "k5_e6"],
           5: ["skip", "k5_e6", "k7_e6", "k7_e6"][::-1], 6: ["k7_e6"]}
    target = seed
    for s, o in ops.items():
        target = _stage(target, s, o)
    out, rep = R.remap(seed_sd, seed, target)
    net = DerivedNet(target, out_features=["c2", "c3", "c4", "c5"])
    net.load_state_dict(out, strict=True)
    n_big = sum(op != "skip" and not op.startswith("k3") for st in target.stages for op in st.ops)
    assert rep.counts()["kernel_padded"] == n_big == 14  # one dw conv per k5/k7 layer
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    seed_net.eval(), net.eval()
    with torch.no_grad():
        a, b = seed_net(x), net(x)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- depth rule
def test_depth_rule_four_layer_stage_uses_seed_layers_0_1_1_1(seed_sd):
    seed = mobilenetv2_arch()
    target = _stage(seed, 1, ["k3_e6"] * 4)
    out, rep = R.remap(seed_sd, seed, target)
    assert rep.meta["depth_map"]["1"] == [0, 1, 1, 1]
    assert R.depth_map(2, 4) == [0, 1, 1, 1]
    for i, src in enumerate([0, 1, 1, 1]):
        for part in ("expand.conv.weight", "dw.conv.weight", "project.conv.weight",
                     "dw.bn.running_var", "project.bn.bias"):
            key = f"stages.1.{i}.{part}"
            assert torch.equal(out[key], seed_sd[f"stages.1.{src}.{part}"]), key
            assert rep.record(key).source == f"stages.1.{src}.{part}"


def test_skips_are_moved_to_the_end_before_the_depth_rule(seed_sd):
    seed = mobilenetv2_arch()
    target = _stage(seed, 2, ["k3_e6", "skip", "skip", "k5_e6"])
    out, rep = R.remap(seed_sd, seed, target)
    # k5_e6 becomes layer 1 and inherits seed layer 1
    assert rep.meta["depth_map"]["2"] == [0, 1, None, None]
    assert rep.record("stages.2.1.dw.conv.weight").source == "stages.2.1.dw.conv.weight"
    assert not any(k.startswith(("stages.2.2.", "stages.2.3.")) for k in out)


# ----------------------------------------------------------------------------- width rule
@pytest.mark.parametrize("layer,cin", [(0, 16), (1, 24)])
def test_e6_to_e3_keeps_first_3cin_channels_throughout(seed_sd, layer, cin):
    seed = mobilenetv2_arch()
    ops = ["k3_e6", "k3_e6"]
    ops[layer] = "k3_e3"
    out, rep = R.remap(seed_sd, seed, _stage(seed, 1, ops))
    p, h = f"stages.1.{layer}", 3 * cin
    assert out[f"{p}.expand.conv.weight"].shape == (h, cin, 1, 1)
    assert torch.equal(out[f"{p}.expand.conv.weight"], seed_sd[f"{p}.expand.conv.weight"][:h])
    assert torch.equal(out[f"{p}.dw.conv.weight"], seed_sd[f"{p}.dw.conv.weight"][:h])
    assert torch.equal(out[f"{p}.project.conv.weight"],
                       seed_sd[f"{p}.project.conv.weight"][:, :h])
    for bn in ("expand", "dw"):
        for t in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(out[f"{p}.{bn}.bn.{t}"], seed_sd[f"{p}.{bn}.bn.{t}"][:h])
            assert rep.record(f"{p}.{bn}.bn.{t}").status == "width_cropped"
    for t in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(out[f"{p}.project.bn.{t}"], seed_sd[f"{p}.project.bn.{t}"])
    assert rep.record(f"{p}.project.conv.weight").status == "width_cropped"


def test_wider_target_zero_fills_convs_and_keeps_bn_init(seed_sd):
    """e3 seed -> e6 target: extra conv channels zero, extra BN entries at init."""
    seed = _stage(mobilenetv2_arch(), 1, ["k3_e3", "k3_e3"])
    small = R.remap(seed_sd, mobilenetv2_arch(), seed)[0]
    init = DerivedNet(mobilenetv2_arch()).state_dict()
    init["stages.1.0.expand.bn.weight"].fill_(0.25)
    out, rep = R.remap(small, seed, mobilenetv2_arch(), target_init=init)
    p = "stages.1.0"
    w = out[f"{p}.expand.conv.weight"]
    assert torch.equal(w[:48], small[f"{p}.expand.conv.weight"]) and not w[48:].any()
    assert not out[f"{p}.dw.conv.weight"][48:].any()
    assert not out[f"{p}.project.conv.weight"][:, 48:].any()
    assert (out[f"{p}.expand.bn.weight"][48:] == 0.25).all()
    assert (out[f"{p}.dw.bn.running_var"][48:] == 1).all()  # model init
    assert rep.record(f"{p}.expand.conv.weight").status == "zero_filled"
    assert rep.record(f"{p}.expand.bn.weight").status == "zero_filled"
    out2, _ = R.remap(small, seed, mobilenetv2_arch())  # no target_init: standard BN init
    assert (out2[f"{p}.expand.bn.weight"][48:] == 1).all()
    assert not out2[f"{p}.expand.bn.bias"][48:].any()


# ----------------------------------------------------------------------------- strategies
def _strategy_seed(seed_sd):
    """Seed whose stage-1 layer-0 expand conv (96 x 16) has a known top-48 per strategy:
    rows in B alternate +-1 (std 1, L1 16), rows in C are constant 3 (std 0, L1 48);
    |gamma| is large on a third random set A."""
    rng = random.Random(3)
    rows = list(range(96))
    rng.shuffle(rows)
    B, C = sorted(rows[:48]), sorted(rows[48:])
    A = sorted(rng.sample(range(96), 48))
    sd = OrderedDict((k, v.clone()) for k, v in seed_sd.items())
    w = torch.zeros(96, 16, 1, 1)
    alt = torch.tensor([1.0, -1.0] * 8).view(16, 1, 1)
    for r in B:
        w[r] = alt
    for r in C:
        w[r] = 3.0
    sd["stages.1.0.expand.conv.weight"] = w
    gamma = torch.full((96,), 0.1)
    gamma[A] = -5.0  # |gamma| counts
    sd["stages.1.0.expand.bn.weight"] = gamma
    return sd, {"first_k": list(range(48)), "bn_gamma": A, "std": B, "l1": C}


@pytest.mark.parametrize("strategy", R.WIDTH_STRATEGIES)
def test_width_strategies_select_what_they_say(seed_sd, strategy):
    sd, expected = _strategy_seed(seed_sd)
    sel = R.select_channels(48, strategy, sd["stages.1.0.expand.conv.weight"],
                            sd["stages.1.0.expand.bn.weight"])
    assert sel.tolist() == expected[strategy]
    seed = mobilenetv2_arch()
    out, _ = R.remap(sd, seed, _stage(seed, 1, ["k3_e3", "k3_e6"]), width=strategy)
    idx = torch.tensor(expected[strategy])
    p = "stages.1.0"
    # the same selection through expand conv -> BN -> dw conv -> BN -> project inputs
    assert torch.equal(out[f"{p}.expand.conv.weight"], sd[f"{p}.expand.conv.weight"][idx])
    assert torch.equal(out[f"{p}.expand.bn.weight"], sd[f"{p}.expand.bn.weight"][idx])
    assert torch.equal(out[f"{p}.expand.bn.running_mean"], sd[f"{p}.expand.bn.running_mean"][idx])
    assert torch.equal(out[f"{p}.dw.conv.weight"], sd[f"{p}.dw.conv.weight"][idx])
    assert torch.equal(out[f"{p}.dw.bn.running_var"], sd[f"{p}.dw.bn.running_var"][idx])
    assert torch.equal(out[f"{p}.project.conv.weight"], sd[f"{p}.project.conv.weight"][:, idx])
    # stream widths (block input channels) stay first-k
    assert out[f"{p}.expand.conv.weight"].shape[1] == 16


def test_select_channels_edge_cases():
    g = torch.tensor([0.5, -2.0, 2.0, 0.1])
    assert R.select_channels(2, "bn_gamma", bn_gamma=g).tolist() == [1, 2]  # tie: lower first
    assert R.select_channels(9, "l1", conv_weight=torch.ones(4, 2)).tolist() == [0, 1, 2, 3]
    with pytest.raises(R.RemapError, match="unknown width strategy"):
        R.select_channels(2, "random", bn_gamma=g)


# ----------------------------------------------------------------------------- kernel rule
def test_fit_kernel_center_dilated_and_crop():
    w = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    c5 = R.fit_kernel(w, 5)
    assert torch.equal(c5[0, 0, 1:4, 1:4], w[0, 0]) and c5.sum() == w.sum()
    c7 = R.fit_kernel(w, 7)
    assert torch.equal(c7[0, 0, 2:5, 2:5], w[0, 0]) and c7.sum() == w.sum()
    d5 = R.fit_kernel(w, 5, "dilated")
    assert torch.equal(d5[0, 0, ::2, ::2], w[0, 0]) and d5.sum() == w.sum()
    d7 = R.fit_kernel(w, 7, "dilated")
    assert torch.equal(d7[0, 0, ::3, ::3], w[0, 0]) and d7.sum() == w.sum()
    assert d7[0, 0, 0, 0] == 1 and d7[0, 0, 3, 3] == 5 and d7[0, 0, 6, 6] == 9
    big = torch.arange(49.0).view(1, 1, 7, 7)
    assert torch.equal(R.fit_kernel(big, 3), big[..., 2:5, 2:5])
    assert torch.equal(R.fit_kernel(big, 5, "dilated"), big[..., 1:6, 1:6])  # crop: centre
    w5 = torch.randn(2, 1, 5, 5)
    assert torch.equal(R.fit_kernel(w5, 7, "dilated")[..., 1:6, 1:6], w5)  # 5->7: centre


def test_smaller_target_kernel_is_centre_cropped(seed_sd):
    big, _ = R.remap(seed_sd, mobilenetv2_arch(), _stage(mobilenetv2_arch(), 6, ["k7_e6"]))
    seed7 = _stage(mobilenetv2_arch(), 6, ["k7_e6"])
    out, rep = R.remap(big, seed7, mobilenetv2_arch())
    assert torch.equal(out["stages.6.0.dw.conv.weight"], seed_sd["stages.6.0.dw.conv.weight"])
    assert rep.record("stages.6.0.dw.conv.weight").status == "kernel_cropped"


def test_dilated_kernel_strategy_in_remap(seed_sd):
    seed = mobilenetv2_arch()
    out, rep = R.remap(seed_sd, seed, _stage(seed, 6, ["k5_e6"]), kernel="dilated")
    w = out["stages.6.0.dw.conv.weight"]
    assert torch.equal(w[..., ::2, ::2], seed_sd["stages.6.0.dw.conv.weight"])
    assert rep.meta["kernel"] == "dilated"


# ----------------------------------------------------------------------------- super net
def test_super_net_every_candidate_gets_its_own_copy(seed_sd):
    space = detection_space()
    net = SuperNet(space)
    init = net.state_dict()
    out, rep = R.remap(seed_sd, mobilenetv2_arch(), space, target_init=init)
    assert list(out) == list(init)
    net.load_state_dict(out, strict=True)
    p = "stages.3.3.ops"  # layer 3 of the 32->64 stage inherits seed layer 3
    seed_dw = seed_sd["stages.3.3.dw.conv.weight"]
    assert torch.equal(out[f"{p}.k3_e6.dw.conv.weight"], seed_dw)
    assert torch.equal(out[f"{p}.k7_e6.dw.conv.weight"][..., 2:5, 2:5], seed_dw)
    assert torch.equal(out[f"{p}.k5_e3.expand.conv.weight"],
                       seed_sd["stages.3.3.expand.conv.weight"][:192])
    assert out[f"{p}.k3_e6.dw.conv.weight"].data_ptr() != out[f"{p}.k5_e6.dw.conv.weight"
                                                              ].data_ptr()
    # searchable BNs are non-affine: nothing; fixed stem / stage 0: all BN tensors
    assert not any(".ops." in k and ".bn." in k for k in out)
    assert torch.equal(out["stages.0.0.dw.bn.running_var"], seed_sd["stages.0.0.dw.bn.running_var"])
    assert rep.keys_with("left_at_init") == [f"stages.{s}.{l}.alpha"
                                             for s, l in space.searchable_layers()]
    # without target_init the same tensors are produced by the contract
    out2, _ = R.remap(seed_sd, mobilenetv2_arch(), space)
    assert set(out2) == set(out) - {f"stages.{s}.{l}.alpha" for s, l in space.searchable_layers()}


def test_unused_seed_tensors_are_explained(seed_sd):
    """The super net's non-affine searchable BNs, a shallower target stage and the seed's
    1280 head each account for their own unused seed tensors; nothing is left unexplained."""
    sd = OrderedDict(seed_sd)
    sd["head.conv.weight"] = torch.zeros(1280, 320, 1, 1)
    _, rep = R.remap(sd, mobilenetv2_arch(), detection_space())
    by = rep.unused_by_reason()
    assert list(by) == ["bn_free", "head"]
    searchable_bn = [k for k in seed_sd if re.match(r"stages\.[1-6]\.\d+\..*\.bn\.", k)]
    assert sorted(by["bn_free"]) == sorted(searchable_bn) and len(searchable_bn) == 16 * 3 * 5
    assert by["head"] == ["head.conv.weight"]
    text = rep.summary()
    assert f"{len(searchable_bn)} BN tensors of target layers that have no BN parameters" in text
    assert "1 the seed's 1x1 conv to 1280 channels" in text

    shallow = _stage(mobilenetv2_arch(), 3, ("k3_e6", "k3_e6"))  # the seed's stage 3 has 4
    _, rep = R.remap(seed_sd, mobilenetv2_arch(), shallow)
    by = rep.unused_by_reason()
    assert list(by) == ["depth"]
    assert sorted(by["depth"]) == sorted(k for k in seed_sd if re.match(r"stages\.3\.[23]\.", k))
    d = rep.to_dict()
    assert d["unused_by_reason"] == {"depth": by["depth"]}
    assert R.explain_unused(["stem.bn.weight"], set()) == {"other": ["stem.bn.weight"]}


def test_target_bn_affine_fills_searchable_bns(seed_sd):
    out, _ = R.remap(seed_sd, mobilenetv2_arch(), detection_space(), target_bn="affine")
    assert torch.equal(out["stages.1.0.ops.k3_e6.dw.bn.weight"], seed_sd["stages.1.0.dw.bn.weight"])


# ----------------------------------------------------------------------------- report
def test_report_summary_and_json(seed_sd):
    import json

    out, rep = R.remap(seed_sd, mobilenetv2_arch(), fna_retinanet_arch())
    c = rep.counts()
    assert sum(c[s] for s in R.STATUSES) == len(out) == len(rep.records)
    text = rep.summary()
    assert "total" in text and "stage 5" in text and "unused seed tensors" in text
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["counts"] == c and len(d["tensors"]) == len(out)
    assert d["tensors"][0]["key"] == "stem.conv.weight"
    assert not R.RemapReport.disabled("off").enabled


# ----------------------------------------------------------------------------- adapters
def _tv_sd():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2().state_dict()


def _tv_blocks():
    """features index -> (stage, layer) for MobileNetV2."""
    out, i = {}, 1
    for s, n in enumerate(MBV2_DEPTHS):
        for l in range(n):
            out[i] = (s, l)
            i += 1
    return out


# Independent tables: torchvision module suffix inside features.{i}.conv -> other layouts.
_TIMM_E1 = {"0.0": "conv_dw", "0.1": "bn1", "1": "conv_pw", "2": "bn2"}
_TIMM_E6 = {"0.0": "conv_pw", "0.1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2": "conv_pwl",
            "3": "bn3"}
_AUTH_E1 = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}
_AUTH_E6 = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}


def _convert(tv, layout):
    blocks, out = _tv_blocks(), {}
    for k, v in tv.items():
        parts = k.split(".")
        param = parts[-1]
        if parts[0] == "classifier":
            if layout == "timm":
                out[f"classifier.{param}"] = v
            continue
        i = int(parts[1])
        if i == 0 or i == 18:
            j = parts[2]
            if layout == "timm":
                name = {("0", "0"): "conv_stem", ("0", "1"): "bn1", ("18", "0"): "conv_head",
                        ("18", "1"): "bn2"}[(parts[1], j)]
            else:
                name = f"blocks.0.{j}" if i == 0 else f"blocks.8.conv.{j}"
            out[f"{name}.{param}"] = v
            continue
        s, l = blocks[i]
        sub = ".".join(parts[3:-1])
        if layout == "timm":
            out[f"blocks.{s}.{l}.{(_TIMM_E1 if i == 1 else _TIMM_E6)[sub]}.{param}"] = v
        else:
            out[f"blocks.{s + 1}.layers.{l}.op.{(_AUTH_E1 if i == 1 else _AUTH_E6)[sub]}.{param}"] = v
    return out


def _shuffled(sd):
    items = list(sd.items())
    random.Random(0).shuffle(items)
    return OrderedDict(items)


def test_torchvision_adapter_round_trips_with_prefix_and_wrappers():
    tv = _tv_sd()
    canon, arch = R.to_canonical(tv)
    assert arch == mobilenetv2_arch() and arch.meta["layout"] == "torchvision"
    assert "head.conv.weight" in canon and "classifier.weight" in canon
    back = R.from_canonical(canon, "torchvision", arch)
    assert list(back) == list(tv) and all(torch.equal(back[k], tv[k]) for k in tv)
    bare = OrderedDict((k[len("features."):] if k.startswith("features.") else k, v)
                       for k, v in tv.items())
    for variant in (bare, {"model": tv}, {"state_dict": tv},
                    {f"module.{k}": v for k, v in tv.items()}):
        c2, a2 = R.to_canonical(variant, "auto")
        assert list(c2) == list(canon) and a2 == arch
        assert all(torch.equal(c2[k], canon[k]) for k in canon)


@pytest.mark.parametrize("layout", ["timm", "fna_authors"])
def test_timm_and_authors_adapters_round_trip(layout):
    tv = _tv_sd()
    canon, arch = R.to_canonical(tv, "torchvision")
    fake = _shuffled(_convert(tv, layout))
    c2, a2 = R.to_canonical(fake)  # auto-detected, parsed structurally (order shuffled)
    assert a2 == arch and a2.meta["layout"] == layout
    expect = {k: v for k, v in canon.items() if layout == "timm" or not k.startswith("classifier")}
    assert set(c2) == set(expect) and all(torch.equal(c2[k], expect[k]) for k in expect)
    back = R.from_canonical(c2, layout, a2)
    assert set(back) == set(fake) and all(torch.equal(back[k], fake[k]) for k in fake)


def test_efficientnet_lite0_real_weights_adapter():
    from fna_d2.seeds.efficientnet_lite0 import efficientnet_lite0_weights_path

    sd = R.load_seed_file("fna_d2://efficientnet_lite0")
    assert sd.keys() == torch.load(efficientnet_lite0_weights_path(), weights_only=True).keys()
    canon, arch = R.to_canonical(_shuffled(sd))
    assert arch.meta["layout"] == "efficientnet_lite0"
    assert arch == efficientnet_lite0_arch()
    back = R.from_canonical(canon, "efficientnet_lite0", arch)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    # a Lite0 seed into an MBV2-shaped target: widths first-k, kernels centred/cropped
    out, rep = R.remap(canon, arch, fna_retinanet_arch())
    assert torch.equal(out["stages.2.0.dw.conv.weight"][:, :, 1:6, 1:6],
                       canon["stages.2.0.dw.conv.weight"][:144])
    assert out["stages.2.0.project.conv.weight"].shape == (32, 144, 1, 1)
    assert torch.equal(out["stages.2.0.project.conv.weight"],
                       canon["stages.2.0.project.conv.weight"][:32])
    assert rep.counts()["left_at_init"] == 0


def test_canonical_layout_round_trips(seed_sd):
    canon, arch = R.to_canonical(seed_sd, "fna_d2")
    assert arch == mobilenetv2_arch()
    assert R.from_canonical(canon, "fna_d2") == canon


# ----------------------------------------------------------------------------- errors
def test_unknown_layout_lists_keys_and_layouts():
    with pytest.raises(R.RemapError) as e:
        R.to_canonical({"encoder.layer1.weight": torch.zeros(3, 3, 1, 1)})
    assert "encoder.layer1.weight" in str(e.value) and "torchvision" in str(e.value)
    assert "efficientnet_lite0" in str(e.value)
    with pytest.raises(R.RemapError, match="unknown seed layout 'keras'"):
        R.to_canonical(_tv_sd(), "keras")


def test_super_net_weights_are_refused_as_a_seed():
    with pytest.raises(R.RemapError, match="super network"):
        R.to_canonical(SuperNet(detection_space()).state_dict())


def test_stage_count_errors(seed_sd):
    seed = mobilenetv2_arch()
    short = Arch(seed.stages[:6], 32).validate()
    with pytest.raises(R.RemapError, match="the seed has 6 stages but the target has 7"):
        R.remap({k: v for k, v in seed_sd.items() if not k.startswith("stages.6")}, short, seed)
    with pytest.raises(R.RemapError, match="different number of stages: seed 7, target 6"):
        R.remap(seed_sd, seed, short)


def test_missing_seed_key_names_key_and_shape(seed_sd):
    sd = OrderedDict(seed_sd)
    del sd["stages.3.1.dw.conv.weight"]
    with pytest.raises(R.RemapError) as e:
        R.remap(sd, mobilenetv2_arch(), fna_retinanet_arch())
    msg = str(e.value)
    assert "stages.3.1.dw.conv.weight" in msg and "(384, 1, 5, 5)" in msg


def test_target_shape_mismatch_names_both_shapes(seed_sd):
    init = DerivedNet(mobilenetv2_arch()).state_dict()
    with pytest.raises(R.RemapError) as e:
        R.remap(seed_sd, mobilenetv2_arch(), fna_retinanet_arch(), target_init=init)
    assert re.search(r"stages\.2\.0\.dw\.conv\.weight: the architecture implies shape "
                     r"\(144, 1, 7, 7\) but the model has \(144, 1, 3, 3\)", str(e.value))
    init["stem.conv.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(R.RemapError, match=r"stem.conv.weight.*\(32, 3, 3, 3\).*\(16, 3, 3, 3\)"):
        R.remap(seed_sd, mobilenetv2_arch(), mobilenetv2_arch(), target_init=init)


def test_non_depthwise_seed_conv_is_refused(seed_sd):
    tv = _tv_sd()
    tv["features.5.conv.1.0.weight"] = torch.zeros(192, 2, 3, 3)
    with pytest.raises(R.RemapError, match=r"features.5.conv.1.0.weight.*\(192, 2, 3, 3\)"):
        R.to_canonical(tv)
    sd = OrderedDict(seed_sd)
    sd["stages.2.1.dw.conv.weight"] = torch.zeros(144, 2, 3, 3)
    with pytest.raises(R.RemapError, match="depthwise"):
        R.remap(sd, mobilenetv2_arch(), mobilenetv2_arch())


def test_load_seed_file_wrappers_and_bad_files(tmp_path, seed_sd):
    for i, obj in enumerate([seed_sd, {"model": seed_sd}, {"state_dict": seed_sd, "epoch": 3}]):
        p = tmp_path / f"ok{i}.pth"
        torch.save(obj, p)
        assert list(seeds.load_seed_file(str(p))) == list(seed_sd)
    bad = tmp_path / "list.pth"
    torch.save([1, 2, 3], bad)
    with pytest.raises(R.RemapError, match=f"{bad}: not a state dict"):
        seeds.load_seed_file(str(bad))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(R.RemapError, match=f"{text}: cannot be read"):
        seeds.load_seed_file(str(text))
    with pytest.raises(R.RemapError, match="not found"):
        seeds.load_seed_file(str(tmp_path / "missing.pth"))
    with pytest.raises(R.RemapError, match="unknown seed"):
        seeds.load_seed_file("fna_d2://resnet50")
    with pytest.raises(R.RemapError, match="unknown width strategy"):
        R.remap(seed_sd, mobilenetv2_arch(), mobilenetv2_arch(), width="random")


# ----------------------------------------------------------------------------- package
def test_public_api_and_seed_names_reexported():
    """fna_d2.remap keeps its public API (checkpoint, pipeline import from it); the seed-file
    names it re-exports are fna_d2.seeds' own."""
    assert all(hasattr(R, name) for name in R.__all__)
    for name in ("load_seed_file", "resolve_seed_uri", "unwrap_state_dict"):
        assert getattr(R, name) is getattr(seeds, name)
    assert R.resolve_seed_uri("/some/file.pth") == "/some/file.pth"
    with pytest.raises(R.RemapError, match="fna_d2://keras_mobilenetv2, "
                                           "fna_d2://efficientnet_lite0, or a file path"):
        R.resolve_seed_uri("fna_d2://resnet50")
