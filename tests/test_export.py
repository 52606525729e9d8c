"""Export: DerivedNet to TorchScript (script and trace) and ONNX (TorchScript-based exporter,
onnxruntime); ``python -m fna_d2.export`` of a trained RetinaNet and DeepLabv3 (TorchScript and
ONNX, run back by their own runtimes and compared with detectron2's DefaultPredictor), its
errors and exit codes, detection parity under reordering, and scripting of the DeepLabv3
network."""
import io
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from PIL import Image
from torch import nn

import fna_d2.export.core
from fna_d2.arch import fna_retinanet_arch, mobilenetv2_arch
from fna_d2.config import get_fna_cfg
from fna_d2.export import compare_outputs, main as export_main
from fna_d2.modeling import DerivedNet, MobileNetV2Seed
from _shared import randomise_bn


class TupleOutputs(nn.Module):
    """Backbone -> tuple of its outputs in ``output_shape()`` order (ONNX needs flat outputs)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.names = list(backbone.output_shape())

    def forward(self, x: torch.Tensor):
        out = self.backbone(x)
        return tuple(out[n] for n in self.names)


def _net(**kw) -> DerivedNet:
    torch.manual_seed(0)
    net = DerivedNet(fna_retinanet_arch(), **kw)
    g = torch.Generator().manual_seed(1)
    for m in net.modules():  # non-trivial BN so outputs are O(1) and parity means something
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net.eval()


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def _quiet():
    warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))


def test_torchscript_script_and_trace():
    net = _net(out_features=["c2", "c3", "c4", "c5"])
    x = torch.randn(1, 3, 96, 128)
    with warnings.catch_warnings():
        _quiet()
        scripted = torch.jit.script(net)
        traced = torch.jit.trace(TupleOutputs(net), x, check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    with torch.no_grad():
        ref = net(x)
        assert ref["c5"].abs().max() > 0.1
        x2 = torch.randn(2, 3, 64, 160)
        ref2 = net(x2)
        for name, t in zip(TupleOutputs(net).names, traced(x2)):
            _close(t, ref2[name])
        for k in ref:
            _close(scripted(x)[k], ref[k])
            _close(loaded(x2)[k], ref2[k])
    # frozen (FrozenBN) and dilated nets script too; so does the seed
    with warnings.catch_warnings():
        _quiet()
        torch.jit.script(DerivedNet(mobilenetv2_arch(), freeze_at=2, output_stride=16).eval())
        seed = MobileNetV2Seed(out_features=["c5"]).eval()
        s = torch.jit.script(seed)
    with torch.no_grad():
        _close(s(x)["c5"], seed(x)["c5"])


@pytest.mark.parametrize("output_stride", [32, 16])
def test_onnx_export_parity(output_stride):
    onnx = pytest.importorskip("onnx")
    net = _net(out_features=["c3", "c4", "c5"], output_stride=output_stride)
    model = TupleOutputs(net).eval()
    x = torch.randn(1, 3, 128, 128)
    f = io.BytesIO()
    with warnings.catch_warnings():
        _quiet()
        # the dynamo exporter needs onnxscript, which is not installed: use the TorchScript one
        torch.onnx.export(model, (x,), f, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=model.names,
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}})
    assert model.training is False and net.training is False
    proto = onnx.load_from_string(f.getvalue())
    onnx.checker.check_model(proto)
    assert [o.name for o in proto.graph.output] == ["c3", "c4", "c5"]
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    for inp in (x, torch.randn(2, 3, 96, 160)):
        got = sess.run(None, {"image": inp.numpy()})
        with torch.no_grad():
            ref = model(inp)
        for g, r in zip(got, ref):
            assert g.shape == tuple(r.shape)
            _close(torch.from_numpy(g), r)


# --- python -m fna_d2.export: trained detector and segmentor, TorchScript and ONNX -----------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT = os.path.join(ROOT, "configs", "instant_test")
#: (config, overrides) of the two trained-model kinds: RetinaNet on the searched COCO arch,
#: DeepLabv3 on the seed arch; no seed weights (the exported weights are the checkpoint's)
MODELS = {
    "det": (os.path.join(INSTANT, "trees_adapt.yaml"),
            ["MODEL.FNA.ARCH", os.path.join(ROOT, "configs", "archs", "fna_retinanet_coco.json"),
             "MODEL.FNA.SEED_WEIGHTS", ""]),
    "seg": (os.path.join(INSTANT, "nuclei_adapt.yaml"),
            ["MODEL.FNA.ARCH", "", "MODEL.FNA.SEED_WEIGHTS", ""]),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A randomly initialised model of each kind saved by detectron2's checkpointer as
    ``model_final.pth`` (the detector's convolutions re-initialised so that its scores spread,
    as a trained one's do; the segmentor's BN statistics and classifier too), and a 64 x 64 test
    image for the segmentor (its test size)."""
    out = {}
    for kind, (cfg_file, opts) in MODELS.items():
        d = str(tmp_path_factory.mktemp(kind))
        cfg = get_fna_cfg(cfg_file, opts)
        torch.manual_seed(0)
        model = build_model(cfg)
        if kind == "det":  # the backbone's own init (made for remapping) scores all alike
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)
            nn.init.normal_(model.head.cls_score.weight, 0, 0.003)
        else:
            randomise_bn(model)
            nn.init.normal_(model.sem_seg_head.predictor.weight, 0, 0.1)
        DetectionCheckpointer(model, save_dir=d).save("model_final")
        out[kind] = (cfg_file, opts + ["MODEL.WEIGHTS", os.path.join(d, "model_final.pth")], d)
    img = (np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8")
    png = os.path.join(out["seg"][2], "sample.png")
    Image.fromarray(img).save(png)
    out["seg_image"] = png
    return out


def _cli(cfg_file, opts, fmt, out, *extra):
    return subprocess.run([sys.executable, "-m", "fna_d2.export", "--config-file", cfg_file,
                           "--format", fmt, "--output", out, *extra, *opts],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=800)


def _env():
    """This process's environment as it is now (DETECTRON2_DATASETS may have been pointed at a
    session's demo data after import), with the repository importable."""
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run_exported(fmt, path, x):
    """The exported file run by its own runtime (not fna_d2's runner)."""
    assert os.path.getsize(path) > 0
    if fmt == "torchscript":
        with torch.no_grad():
            return [t for t in torch.jit.load(path)(x)]
    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(path)
    try:
        import onnxruntime as ort
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        outs = ReferenceEvaluator(path).run(None, {"image": x.numpy()})
    else:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {"image": x.numpy()})
    return [torch.from_numpy(np.asarray(o)) for o in outs]


