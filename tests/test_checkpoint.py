"""FNACheckpointer / remap_into_model: real seed weights into the super network and the
published RetinaNet arch, report counts against counts derived from the architecture,
resume without re-remapping, MODEL.WEIGHTS after remapping, disabled remapping, errors,
BN recalibration, and a short RetinaNet training on the tree demo."""
import copy
import json
import logging
import os

import pytest
import torch
from torch import nn

from detectron2.modeling import build_model

from fna_d2.arch import SKIP, Arch, fna_retinanet_arch, parse_op, save_arch
from fna_d2.checkpoint import (FNACheckpointer, find_fna_backbone, recalibrate_bn,
                               remap_into_model)
from fna_d2.config import get_fna_cfg
from fna_d2.errors import CheckpointError, FNAError
from fna_d2.modeling import DerivedNet, SuperNet
from fna_d2.remap import RemapError
from fna_d2.arch import detection_space, mobilenetv2_arch

BASE = os.path.join(os.path.dirname(__file__), "..", "configs", "Base-FNA-RetinaNet.yaml")
SEED_URI = "fna_d2://keras_mobilenetv2"
MBV2_DEPTHS = (1, 2, 3, 4, 3, 3, 1)
# a light RetinaNet so CPU tests stay fast (the backbone is the full FNA backbone)
LIGHT = ["MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1",
         "MODEL.RETINANET.NUM_CLASSES", "1"]


@pytest.fixture(scope="module")
def keras_seed():
    """The converted Keras MobileNetV2 seed (torchvision layout), or skip."""
    try:
        from fna_d2.seeds.keras_mobilenetv2 import seed_weights_path

        path = seed_weights_path("keras_mobilenetv2")
    except Exception as e:  # package missing or conversion impossible here
        pytest.skip(f"Keras MobileNetV2 seed unavailable: {e}")
    sd = torch.load(path, map_location="cpu", weights_only=True)["model"]
    return sd


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    return save_arch(fna_retinanet_arch(), str(tmp_path_factory.mktemp("arch") / "fna.json"))


def _cfg(out, arch_file, network="derived", *opts):
    return get_fna_cfg(BASE, LIGHT + ["MODEL.FNA.NETWORK", network, "MODEL.FNA.ARCH", arch_file,
                                      "MODEL.FNA.SEED_WEIGHTS", SEED_URI, "OUTPUT_DIR", str(out)]
                       + list(opts))


def _backbone(model):
    return model.backbone.bottom_up


# ----------------------------------------------------------------------------- expected counts
def _bn_tensors(prefix_has_nbt: bool) -> int:
    return 5 if prefix_has_nbt else 4


def _layer_statuses(k: int, e: int, with_bn: bool):
    """Statuses of one MBConv (k, e) remapped from a k3_e6 seed layer."""
    w = "width_cropped" if e < 6 else "copied"
    out = ["copied" if e == 6 else w]                      # expand conv
    out += ["kernel_padded" if k > 3 else w]               # dw conv
    out += [w]                                             # project conv
    if with_bn:
        out += [w] * 4 + ["copied"]                        # expand BN (+ num_batches_tracked)
        out += [w] * 4 + ["copied"]                        # dw BN
        out += ["copied"] * 5                              # project BN
    return out


def _expected(target, seed_sd):
    """Report counts computed from the architecture alone (seed: MobileNetV2, all k3;
    every seed BN has 5 tensors; the seed's 1280 head conv is never used)."""
    counts = {s: 0 for s in ("copied", "width_cropped", "kernel_padded", "kernel_cropped",
                             "zero_filled", "left_at_init")}
    n_seed = len(seed_sd)
    used = 6 + 12  # stem conv + BN; stage 0 (dw, project) conv + BN
    counts["copied"] += 18
    per_seed_layer_convs, per_seed_layer_bns = 3, 15
    if isinstance(target, Arch):
        arch = target
        for s, st in enumerate(arch.stages[1:], start=1):
            real = [op for op in st.ops if op != SKIP]
            for op in real:
                k, e = parse_op(op)
                for status in _layer_statuses(k, e, True):
                    counts[status] += 1
            used += len({min(i, MBV2_DEPTHS[s] - 1) for i in range(len(real))}) * (
                per_seed_layer_convs + per_seed_layer_bns)
    else:
        for s, st in enumerate(target.stages[1:], start=1):
            refs = set()
            for i, cands in enumerate(st.candidates):
                refs.add(min(i, MBV2_DEPTHS[s] - 1))
                counts["left_at_init"] += 1  # alpha
                for op in cands:
                    if op != SKIP:
                        for status in _layer_statuses(*parse_op(op), False):
                            counts[status] += 1
            used += len(refs) * per_seed_layer_convs  # searchable BNs get nothing
    counts["unused"] = n_seed - used
    return counts


