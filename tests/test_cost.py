"""Params / MAdds counting: hand-computed op, the paper's RetinaNet table, fvcore, cost table,
the command line."""
import os
import subprocess
import sys

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from detectron2.modeling import build_model

from fna_d2.arch import (detection_space, fna_retinanet_arch, mobilenetv2_arch, save_arch,
                         segmentation_space)
from fna_d2.cost import (PAPER_RETINANET, arch_cost, detectron2_model_cost, expected_cost, main,
                         model_cost, op_cost, op_cost_table, paper_retinanet_cfg)
from fna_d2.modeling import DerivedNet, SuperNet, build_op


def test_hand_computed_op():
    # k5_e6, 24 -> 32, stride 2, on 24 x 16 x 16: expand 1x1 24->144 at 16x16, depthwise 5x5
    # at 8x8 (144 groups), project 1x1 144->32 at 8x8
    madds = 24 * 144 * 16 * 16 + 5 * 5 * 144 * 8 * 8 + 144 * 32 * 8 * 8
    assert madds == 1410048
    c, hw = op_cost("k5_e6", 24, 32, 2, 1, (16, 16))
    assert c.madds == madds and hw == (8, 8)
    assert c.params == 24 * 144 + 25 * 144 + 144 * 32 + 2 * (144 + 144 + 32)
    op = build_op("k5_e6", 24, 32, stride=2)
    measured = model_cost(op, torch.zeros(1, 24, 16, 16))
    assert (measured.madds, measured.params) == (c.madds, c.params)
    # dilated, odd size
    c, hw = op_cost("k7_e3", 32, 32, 1, 2, (13, 11))
    m = model_cost(build_op("k7_e3", 32, 32, 1, 2), torch.zeros(1, 32, 13, 11))
    assert c.madds == m.madds and hw == (13, 11)
    assert op_cost("skip", 32, 32, 1, 1, (9, 9))[0].madds == 0


def test_arch_cost_matches_hooks_and_fvcore():
    x = torch.zeros(1, 3, 128, 96)
    for arch in (mobilenetv2_arch(), fna_retinanet_arch()):
        net = DerivedNet(arch, out_features=["c5"]).eval()
        hooks = model_cost(net, x)
        assert hooks == arch_cost(arch, (128, 96))
        fv = FlopCountAnalysis(net, x)
        fv.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        assert fv.by_operator()["conv"] == hooks.madds  # fvcore: one flop = one conv MAdd
    d16 = DerivedNet(mobilenetv2_arch(), out_features=["c5"], output_stride=16)
    assert model_cost(d16, x) == arch_cost(mobilenetv2_arch(), (128, 96), output_stride=16)


@pytest.mark.parametrize("key", ["mobilenetv2", "fna"])
def test_paper_retinanet_numbers(key, tmp_path):
    arch = save_arch(fna_retinanet_arch(), str(tmp_path / "fna.json")) if key == "fna" else ""
    model = build_model(paper_retinanet_cfg("derived" if arch else "seed", arch))
    rep = detectron2_model_cost(model, (800, 1088))
    params, madds = PAPER_RETINANET[key]
    assert abs(rep["total"].params / 1e6 / params - 1) < 0.005
    assert abs(rep["total"].madds / 1e9 / madds - 1) < 0.005
    # in fact to the paper's last digit
    assert round(rep["total"].params / 1e6, 2) == params
    assert round(rep["total"].madds / 1e9, 2) == madds
    assert rep["total"].params == sum(p.numel() for p in model.parameters())
    small = detectron2_model_cost(model, (128, 128))
    assert small == detectron2_model_cost(model, (128, 128), meta=False)  # meta = real run
    bb = arch_cost(fna_retinanet_arch() if arch else mobilenetv2_arch(), (800, 1088))
    assert (rep["backbone"].params, rep["backbone"].madds) == (bb.params, bb.madds)


def test_op_cost_table_shape_and_expected_cost():
    space = detection_space()
    table = op_cost_table(space, (800, 1088))
    assert len(table) == 21 == space.num_searchable
    for (s, i), row in zip(space.searchable_layers(), table):
        cands = space.stages[s].candidates[i]
        assert len(row) == len(cands)
        for op, v in zip(cands, row):
            assert (v == 0) == (op == "skip") and v >= 0
    # first searchable layer: 16->24 s2 at 400x544 in, k3_e3 (GMAdds, no BN)
    want = (16 * 48 * 400 * 544 + 9 * 48 * 200 * 272 + 48 * 24 * 200 * 272) / 1e9
    assert table[0][0] == pytest.approx(want)
    seg16 = op_cost_table(segmentation_space(), (321, 321), output_stride=16)
    assert len(seg16) == 25
    # the last searchable layer (160->320) runs dilated at stride 16 (21x21, not 11x11): k3_e3
    want = (160 * 480 * 21 * 21 + 9 * 480 * 21 * 21 + 480 * 320 * 21 * 21) / 1e9
    assert seg16[-1][0] == pytest.approx(want)
    alphas = [torch.zeros(len(r), requires_grad=True) for r in table]
    cost = expected_cost(alphas, table)
    assert cost.item() == pytest.approx(sum(sum(r) / len(r) for r in table), rel=1e-5)
    cost.backward()
    assert all(a.grad is not None for a in alphas)
    # the super net's alphas plug in directly
    sup = SuperNet(space)
    assert expected_cost(sup.arch_parameters(), table).requires_grad
    with pytest.raises(ValueError, match="21 alpha vectors"):
        expected_cost(alphas, table[:-1])
    for other in ("flops", "params", "latency"):  # latency: fna_d2.latency.latency_table
        with pytest.raises(ValueError, match=rf"unknown cost type '{other}'.*'madds' only"):
            op_cost_table(space, (64, 64), cost=other)


def test_cost_command(tmp_path, capsys):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("MODEL:\n  META_ARCHITECTURE: RetinaNet\n  BACKBONE:\n"
                   "    NAME: build_fna_retinanet_fpn_backbone\n"
                   "  FPN:\n    IN_FEATURES: [c3, c4, c5]\n")
    assert main(["--config-file", str(cfg), "--input-size", "128", "160",
                 "MODEL.FNA.NETWORK", "derived"]) == 0
    out = capsys.readouterr().out
    assert "128x160" in out and "backbone" in out and "fpn" in out and "total" in out


def test_cost_command_reports_bad_input_on_one_line(tmp_path, capsys):
    """An FNAError (here a malformed arch file) is one line on stderr and exit status 2."""
    bad = tmp_path / "bad.txt"
    bad.write_text("[[32, 16], ['k3_e1'], 1]|[[16, 24], ['k9_e6'], 2]")
    cfg = tmp_path / "r.yaml"
    cfg.write_text("MODEL:\n  META_ARCHITECTURE: RetinaNet\n  BACKBONE:\n"
                   "    NAME: build_fna_retinanet_fpn_backbone\n"
                   "  FPN:\n    IN_FEATURES: [c3, c4, c5]\n")
    args = ["--config-file", str(cfg), "--input-size", "64", "64", "MODEL.FNA.NETWORK", "derived",
            "MODEL.FNA.ARCH", str(bad)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("fna_d2.cost: error: ") and "bad.txt" in err and "'k9_e6'" in err
    # the same through ``python -m fna_d2.cost``: no traceback
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = subprocess.run([sys.executable, "-m", "fna_d2.cost"] + args, capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "fna_d2.cost: error: " in out.stderr
    assert "stage 1, layer 0: unknown op 'k9_e6'" in out.stderr