def _exported(trained, kind, fmt, tmp_path, *extra):
    cfg_file, opts, _ = trained[kind]
    out = str(tmp_path / f"{kind}_{fmt}")
    proc = _cli(cfg_file, opts, fmt, out, *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "max abs diff" in proc.stdout
    info = json.load(open(os.path.join(out, "export.json")))
    assert info["parity"]["ok"] and info["format"] == fmt
    return get_fna_cfg(cfg_file, opts), info, os.path.join(out, info["file"])


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_trained_detector_exports_from_the_command_line(trained, fmt, tmp_path):
    cfg, info, path = _exported(trained, "det", fmt, tmp_path)
    assert info["outputs"] == ["boxes", "scores", "classes"] and info["task"] == "detection"
    # default sample: the first image of DATASETS.TEST[0], resized as at test time
    first = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]["file_name"]
    assert info["sample_image"] == os.path.abspath(first)
    _, h, w = info["input"]["shape"]
    assert min(h, w) == cfg.INPUT.MIN_SIZE_TEST
    boxes, scores, classes = _run_exported(fmt, path, _resized(first, cfg, h, w))
    # oracle: detectron2's DefaultPredictor (its own loading, resizing and postprocessing),
    # boxes back in the resized image's coordinates
    ref = DefaultPredictor(cfg)(read_image(first, format="BGR"))["instances"]
    oh, ow = ref.image_size
    ref_boxes = ref.pred_boxes.tensor * torch.tensor([w / ow, h / oh, w / ow, h / oh])
    assert len(ref) == len(scores) >= 5 and float(ref.scores.std()) > 1e-3
    torch.testing.assert_close(scores.sort().values, ref.scores.sort().values, rtol=0,
                               atol=1e-4)
    assert sorted(classes.tolist()) == sorted(ref.pred_classes.tolist())
    # every eager box has an exported one within a few hundredths of a pixel
    dist = (ref_boxes[:, None, :] - boxes[None]).abs().amax(dim=2).amin(dim=1)
    assert float(dist.max()) < 0.05


def _resized(path, cfg, h, w):
    """The image at ``path`` as the export's input: INPUT.FORMAT channels, 3 x h x w, 0-255,
    resized with detectron2's ResizeShortestEdge (the test-time resize)."""
    img = read_image(path, format=cfg.INPUT.FORMAT)
    img = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST
                               ).get_transform(img).apply_image(img)
    assert img.shape[:2] == (h, w)
    return torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)).astype("float32"))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_trained_segmentor_exports_from_the_command_line(trained, fmt, tmp_path):
    png = trained["seg_image"]
    cfg, info, path = _exported(trained, "seg", fmt, tmp_path, "--sample-image", png)
    assert info["outputs"] == ["sem_seg"] and info["input"]["shape"] == [3, 64, 64]
    x = torch.as_tensor(np.asarray(Image.open(png).convert("RGB")).transpose(2, 0, 1)
                        .astype("float32").copy())  # nuclei configs: INPUT.FORMAT RGB
    (logits,) = _run_exported(fmt, path, x)
    ref = DefaultPredictor(cfg)(np.asarray(Image.open(png).convert("RGB"))[:, :, ::-1])
    ref = ref["sem_seg"]
    assert logits.shape == ref.shape == (2, 64, 64) and float(ref.std()) > 1e-3
    torch.testing.assert_close(logits, ref, rtol=0, atol=1e-3 * max(1.0, float(ref.abs().max())))