# ----------------------------------------------------------------------------- real seed
def test_remap_real_seed_into_published_retinanet_arch(tmp_path, keras_seed, arch_file):
    cfg = _cfg(tmp_path, arch_file)
    model = build_model(cfg)
    ck = FNACheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg)
    ck.resume_or_load(cfg.MODEL.WEIGHTS, resume=True)
    rep = ck.remap_report
    assert rep is not None and rep.enabled
    assert rep.counts() == _expected(fna_retinanet_arch().skips_to_end(), keras_seed)
    assert rep.meta["backbone"] == "backbone.bottom_up"
    bb = _backbone(model).state_dict()
    assert torch.equal(bb["stem.conv.weight"], keras_seed["features.0.0.weight"])
    # 24->32 stage, layer 0 is k7_e6: the seed 3x3 sits at the centre of zeros
    dw = bb["stages.2.0.dw.conv.weight"]
    assert torch.equal(dw[..., 2:5, 2:5], keras_seed["features.4.conv.1.0.weight"])
    assert dw.abs().sum() == keras_seed["features.4.conv.1.0.weight"].abs().sum()
    # 96->160 stage, layer 2 is k7_e3 (seed features.16): first 3*160 channels
    assert torch.equal(bb["stages.5.2.expand.bn.running_var"],
                       keras_seed["features.16.conv.0.1.running_var"][:480])
    # report files
    d = json.load(open(tmp_path / "remap_report.json"))
    assert d["enabled"] and d["counts"] == rep.counts()
    assert "total" in (tmp_path / "remap_report.txt").read_text()


def test_remap_real_seed_into_super_network(tmp_path, keras_seed, arch_file):
    cfg = _cfg(tmp_path, arch_file, "super")
    model = build_model(cfg)
    FNACheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg).resume_or_load("", resume=False)
    d = json.load(open(tmp_path / "remap_report.json"))
    space = detection_space()
    assert d["counts"] == _expected(space, keras_seed)
    bb = _backbone(model).state_dict()
    assert torch.equal(bb["stages.1.3.ops.k3_e6.dw.conv.weight"],
                       keras_seed["features.3.conv.1.0.weight"])  # seed layer min(3, 1)
    assert torch.equal(bb["stages.0.0.dw.bn.weight"], keras_seed["features.1.conv.0.1.weight"])


def test_seed_backbone_gets_the_seed_itself(tmp_path, keras_seed, arch_file):
    cfg = _cfg(tmp_path, arch_file, "seed")
    model = build_model(cfg)
    rep = remap_into_model(model, cfg)
    bb = _backbone(model).state_dict()
    assert rep.counts()["copied"] == len(bb)
    assert all(torch.equal(v, keras_seed[k]) for k, v in bb.items())
    head = [k for k in keras_seed if k.startswith("features.18.")]
    assert sorted(rep.unused) == sorted(k.replace("features.18.0.", "head.conv.")
                                        .replace("features.18.1.", "head.bn.") for k in head)


# ----------------------------------------------------------------------------- checkpointer
def test_resume_does_not_remap_again(tmp_path, keras_seed, arch_file):
    cfg = _cfg(tmp_path, arch_file)
    model = build_model(cfg)
    ck = FNACheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg)
    ck.resume_or_load("", resume=True)
    with torch.no_grad():
        _backbone(model).stem.conv.weight.fill_(0.5)  # "trained" weights
    ck.save("model_0000009")
    os.remove(tmp_path / "remap_report.json")

    model2 = build_model(cfg)
    ck2 = FNACheckpointer(model2, cfg.OUTPUT_DIR, cfg=cfg)
    ck2.resume_or_load("", resume=True)
    assert ck2.remap_report is None
    assert not (tmp_path / "remap_report.json").exists()
    assert (_backbone(model2).stem.conv.weight == 0.5).all()
    for k, v in model.state_dict().items():
        assert torch.equal(model2.state_dict()[k], v), k
    # resume=False is a fresh start by request: the seed is remapped again
    ck3 = FNACheckpointer(build_model(cfg), cfg.OUTPUT_DIR, cfg=cfg)
    ck3.resume_or_load("", resume=False)
    assert ck3.remap_report is not None and (tmp_path / "remap_report.json").exists()


