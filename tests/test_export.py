"""DerivedNet export: TorchScript (script and trace) and ONNX (legacy exporter, onnxruntime)."""
import io
import warnings

import pytest
import torch
from torch import nn

from fna_d2.arch import fna_retinanet_arch, mobilenetv2_arch
from fna_d2.modeling import DerivedNet, MobileNetV2Seed


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
