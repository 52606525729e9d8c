"""int8 post-training quantization (``fna_d2.quant``): on instant-test-sized trained models
(DeepLabv3 on the seed arch, RetinaNet on the searched COCO arch) the int8 copy really holds
quantized convolutions in its backbone and head, its outputs stay close to the float model's,
the TorchScript the CLI writes loads and runs with ``torch.jit.load`` alone, the result JSON is
written, and bad input exits 2 with a one-line error."""
import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from torch import nn
from torch.ao.nn import quantized as nnq

from fna_d2.config import get_fna_cfg
from fna_d2.export import load_trained_model
from fna_d2.quant import (BACKEND, QuantizationError, calibration_batches, quantize_model,
                          quantized_parts, sqnr_db)

from _shared import randomise_bn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT = os.path.join(ROOT, "configs", "instant_test")
MODELS = {
    "seg": (os.path.join(INSTANT, "nuclei_adapt.yaml"),
            ["MODEL.FNA.ARCH", "", "MODEL.FNA.SEED_WEIGHTS", ""]),
    "det": (os.path.join(INSTANT, "trees_adapt.yaml"),
            ["MODEL.FNA.ARCH", os.path.join(ROOT, "configs", "archs", "fna_retinanet_coco.json"),
             "MODEL.FNA.SEED_WEIGHTS", ""]),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each kind randomly initialised (non-trivial BN statistics) and saved as model_final.pth."""
    out = {}
    for kind, (cfg_file, opts) in MODELS.items():
        d = str(tmp_path_factory.mktemp(kind))
        cfg = get_fna_cfg(cfg_file, opts)
        torch.manual_seed(0)
        model = build_model(cfg)
        randomise_bn(model)
        if kind == "det":  # detectron2's head init (std 0.01) gives near-zero box deltas
            for m in model.head.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0, 0.05)
        DetectionCheckpointer(model, save_dir=d).save("model_final")
        out[kind] = (cfg_file, opts + ["MODEL.WEIGHTS", os.path.join(d, "model_final.pth")])
    return out


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _backbone_input(model, batch):
    seen = {}
    hook = model.backbone.register_forward_hook(lambda m, a, o: seen.update(x=a[0]))
    with torch.no_grad():
        model(batch)
    hook.remove()
    return seen["x"]


@pytest.mark.parametrize("kind", ["seg", "det"])
def test_int8_model_holds_quantized_convs_and_stays_close_to_float(trained, kind):
    cfg = get_fna_cfg(*trained[kind])
    model = load_trained_model(cfg)
    calib = calibration_batches(cfg, 4)
    assert sum(len(b) for b in calib) == 4
    qmodel = quantize_model(model, calib)
    for part in quantized_parts(model):
        n_q = sum(isinstance(m, nnq.Conv2d) for m in getattr(qmodel, part).modules())
        n_f = sum(type(m) is nn.Conv2d for m in getattr(qmodel, part).modules())
        n_slow = sum(_slow(m, BACKEND) for m in getattr(model, part).modules()
                     if isinstance(m, nn.Conv2d))
        # all of the backbone but its stem conv and the convs without a fast int8 kernel;
        # the head but its last predictor(s)
        assert n_q > 0 and (n_f == 1 + n_slow if part == "backbone" else n_f < n_q), (
            part, n_q, n_f, n_slow)
    # the float model is left as it was
    assert not any(isinstance(m, nnq.Conv2d) for m in model.modules())
    x = _backbone_input(model, calib[1])
    with torch.no_grad():
        ref, got = model.backbone(x), qmodel.backbone(x)
        assert set(ref) == set(got)
        for name in ref:
            assert sqnr_db(ref[name], got[name]) > 15, name
        if kind == "seg":
            a = model(calib[1])[0]["sem_seg"]
            b = qmodel(calib[1])[0]["sem_seg"]
            assert a.shape == b.shape and sqnr_db(a, b) > 15
        else:
            feats = [ref[f] for f in model.head_in_features]
            (fa, fb), (qa, qb) = model.head(feats), qmodel.head(feats)
            assert sqnr_db(torch.cat([t.flatten() for t in fa]),
                           torch.cat([t.flatten() for t in qa])) > 15
            assert sqnr_db(torch.cat([t.flatten() for t in fb]),
                           torch.cat([t.flatten() for t in qb])) > 15
            out = qmodel(calib[1])[0]["instances"]
            assert out.pred_boxes.tensor.shape[1] == 4


def _slow(conv, backend):
    """A conv the backend has no fast int8 kernel for (docs/quantization.md): depthwise and
    dilated under fbgemm / x86, depthwise 7x7 under qnnpack."""
    dw = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    return dw and (max(conv.kernel_size) > 5 if backend == "qnnpack" else max(conv.dilation) > 1)


@pytest.mark.parametrize("backend", ["fbgemm", "qnnpack"])
def test_convs_without_a_fast_int8_kernel_stay_float(backend):
    """fbgemm's depthwise kernels take no dilation and qnnpack's no 7x7 (28-200x and 4-24x
    slower than float on the benchmark VM): those convs stay float (BN folded), all others
    int8. The searched COCO arch has 7x7 depthwise convs, DeepLabv3 dilates the last stages
    and its ASPP."""
    cfg = get_fna_cfg(MODELS["seg"][0], ["MODEL.FNA.ARCH", MODELS["det"][1][1],
                                          "MODEL.FNA.SEED_WEIGHTS", ""])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    randomise_bn(model)
    qmodel = quantize_model(model, calibration_batches(cfg, 2), backend)
    n_slow = 0
    for part in quantized_parts(model):
        slow = [n for n, m in getattr(model, part).named_modules()
                if isinstance(m, nn.Conv2d) and _slow(m, backend)]
        qmods = dict(getattr(qmodel, part).graph.named_modules())
        quantized = [m for m in qmods.values() if isinstance(m, nnq.Conv2d)]
        assert quantized and not any(_slow(m, backend) for m in quantized), part
        for n in slow:
            # a detectron2 Conv2d (the ASPP's) is traced as Sequential(conv, norm, act), its
            # float conv then fused with the ReLU (BN folded)
            kept = qmods.get(f"{n}.0", qmods.get(n))
            assert not isinstance(kept, nnq.Conv2d) and any(
                type(m) is nn.Conv2d for m in kept.modules()), (part, n, kept)
        n_slow += len(slow)
    assert n_slow > 0
    with torch.no_grad():
        batch = calibration_batches(cfg, 1)[0]
        assert sqnr_db(model(batch)[0]["sem_seg"], qmodel(batch)[0]["sem_seg"]) > 15


def test_cli_writes_a_loadable_int8_torchscript_and_its_json(trained, tmp_path):
    cfg_file, opts = trained["seg"]
    out = str(tmp_path / "q")
    proc = subprocess.run([sys.executable, "-m", "fna_d2.quant", "--config-file", cfg_file,
                           "--calib-images", "2", "--output", out, "--latency-seconds", "0.2",
                           *opts], capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[quant]" in proc.stdout and "int8" in proc.stdout
    info = json.load(open(os.path.join(out, "quant.json")))
    assert info["calibration"]["images"] == 2
    assert info["latency"]["int8"]["median_ms"] > 0 and info["latency"]["float"]["median_ms"] > 0
    assert info["quantized"] == ["backbone", "sem_seg_head"]
    assert info["file_vs_eager_int8_max_abs_diff"] < 1e-3
    ts = torch.jit.load(os.path.join(out, info["file"]))
    assert any("quantized" in str(n.kind()) for n in ts.inlined_graph.nodes())
    x = torch.rand(info["input"]["shape"]) * 255
    with torch.no_grad():
        (logits,) = ts(x)
    assert logits.shape[-2:] == x.shape[-2:] and torch.isfinite(logits).all()


def test_bad_input_exits_2_naming_it(trained, tmp_path):
    cfg_file, opts = trained["seg"]
    missing = str(tmp_path / "none.pth")
    cases = [(["--calib-images", "0"], opts, "--calib-images 0"),
             ([], opts + ["MODEL.WEIGHTS", missing], f"{missing}: file not found")]
    for flags, overrides, message in cases:
        proc = subprocess.run([sys.executable, "-m", "fna_d2.quant", "--config-file", cfg_file,
                               "--output", str(tmp_path / "q"), *flags, *overrides],
                              capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr


def test_quantize_model_refuses_no_calibration_data(trained):
    model = load_trained_model(get_fna_cfg(*trained["seg"]))
    with pytest.raises(QuantizationError, match="no calibration images"):
        quantize_model(model, [])


def test_ssdlite_quantizes_and_detects():
    """SSDLite's head (its own modules per level) is traced whole, not copied per level."""
    cfg = get_fna_cfg(os.path.join(INSTANT, "trees_ssdlite_adapt.yaml"),
                      ["MODEL.FNA.ARCH", "", "MODEL.FNA.SEED_WEIGHTS", ""])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    calib = calibration_batches(cfg, 2)
    qmodel = quantize_model(model, calib)
    for part in quantized_parts(model):
        assert any(isinstance(m, nnq.Conv2d) for m in getattr(qmodel, part).modules()), part
    with torch.no_grad():
        out = qmodel(calib[0])[0]["instances"]
    assert out.pred_boxes.tensor.shape[1] == 4 and torch.isfinite(out.scores).all()