def test_partial_model_weights_are_loaded_after_remapping(tmp_path, keras_seed, arch_file):
    """MODEL.WEIGHTS without the backbone (here: the heads and the FPN of another run): the
    seed is remapped into the backbone first, then MODEL.WEIGHTS loads the rest."""
    cfg = _cfg(tmp_path / "a", arch_file)
    model = build_model(cfg)
    with torch.no_grad():
        model.head.cls_score.weight.fill_(0.25)
    partial = {k: v for k, v in model.state_dict().items()
               if not k.startswith("backbone.bottom_up.")}
    os.makedirs(tmp_path / "a")
    torch.save({"model": partial}, tmp_path / "a" / "heads.pth")
    cfg2 = _cfg(tmp_path / "b", arch_file, "derived", "MODEL.WEIGHTS",
                str(tmp_path / "a" / "heads.pth"))
    model2 = build_model(cfg2)
    ck2 = FNACheckpointer(model2, cfg2.OUTPUT_DIR, cfg=cfg2)
    ck2.resume_or_load(cfg2.MODEL.WEIGHTS, resume=True)
    assert ck2.remap_report.enabled  # remapped first ...
    assert torch.equal(_backbone(model2).stem.conv.weight, keras_seed["features.0.0.weight"])
    assert (model2.head.cls_score.weight == 0.25).all()  # ... then MODEL.WEIGHTS
    assert all(torch.equal(model2.state_dict()[k], v) for k, v in partial.items())


def test_whole_model_weights_are_loaded_without_the_seed(tmp_path, arch_file):
    """MODEL.WEIGHTS holding the whole backbone (a trained model): loaded as it is, the seed
    is neither read (SEED_WEIGHTS names a missing file here) nor remapped, no report."""
    cfg = _cfg(tmp_path / "a", arch_file, "derived", "MODEL.FNA.SEED_WEIGHTS", "")
    torch.manual_seed(3)
    model = build_model(cfg)
    os.makedirs(tmp_path / "a")
    FNACheckpointer(model, str(tmp_path / "a")).save("trained", iteration=5)
    cfg2 = _cfg(tmp_path / "b", arch_file, "derived", "MODEL.FNA.SEED_WEIGHTS",
                str(tmp_path / "no_such_seed.pth"), "MODEL.WEIGHTS",
                str(tmp_path / "a" / "trained.pth"))
    torch.manual_seed(4)
    model2 = build_model(cfg2)
    ck2 = FNACheckpointer(model2, cfg2.OUTPUT_DIR, cfg=cfg2)
    ck2.resume_or_load(cfg2.MODEL.WEIGHTS, resume=False)
    assert ck2.remap_report is None and not (tmp_path / "b").exists()
    assert all(torch.equal(model2.state_dict()[k], v) for k, v in model.state_dict().items())


def test_disabled_remapping_keeps_random_init_and_says_so(tmp_path, arch_file):
    cfg = _cfg(tmp_path, arch_file, "derived", "MODEL.FNA.REMAP.ENABLED", "False")
    model = build_model(cfg)
    before = copy.deepcopy(model.state_dict())
    ck = FNACheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg)
    ck.resume_or_load("", resume=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    d = json.load(open(tmp_path / "remap_report.json"))
    assert d["enabled"] is False and "ENABLED is False" in d["meta"]["reason"]
    assert "disabled" in (tmp_path / "remap_report.txt").read_text()


def test_no_seed_weights_behaves_like_detection_checkpointer(tmp_path, arch_file):
    cfg = _cfg(tmp_path, arch_file, "derived", "MODEL.FNA.SEED_WEIGHTS", "")
    model = build_model(cfg)
    before = copy.deepcopy(model.state_dict())
    ck = FNACheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg)
    assert ck.resume_or_load("", resume=True) == {}
    assert ck.remap_report is None and not (tmp_path / "remap_report.json").exists()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_bad_seed_file_and_model_without_fna_backbone(tmp_path, arch_file):
    bad = tmp_path / "seed.txt"
    bad.write_text("not weights")
    cfg = _cfg(tmp_path, arch_file, "derived", "MODEL.FNA.SEED_WEIGHTS", str(bad))
    with pytest.raises(RemapError, match="seed.txt: cannot be read"):
        FNACheckpointer(build_model(cfg), cfg.OUTPUT_DIR, cfg=cfg).resume_or_load("")
    torch.save({"model": [1, 2]}, tmp_path / "seed.pth")
    cfg = _cfg(tmp_path, arch_file, "derived", "MODEL.FNA.SEED_WEIGHTS",
               str(tmp_path / "seed.pth"))
    with pytest.raises(RemapError, match="seed.pth: not a state dict"):
        remap_into_model(build_model(cfg), cfg)
    with pytest.raises(RemapError, match="no FNA backbone"):
        remap_into_model(nn.Sequential(nn.Conv2d(3, 8, 3)), cfg)