def test_missing_or_unfitting_weights_exit_2_naming_the_file(trained, tmp_path, capsys):
    cfg_file, opts, _ = trained["seg"]
    missing = str(tmp_path / "no_such" / "model_final.pth")
    argv = ["--config-file", cfg_file, "--format", "onnx", "--output", str(tmp_path / "x")]
    assert export_main(argv + opts + ["MODEL.WEIGHTS", missing]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fna_d2.export: error: MODEL.WEIGHTS = {missing}: file not found"]
    det_weights = trained["det"][1][-1]  # a detector's weights for the segmentor's config
    assert export_main(argv + opts + ["MODEL.WEIGHTS", det_weights]) == 2
    err = capsys.readouterr().err
    assert det_weights in err and "does not fit the model the config builds" in err
    assert not os.path.exists(tmp_path / "x" / "model.onnx")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_parity_outside_the_tolerance_exits_1_and_keeps_the_file(trained, tmp_path, capsys,
                                                                  monkeypatch):
    real = fna_d2.export.core.load_export

    def off_by_one(fmt, path):
        run = real(fmt, path)
        return lambda x: [t + 1 for t in run(x)]

    monkeypatch.setattr(fna_d2.export.core, "load_export", off_by_one)
    cfg_file, opts, _ = trained["seg"]
    out = str(tmp_path / "e")
    assert export_main(["--config-file", cfg_file, "--format", "torchscript", "--output", out,
                        "--sample-image", trained["seg_image"]] + opts) == 1
    assert "OUTSIDE the tolerance" in capsys.readouterr().out
    info = json.load(open(os.path.join(out, "export.json")))
    assert not info["parity"]["ok"] and info["parity"]["max_abs_diff"] == pytest.approx(1.0)
    assert os.path.getsize(os.path.join(out, "model.ts")) > 0


def test_detection_parity_tolerates_reordering_not_missing_or_moved_boxes():
    names = ("boxes", "scores", "classes")
    boxes = torch.tensor([[0., 0., 10., 10.], [5., 5., 20., 20.], [30., 30., 40., 44.]])
    scores = torch.tensor([0.9, 0.5000001, 0.5])
    classes = torch.tensor([0, 1, 1])
    ref = [boxes, scores, classes]
    swapped = [boxes[[0, 2, 1]], torch.tensor([0.9, 0.5000001, 0.5]), classes[[0, 2, 1]]]
    p = compare_outputs(names, ref, swapped, 1e-3, detection=True)
    assert p.ok and p.method.startswith("detections matched") and p.max_abs_diff < 1e-3
    moved = [boxes + torch.tensor([0., 0., 0., 3.]), scores, classes]
    p = compare_outputs(names, ref, moved, 1e-3, detection=True)
    # only the 0.9 detection must be on both sides (the others are within the tolerance of the
    # lowest score); its box moved by 3 px
    assert not p.ok and p.unmatched == 2 and p.max_abs_diff == pytest.approx(3.0)
    fewer = [boxes[:2], scores[:2], classes[:2]]  # the lowest eager score may fall off the end
    assert compare_outputs(names, ref, fewer, 1e-3, detection=True).ok
    lost = [boxes[1:], scores[1:], classes[1:]]  # but not the best detection
    p = compare_outputs(names, ref, lost, 1e-3, detection=True)
    assert not p.ok and p.unmatched == 1 and p.max_abs_diff == float("inf")
    seg = compare_outputs(("sem_seg",), [scores], [scores + 2e-3], 1e-3, detection=False)
    assert not seg.ok and seg.outputs[0].max_abs_diff == pytest.approx(2e-3, abs=1e-6)


def test_segmentation_network_scripts():
    """The DeepLabv3 network (backbone + ASPP head) compiles with torch.jit.script and
    matches eager; the ASPP's activation was ``F.relu``, a function attribute TorchScript
    cannot compile."""
    cfg_file, opts = MODELS["seg"]
    torch.manual_seed(0)
    model = build_model(get_fna_cfg(cfg_file, opts)).eval()
    randomise_bn(model)

    class Net(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.backbone, self.head = m.backbone, m.sem_seg_head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits, _ = self.head(self.backbone(x))
            assert logits is not None
            return logits

    net = Net(model).eval()
    with warnings.catch_warnings():
        _quiet()
        scripted = torch.jit.script(net)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = net(x)
        assert ref.shape == (1, 2, 64, 96) and float(ref.std()) > 0
        _close(scripted(x), ref)
        y = torch.randn(2, 3, 48, 80)  # scripted, not traced: other sizes work too
        _close(scripted(y), net(y))
