"""Mixed precision (``SOLVER.AMP``) in the search and in adaptation, on CPU: bfloat16 autocast
really runs the convolutions in bfloat16 while the alphas and the cost term stay float32, a
bfloat16 search resumes bit-exactly, the float16 gradient scalers are checkpointed and unscale
before their optimizers step (the global-norm clip included), and bad settings are refused
naming the key."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils.events import EventStorage

from fna_d2.engine import FNATrainer, build_trainer
from fna_d2.engine.amp import AmpSettings, AutocastTrainer, amp_settings
from fna_d2.errors import ConfigError
from fna_d2.modeling.supernet import MixedOp

from _search_cfg import KillAfter, Killed, search_cfg

#: one torch thread for the whole module (see conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

BF16 = {"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.PRECISION": "bfloat16"}


def _alphas(trainer):
    return [a.detach().clone() for a in trainer.net.arch_parameters()]


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_run(a, b) -> None:
    assert all(torch.equal(x, y) for x, y in zip(_alphas(a), _alphas(b)))
    pa, pb = _params(a.model), _params(b.model)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def _record(seen):
    def hook(mod, inputs, output):
        if mod.training:  # the training forward passes, not the final evaluation
            seen.add(output.dtype)
    return hook


def _conv_dtypes(model: nn.Module, within=nn.Module):
    """A set that collects the output dtype of every conv under a ``within`` module."""
    seen = set()
    for m in model.modules():
        if isinstance(m, within):
            for c in m.modules():
                if isinstance(c, nn.Conv2d):
                    c.register_forward_hook(_record(seen))
    return seen


def _as_float16(trainer) -> None:
    """float16 autocast on CPU, which ``SOLVER.AMP`` refuses (bfloat16 is CPU's format) but
    this torch can run: the only way a CPU test can drive the float16 scaler path. The scalers
    grow every step (``growth_interval`` 1), so their state changes within a few iterations."""
    r = trainer.runner
    r.amp = AmpSettings(True, "cpu", torch.float16)
    r.grad_scaler, r.arch_grad_scaler = (
        torch.amp.GradScaler("cpu", init_scale=2.0 ** 14, growth_interval=1) for _ in "wa")


def _cpu_float16_autocast_runs() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return nn.Conv2d(1, 1, 1)(torch.ones(1, 1, 2, 2)).dtype == torch.float16
    except RuntimeError:
        return False


# ----------------------------------------------------------------------------- settings
@pytest.mark.parametrize("value", ["float32", "fp16", "half", "bf16"])
def test_bad_precision_is_refused_naming_the_key(tmp_path, value):
    cfg = search_cfg(tmp_path, **{"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.PRECISION": value})
    match = rf"SOLVER\.AMP\.PRECISION: unknown precision '{value}'; allowed: 'float16', " \
            r"'bfloat16'"
    with pytest.raises(ConfigError, match=match):
        amp_settings(cfg)
    with pytest.raises(ConfigError, match=match):
        build_trainer(cfg)  # the search
    cfg.MODEL.FNA.NETWORK = "derived"
    with pytest.raises(ConfigError, match=match):
        build_trainer(cfg)  # adaptation


def test_float16_on_cpu_is_refused_with_the_fix(tmp_path):
    cfg = search_cfg(tmp_path, **{"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.PRECISION": "float16"})
    with pytest.raises(ConfigError, match="use SOLVER.AMP.PRECISION 'bfloat16' on CPU"):
        build_trainer(cfg)
    cfg.MODEL.FNA.NETWORK = "derived"
    with pytest.raises(ConfigError, match="use SOLVER.AMP.PRECISION 'bfloat16' on CPU"):
        build_trainer(cfg)
    # off, or float16 on a CUDA model, is accepted (the settings only; nothing runs here)
    cfg.SOLVER.AMP.ENABLED = False
    assert amp_settings(cfg) == AmpSettings(False, "cpu")
    cuda = amp_settings(search_cfg(tmp_path, **{"SOLVER.AMP.ENABLED": True,
                                                "MODEL.DEVICE": "cuda"}))
    assert cuda == AmpSettings(True, "cuda", torch.float16) and cuda.needs_scaler
    assert not AmpSettings(True, "cuda", torch.bfloat16).needs_scaler


# ----------------------------------------------------------------------------- the search
def test_bf16_search_runs_convs_in_bf16_with_fp32_alphas_and_cost(tmp_path):
    trainer = build_trainer(search_cfg(tmp_path, **BF16, **{"MODEL.FNA.SEARCH.WARMUP_ITERS": 0}))
    runner = trainer.runner
    assert runner.amp == AmpSettings(True, "cpu", torch.bfloat16)
    assert not runner.grad_scaler.is_enabled() and not runner.arch_grad_scaler.is_enabled()
    seen = _conv_dtypes(trainer.model, within=MixedOp)
    before = _alphas(trainer)
    with EventStorage(0):
        arch = runner.arch_step()
        assert seen == {torch.bfloat16}  # every candidate of the mixed forward
        seen.clear()
        weights = runner.weight_step("softmax")
        assert seen == {torch.bfloat16}
    assert all(a.dtype == torch.float32 and a.grad.dtype == torch.float32
               for a in runner.alphas)
    assert all(torch.isfinite(a).all() and not torch.equal(a, b)
               for a, b in zip(_alphas(trainer), before))
    assert arch["cost"].dtype == arch["cost_loss"].dtype == torch.float32
    assert runner.expected_cost().dtype == torch.float32
    for log in (arch, weights):
        assert all(torch.isfinite(v) for v in log["losses"].values())
    # the same step without AMP: the hook sees float32 (it can tell the two apart)
    plain = build_trainer(search_cfg(tmp_path / "fp32", **{"MODEL.FNA.SEARCH.WARMUP_ITERS": 0}))
    seen32 = _conv_dtypes(plain.model, within=MixedOp)
    with EventStorage(0):
        plain.runner.arch_step()
    assert seen32 == {torch.float32}


def _straight_and_resumed(tmp_path, prepare=lambda t: None, **overrides):
    straight = build_trainer(search_cfg(tmp_path / "straight", **overrides))
    prepare(straight)
    straight.resume_or_load(resume=False)
    straight.train()
    cfg = search_cfg(tmp_path / "killed", **overrides)
    killed = build_trainer(cfg)
    prepare(killed)
    killed.register_hooks([KillAfter(1)])
    killed.resume_or_load(resume=False)
    with pytest.raises(Killed):
        killed.train()
    resumed = build_trainer(cfg)
    prepare(resumed)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    loaded = copy.deepcopy(resumed.runner.state_dict()["search"])
    resumed.train()
    return straight, resumed, loaded


def test_bf16_search_resume_is_bit_exact(tmp_path):
    straight, resumed, _ = _straight_and_resumed(tmp_path, **BF16)
    _same_run(straight, resumed)
    assert list(straight.runner.recent_paths)[2:] == list(resumed.runner.recent_paths)
    ckpt = torch.load(tmp_path / "killed" / "model_0000001.pth", weights_only=True)
    assert ckpt["trainer"]["_trainer"]["search"]["precision"] == "bfloat16"


@pytest.mark.skipif(not _cpu_float16_autocast_runs(), reason="no float16 autocast on CPU")
def test_fp16_scaler_state_is_checkpointed_and_resume_is_bit_exact(tmp_path):
    straight, resumed, loaded = _straight_and_resumed(tmp_path, prepare=_as_float16)
    _same_run(straight, resumed)
    saved = torch.load(tmp_path / "killed" / "model_0000001.pth",
                       weights_only=True)["trainer"]["_trainer"]["search"]
    assert saved["precision"] == "float16"
    # the checkpointed scales are not the initial ones, and the resumed run starts from them
    assert [saved["grad_scalers"][k]["scale"] for k in ("weight", "arch")] != [2.0 ** 14] * 2
    assert loaded["grad_scalers"] == saved["grad_scalers"]
    for name in ("grad_scaler", "arch_grad_scaler"):
        assert getattr(straight.runner, name).state_dict() == \
            getattr(resumed.runner, name).state_dict()


def test_scalers_unscale_before_their_optimizers_step(tmp_path):
    """float32 with enabled scalers of scale 2**16 (exact in float32): the steps equal the
    unscaled ones. The global-norm clip sits between the true gradient norm and 2**16 times
    it, so clipping before unscaling (or not unscaling) would change the weight step."""
    clip = {"SOLVER.CLIP_GRADIENTS.ENABLED": True, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model",
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 1000.0, "MODEL.FNA.SEARCH.WARMUP_ITERS": 0,
            "SOLVER.ARCH.WEIGHT_DECAY": 0.5}
    plain = build_trainer(search_cfg(tmp_path / "plain", **clip))
    scaled = build_trainer(search_cfg(tmp_path / "scaled", **clip))
    for name in ("grad_scaler", "arch_grad_scaler"):
        setattr(scaled.runner, name, torch.amp.GradScaler("cpu", init_scale=2.0 ** 16))
    _same_run(plain, scaled)
    for t in (plain, scaled):
        with EventStorage(0):
            t.runner.arch_step()
            t.runner.weight_step("softmax")
    grads = [p.grad for p in plain.runner.weights if p.grad is not None]
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    assert 1000.0 / 2 ** 16 < norm < 1000.0  # the clip would bite on scaled gradients only
    for a, b in zip(_alphas(plain), _alphas(scaled)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    pa, pb = _params(plain.model), _params(scaled.model)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-6, atol=1e-7)
    assert scaled.runner.grad_scaler.get_scale() == 2.0 ** 16  # no overflow: no back-off


# ----------------------------------------------------------------------------- adaptation
def _adapt_cfg(out, **overrides):
    return search_cfg(out, **{"MODEL.FNA.NETWORK": "derived", "SOLVER.MAX_ITER": 2,
                              "SOLVER.CHECKPOINT_PERIOD": 100, **overrides})


def test_adaptation_in_bf16_on_cpu(tmp_path):
    trainer = FNATrainer(_adapt_cfg(tmp_path, **BF16))
    assert type(trainer.build_step_runner(AmpSettings(True, "cpu", torch.bfloat16),
                                          trainer.model, [], trainer.optimizer)) \
        is AutocastTrainer
    seen = _conv_dtypes(trainer.model)
    before = _params(trainer.model)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert seen == {torch.bfloat16}  # the training forward ran in bfloat16
    rows = [json.loads(r) for r in (tmp_path / "metrics.json").read_text().splitlines()]
    losses = [r["total_loss"] for r in rows if "total_loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    after = _params(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(v.dtype == before[k].dtype for k, v in after.items())  # weights stay float32


def test_adaptation_picks_detectron2s_amp_trainer_on_cuda():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for dtype in (torch.float16, torch.bfloat16):
        runner = FNATrainer.build_step_runner(AmpSettings(True, "cuda", dtype), model, [], opt)
        assert type(runner) is AMPTrainer and runner.precision == dtype
        assert isinstance(runner.grad_scaler, torch.amp.GradScaler)
    assert not FNATrainer.build_step_runner(AmpSettings(True, "cuda", torch.bfloat16), model,
                                            [], opt).grad_scaler.is_enabled()
    assert type(FNATrainer.build_step_runner(AmpSettings(), model, [], opt)) is SimpleTrainer
    with pytest.raises(ValueError, match="bfloat16 only"):
        AutocastTrainer(model, [], opt, AmpSettings(True, "cpu", torch.float16))