def test_find_backbone_through_wrappers(arch_file, tmp_path):
    model = build_model(_cfg(tmp_path, arch_file))
    path, bb = find_fna_backbone(nn.DataParallel(model))
    assert path == "backbone.bottom_up" and isinstance(bb, DerivedNet)


# ----------------------------------------------------------------------------- atomic saves
class _Interrupted(RuntimeError):
    pass


def test_a_save_that_fails_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A save killed after writing part of the file leaves the last checkpoint, its
    ``last_checkpoint`` tag and the directory as they were."""
    ck = FNACheckpointer(nn.Linear(2, 2), str(tmp_path))
    ck.save("model_a")
    good = (tmp_path / "model_a.pth").read_bytes()

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise _Interrupted("killed while saving")

    monkeypatch.setattr(torch, "save", torn_save)
    for name in ("model_a", "model_b"):
        with pytest.raises(_Interrupted):
            ck.save(name)
    assert (tmp_path / "model_a.pth").read_bytes() == good
    assert (tmp_path / "last_checkpoint").read_text() == "model_a.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_a.pth"]
    monkeypatch.undo()
    assert ck.get_checkpoint_file() == str(tmp_path / "model_a.pth")
    assert ck.load(ck.get_checkpoint_file()) == {}


# ----------------------------------------------------------------------------- truncated files
def _truncate(path, keep: float = 0.5) -> None:
    """Cut a file as a run killed while copying it would leave it."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _linear_checkpoints(tmp_path, iterations):
    """A model and one checkpoint per iteration (weights = the iteration), oldest first."""
    model = nn.Linear(3, 2)
    ck = FNACheckpointer(model, str(tmp_path))
    for i, it in enumerate(iterations):
        with torch.no_grad():
            model.weight.fill_(it)
        ck.save(f"model_{it:07d}", iteration=it)
        os.utime(tmp_path / f"model_{it:07d}.pth", (1000 + i, 1000 + i))
    return model


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_truncated_last_checkpoint_resumes_from_the_newest_readable(tmp_path):
    """last_checkpoint names a truncated file: the newest readable checkpoint before it is
    resumed, and a warning names both files."""
    _linear_checkpoints(tmp_path, (4, 9, 14))
    _truncate(tmp_path / "model_0000014.pth")
    with pytest.raises(RuntimeError, match="central directory"):  # what torch says of it
        torch.load(tmp_path / "model_0000014.pth", weights_only=True)
    model = nn.Linear(3, 2)
    ck = FNACheckpointer(model, str(tmp_path))
    records = _Records()
    logging.getLogger("fna_d2.checkpoint").addHandler(records)
    try:
        extra = ck.resume_or_load("", resume=True)
    finally:
        logging.getLogger("fna_d2.checkpoint").removeHandler(records)
    assert extra["iteration"] == 9 and (model.weight == 9).all()
    [msg] = [m for m in records.messages if "cannot be read" in m]
    assert str(tmp_path / "model_0000014.pth") in msg and str(tmp_path / "model_0000009.pth") in msg


def test_no_readable_checkpoint_is_an_error_naming_the_file_and_the_fix(tmp_path):
    _linear_checkpoints(tmp_path, (4,))
    _truncate(tmp_path / "model_0000004.pth", 0.9)
    (tmp_path / "notes.pth").write_bytes(b"not a checkpoint")
    ck = FNACheckpointer(nn.Linear(3, 2), str(tmp_path))
    with pytest.raises(CheckpointError) as e:
        ck.resume_or_load("", resume=True)
    msg = str(e.value)
    assert isinstance(e.value, FNAError)
    assert str(tmp_path / "model_0000004.pth") in msg and "central directory" in msg
    assert str(tmp_path / "last_checkpoint") in msg and "delete" in msg


def test_a_truncated_model_weights_file_is_named(tmp_path):
    _linear_checkpoints(tmp_path, (4,))
    _truncate(tmp_path / "model_0000004.pth")
    ck = FNACheckpointer(nn.Linear(3, 2), "")
    with pytest.raises(CheckpointError, match="model_0000004.pth: cannot be read"):
        ck.resume_or_load(str(tmp_path / "model_0000004.pth"), resume=False)


# ----------------------------------------------------------------------------- BN recalibration
def test_recalibrate_bn_sets_population_statistics():
    torch.manual_seed(0)
    net = DerivedNet(mobilenetv2_arch()).eval()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(2, 3, 32, 32, generator=g) * 2 + 1 for _ in range(3)]
    assert recalibrate_bn(net, batches, 3) == sum(
        isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert not net.training  # mode restored
    with torch.no_grad():
        y = torch.cat([net.stem.conv(x) for x in batches])
    torch.testing.assert_close(net.stem.bn.running_mean, y.mean(dim=(0, 2, 3)),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net.stem.bn.running_var, y.var(dim=(0, 2, 3), unbiased=False),
                               rtol=1e-3, atol=1e-5)
    sup = SuperNet(detection_space())
    assert recalibrate_bn(sup, batches[:1], 1) == 3  # stem + stage 0: searchable BNs skipped


def test_checkpointer_recalibrates_bn_when_asked(tmp_path, keras_seed):
    """A bare backbone as the model: the checkpointer finds it, remaps, recalibrates."""
    cfg = get_fna_cfg(BASE, ["MODEL.FNA.SEED_WEIGHTS", SEED_URI, "OUTPUT_DIR", str(tmp_path),
                             "MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS", "2"])
    net = DerivedNet(mobilenetv2_arch())
    loader = [torch.randn(2, 3, 32, 32) for _ in range(2)]
    ck = FNACheckpointer(net, str(tmp_path), cfg=cfg, bn_data_loader=loader)
    ck.resume_or_load("", resume=False)
    assert not torch.equal(net.stem.bn.running_mean, keras_seed["features.0.1.running_mean"])
    assert torch.equal(net.stem.bn.weight, keras_seed["features.0.1.weight"])
    d = json.load(open(tmp_path / "remap_report.json"))
    assert d["meta"]["bn_recalibration"]["iters"] == 2


# ----------------------------------------------------------------------------- training
def _train_losses(out, arch_file, data, enabled: bool, iters: int):
    """Losses of ``iters`` SGD steps of a light RetinaNet on one fixed batch of tree tiles."""
    from detectron2.utils.events import EventStorage

    cfg = _cfg(out, arch_file, "derived", "MODEL.FNA.REMAP.ENABLED", str(enabled),
               # the Keras seed's preprocessing: x / 127.5 - 1
               "MODEL.PIXEL_MEAN", "[127.5, 127.5, 127.5]", "MODEL.PIXEL_STD",
               "[127.5, 127.5, 127.5]")
    torch.manual_seed(0)  # same head init in both runs
    model = build_model(cfg).train()
    FNACheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg).resume_or_load("", resume=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    with EventStorage():
        for _ in range(iters):
            loss = sum(model(data).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses


@pytest.mark.slow
def test_remapped_retinanet_trains_faster_than_random_init(tmp_path, keras_seed, arch_file):
    """Tree demo: with the same head init and data, the remapped backbone reaches a much
    lower loss within a few steps than the random one (FNA's point: remapping replaces
    ImageNet pre-training of the target network)."""
    from detectron2.data import DatasetMapper, transforms as T
    from detectron2.data.datasets import load_coco_json

    demo = pytest.importorskip("fna_d2.data.demo")
    try:
        root = demo.ensure_demo_data("fna_trees_train", root=str(tmp_path / "datasets"))
    except Exception as e:  # the demo's source package is missing here
        pytest.skip(f"tree demo data unavailable: {e}")
    dicts = load_coco_json(os.path.join(root, "annotations", "instances_train.json"),
                           os.path.join(root, "images"))[:2]
    for d in dicts:
        for a in d["annotations"]:
            a["category_id"] = 0  # the one class, contiguous
    mapper = DatasetMapper(is_train=True, augmentations=[T.ResizeShortestEdge(96, 400)],
                           image_format="RGB")
    data = [mapper(copy.deepcopy(d)) for d in dicts]
    iters = 12
    remapped = _train_losses(tmp_path / "remap", arch_file, data, True, iters)
    random_init = _train_losses(tmp_path / "random", arch_file, data, False, iters)
    last = slice(iters - 3, iters)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(remapped[last]) < 0.75 * mean(random_init[last]), (remapped, random_init)
