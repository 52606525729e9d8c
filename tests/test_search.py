"""SearchTrainer: the alternation, its cost term, resume, split, collapse handling and outputs.

A tiny search space (8 searchable layers) under a tiny RetinaNet at 96 px on the demo tree
crowns keeps every run to a few seconds on 2 CPU cores."""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import sys

import pytest
import torch

from detectron2.engine import HookBase
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from fna_d2.arch import SKIP, load_arch
from fna_d2.config import ConfigError
from fna_d2.data.split import SplitError, image_ids_hash, make_split, save_split, split_indices
from fna_d2.engine import SearchTrainer, build_trainer
from fna_d2.engine.search import STATE_VERSION, alpha_stats, check_search_cfg, mix_seed
from fna_d2.engine.search.state import own_rank_state
from fna_d2.errors import SearchResumeError

from _search_cfg import KillAfter, Killed, search_cfg


#: one torch thread for the whole module (see conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _alphas(trainer):
    return [a.detach().clone() for a in trainer.net.arch_parameters()]


class _SetAlphas(HookBase):
    """Before iteration ``it``, make every layer prefer ``op`` where offered (else k3_e6)."""

    def __init__(self, plan) -> None:
        self.plan = dict(plan)

    def before_step(self) -> None:
        op = self.plan.get(self.trainer.iter)
        if op is None:
            return
        with torch.no_grad():
            for m in self.trainer.net.mixed_ops():
                m.alpha.zero_()
                m.alpha[m.names.index(op if op in m.names else "k3_e6")] = 10.0


# ----------------------------------------------------------------------------- a full run
@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """4 iterations (2 warm-up, 2 alternating), checkpoints and arch files every 2."""
    out = tmp_path_factory.mktemp("search_straight")
    trainer = build_trainer(search_cfg(out))
    assert isinstance(trainer, SearchTrainer)
    trainer.resume_or_load(resume=False)
    result = trainer.train()
    return trainer, out, result


def test_run_writes_outputs(straight):
    trainer, out, result = straight
    assert result["iterations"] == 4 and not result["stopped_early"]
    for name in ("searched_arch.json", "alpha_probs.json", "search_split.json",
                 "arch/arch_iter0000002.json", "arch/arch_iter0000004.json",
                 "model_0000001.pth", "model_final.pth", "metrics.json"):
        assert os.path.isfile(out / name), name
    for png in ("alpha_heatmap.png", "search_curves.png"):
        with open(out / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    arch = load_arch(str(out / "searched_arch.json"))
    derived = trainer.net.derive()
    assert [s.ops for s in arch.stages] == [s.ops for s in derived.stages]
    meta = arch.meta
    for key in ("seed", "lambda", "tau", "cost_type", "madds_g", "world_size", "total_batch",
                "iteration", "config_file"):
        assert key in meta, key
    assert meta["iteration"] == 4 and meta["seed"] == 3 and meta["world_size"] == 1
    assert meta["total_batch"] == 2 and meta["cost_type"] == "madds" and meta["madds_g"] > 0
    probs = json.loads((out / "alpha_probs.json").read_text())
    assert len(probs["layers"]) == trainer.net.space.num_searchable
    assert all(abs(sum(l["probs"]) - 1) < 1e-9 for l in probs["layers"])
    split = json.loads((out / "search_split.json").read_text())
    assert split["num_arch"] + split["num_weight"] == split["num_images"] == 39
    rows = [json.loads(l) for l in (out / "metrics.json").read_text().splitlines()]
    keys = set().union(*rows)
    for key in ("total_loss", "arch/total_loss", "search/cost_loss", "search/expected_cost",
                "search/entropy", "search/skip_ratio", "search/alpha_lr", "lr"):
        assert key in keys, key


def test_searched_arch_builds_derived_network_unchanged(straight, tmp_path):
    _, out, _ = straight
    cfg = search_cfg(tmp_path, **{"MODEL.FNA.NETWORK": "derived",
                                  "MODEL.FNA.ARCH": str(out / "searched_arch.json")})
    model = build_model(cfg)
    net = model.backbone.bottom_up
    assert net.arch.without_meta() == load_arch(str(out / "searched_arch.json")) \
        .skips_to_end().without_meta()


def test_warmup_samples_uniformly_then_from_softmax(straight):
    trainer, _, _ = straight
    modes = {(it, mode) for it, mode, _ in trainer.runner.recent_paths}
    assert modes == {(0, "uniform"), (1, "uniform"), (2, "softmax"), (3, "softmax")}
    # uniform sampling ignores alpha, softmax sampling follows it
    runner = trainer.runner
    saved = _alphas(trainer)
    state = runner.generator.get_state()
    with torch.no_grad():
        for a in runner.alphas:
            a.zero_()
            a[0] = 30.0
    try:
        uniform = [runner.net.sample_path("uniform", runner.generator) for _ in range(20)]
        softmax = [runner.net.sample_path("softmax", runner.generator) for _ in range(20)]
    finally:
        runner.generator.set_state(state)
        with torch.no_grad():
            for a, v in zip(runner.alphas, saved):
                a.copy_(v)
    assert any(i != 0 for p in uniform for i in p)
    assert all(i == 0 for p in softmax for i in p)


def test_resume_is_bit_exact(straight, tmp_path):
    trainer, _, _ = straight
    cfg = search_cfg(tmp_path)
    killed = build_trainer(cfg)
    killed.register_hooks([KillAfter(1)])
    killed.resume_or_load(resume=False)
    with pytest.raises(Killed):
        killed.train()
    assert not os.path.exists(tmp_path / "searched_arch.json")  # no final output on failure
    resumed = build_trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    resumed.train()
    for a, b in zip(_alphas(trainer), _alphas(resumed)):
        assert torch.equal(a, b)
    ref, got = _params(trainer.model), _params(resumed.model)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert list(trainer.runner.recent_paths)[2:] == list(resumed.runner.recent_paths)


def test_checkpoint_holds_each_ranks_state_and_old_or_other_world_sizes_fall_back(
        straight, caplog):
    _, out, _ = straight
    saved = torch.load(out / "model_0000001.pth", weights_only=True)["trainer"]["_trainer"]
    state = saved["search"]
    assert state["version"] == STATE_VERSION == 2 and state["precision"] == "float32"
    assert state["grad_scalers"] == {"weight": {}, "arch": {}}  # float32: no scaler
    (mine,) = state["ranks"]  # one process: one entry, RetinaNet's loss normaliser
    assert set(mine["module_attrs"]) == {""} and mine["module_attrs"][""] > 0
    two = {"ranks": [{"module_attrs": {"": 10.0, "x": 1.0}}, {"module_attrs": {"": 20.0}}]}
    assert own_rank_state(two, 1, 2) == {"module_attrs": {"": 20.0}}
    with caplog.at_level(logging.WARNING, logger="fna_d2.engine.search"):
        assert own_rank_state(two, 0, 1) == {"module_attrs": {"": 15.0, "x": 1.0}}
        assert own_rank_state({"module_attrs": {"": 7.0}}, 1, 2) == {"module_attrs": {"": 7.0}}
    messages = [r.getMessage() for r in caplog.records]
    assert any("written by 2 processes, this run has 1" in m for m in messages)
    assert any("state version 1" in m for m in messages)


def test_old_checkpoint_without_scaler_or_rank_state_resumes(straight, tmp_path):
    """A version-1 search checkpoint (before per-rank and scaler state) still resumes, and
    one process resumes it exactly."""
    trainer, out, _ = straight
    run = tmp_path / "run"
    shutil.copytree(out, run)
    ckpt = torch.load(run / "model_0000001.pth", weights_only=True)
    search = ckpt["trainer"]["_trainer"]["search"]
    search["module_attrs"] = search.pop("ranks")[0]["module_attrs"]
    for key in ("precision", "grad_scalers"):
        del search[key]
    search["version"] = 1
    torch.save(ckpt, run / "model_0000001.pth")
    (run / "last_checkpoint").write_text("model_0000001.pth")
    resumed = build_trainer(search_cfg(run))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    resumed.train()
    assert all(torch.equal(a, b) for a, b in zip(_alphas(trainer), _alphas(resumed)))


def test_reading_a_stream_leaves_torchs_rng_alone(tmp_path):
    """A resumed search makes its data iterators in another iteration than the straight run;
    torch's DataLoader draws a seed from the global RNG then, which would shift in-model
    randomness (the segmentation head's dropout) in that iteration."""
    stream = build_trainer(search_cfg(tmp_path)).runner.weight_stream
    torch.manual_seed(0)
    before = torch.get_rng_state()
    stream.next()
    stream.next()
    assert torch.equal(before, torch.get_rng_state())


def test_resume_from_another_space_is_refused(straight, tmp_path):
    _, out, _ = straight
    run = tmp_path / "run"
    shutil.copytree(out, run)
    keep = {n: (run / n).read_bytes() for n in ("searched_arch.json", "last_checkpoint")}
    other = build_trainer(search_cfg(run, **{"MODEL.FNA.SEARCH_DEPTHS": [2, 1, 1, 1, 1, 1]}))
    with pytest.raises(SearchResumeError, match="different search space"):
        other.resume_or_load(resume=True)
    assert keep == {n: (run / n).read_bytes() for n in keep}


# ----------------------------------------------------------------------------- single steps
def test_arch_step_changes_only_alpha(tmp_path):
    trainer = build_trainer(search_cfg(tmp_path, **{"MODEL.FNA.SEARCH.WARMUP_ITERS": 0}))
    before, alphas = _params(trainer.model), _alphas(trainer)
    with EventStorage(0):
        trainer.runner.arch_step()
    after = _params(trainer.model)
    alpha_keys = {k for k in before if k.endswith(".alpha")}
    assert len(alpha_keys) == trainer.net.space.num_searchable
    assert all(not torch.equal(before[k], after[k]) for k in alpha_keys)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in alpha_keys)
    assert all(p.grad is None for p in trainer.runner.weights)
    assert all(p.requires_grad for p in trainer.runner.weights)  # unfrozen afterwards
    assert not any(torch.equal(a, b) for a, b in zip(alphas, _alphas(trainer)))


def test_weight_step_changes_only_sampled_weights(tmp_path):
    trainer = build_trainer(search_cfg(tmp_path))
    before = _params(trainer.model)
    with EventStorage(0):
        trainer.runner.weight_step("softmax")
    after = _params(trainer.model)
    path = trainer.runner.recent_paths[-1][2]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.endswith(".alpha") for k in changed)
    assert all(a.grad is None for a in trainer.runner.alphas)
    assert any(k.startswith("head.") for k in changed)
    for m, idx in zip(trainer.net.mixed_ops(), path):
        for i, name in enumerate(m.names):
            ps = list(m.ops[name].parameters())
            if i != idx and ps:  # not sampled: untouched (no momentum, no weight decay)
                prefix = [k for k, v in trainer.model.named_parameters() if v is ps[0]][0]
                assert prefix not in changed


def test_larger_lambda_pushes_toward_cheaper_ops(tmp_path):
    trainer = build_trainer(search_cfg(tmp_path, **{"MODEL.FNA.SEARCH.WARMUP_ITERS": 0}))
    runner = trainer.runner
    # one arch step from the same state and batch: a large lambda lowers the expected cost more
    alphas, adam = _alphas(trainer), copy.deepcopy(runner.arch_optimizer.state_dict())
    start = float(runner.expected_cost())
    costs = {}
    for lam in (1e-4, 5.0):
        with torch.no_grad():
            for a, v in zip(runner.alphas, alphas):
                a.copy_(v)
        runner.arch_optimizer.load_state_dict(copy.deepcopy(adam))
        runner.arch_stream.load_state_dict({"consumed": 0})
        trainer.model.__dict__.pop("loss_normalizer", None)  # RetinaNet's loss EMA
        runner.schedule = dataclasses.replace(runner.schedule, lam=lam)
        with EventStorage(0):
            runner.arch_step()
        costs[lam] = float(runner.expected_cost())
    assert costs[5.0] < start and costs[5.0] < costs[1e-4]
    # the cost term's gradient alone: d/d alpha_i = lambda p_i (c_i - E_l) / (E log tau)
    with torch.no_grad():
        for a in runner.alphas:
            a.normal_(0, 0.5)
            a.grad = None
    runner.cost_loss(runner.expected_cost()).backward()
    for a, row in zip(runner.alphas, runner.cost_table):
        p = torch.softmax(a.detach(), 0)
        c = torch.tensor(row, dtype=p.dtype)
        assert torch.all(a.grad * (c - (p * c).sum()) >= 0)
        assert a.grad.abs().sum() > 0


def test_collapse_warns_and_stops_keeping_last_healthy_arch(tmp_path, caplog):
    cfg = search_cfg(tmp_path, **{"MODEL.FNA.SEARCH.WARMUP_ITERS": 10,
                                  "MODEL.FNA.SEARCH.STOP_ON_COLLAPSE": True,
                                  "MODEL.FNA.SEARCH.DERIVE_PERIOD": 0,
                                  "SOLVER.MAX_ITER": 3, "SOLVER.CHECKPOINT_PERIOD": 100})
    trainer = build_trainer(cfg)
    trainer.register_hooks([_SetAlphas({0: "k3_e6", 1: SKIP})])
    trainer.resume_or_load(resume=False)
    with caplog.at_level(logging.WARNING, logger="fna_d2.engine.search"):
        result = trainer.train()
    assert "collapse at iteration 2" in result["stopped_early"]
    assert result["iterations"] == 2
    assert any("search collapsed at iteration 2" in r.getMessage() for r in caplog.records)
    hist = trainer.storage.history("search/collapsed").values()
    assert [v for v, _ in hist] == [0.0, 1.0]
    assert alpha_stats(trainer.net).skip_ratio == 1.0
    arch = load_arch(str(tmp_path / "searched_arch.json"))
    assert SKIP not in [op for st in arch.stages for op in st.ops]
    assert arch.meta["arch_iteration"] == 1 and "collapse" in arch.meta["stopped_early"]
    assert os.path.isfile(tmp_path / "model_stopped_0000001.pth")


# ----------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("key,value,match", [
    ("COST", "flops", "unknown cost type"),
    ("LAMBDA", 0.0, "LAMBDA must be > 0"),
    ("LAMBDA", -0.02, "LAMBDA must be > 0"),
    ("TAU", 1.0, "TAU must be > 1"),
    ("ARCH_STEPS", 0, "ARCH_STEPS must be >= 1"),
])
def test_bad_search_settings(tmp_path, key, value, match):
    cfg = search_cfg(tmp_path, **{f"MODEL.FNA.SEARCH.{key}": value})
    with pytest.raises(ConfigError, match=match):
        check_search_cfg(cfg)
    with pytest.raises(ConfigError, match=match):
        build_trainer(cfg)


def test_split_leaving_a_half_empty_is_refused(tmp_path):
    with pytest.raises(SplitError, match="arch half empty"):
        build_trainer(search_cfg(tmp_path, **{"MODEL.FNA.SEARCH.ARCH_SPLIT": 0.01}))


def test_split_is_deterministic_and_disjoint(tmp_path):
    a1, w1 = split_indices(101, 0.5, 7)
    a2, w2 = split_indices(101, 0.5, 7)
    assert (a1, w1) == (a2, w2)
    assert not set(a1) & set(w1) and sorted(a1 + w1) == list(range(101))
    assert len(a1) == round(101 * 0.5)
    assert split_indices(101, 0.5, 8)[0] != a1
    a, w = split_indices(10, 0.2, 0)
    assert len(a) == 2 and len(w) == 8
    for n, frac in ((1, 0.5), (3, 0.9), (0, 0.5)):
        with pytest.raises(SplitError, match="empty"):
            split_indices(n, frac, 0)
    with pytest.raises(SplitError, match="ARCH_SPLIT"):
        split_indices(10, 1.0, 0)
    dicts = [{"image_id": i, "file_name": f"/x/{i}.png"} for i in range(20)]
    s1 = make_split(dicts, ["d"], 0.5, 1)
    s2 = make_split(dicts, ["d"], 0.5, 1)
    assert s1.fingerprint == s2.fingerprint
    assert image_ids_hash(dicts) != image_ids_hash(dicts[::-1])
    assert make_split(dicts[::-1], ["d"], 0.5, 1).fingerprint != s1.fingerprint
    rec = json.loads(open(save_split(s1, str(tmp_path / "split.json"))).read())
    assert rec["num_arch"] == 10 and rec["seed"] == 1 and rec["dataset_names"] == ["d"]


def test_resume_with_another_split_is_refused(straight, tmp_path):
    _, out, _ = straight
    run = tmp_path / "run"
    shutil.copytree(out, run)
    other = build_trainer(search_cfg(run, **{"MODEL.FNA.SEARCH.ARCH_SPLIT": 0.3}))
    with pytest.raises(SearchResumeError, match="different arch/weight split"):
        other.resume_or_load(resume=True)


def test_collapse_without_stop_only_warns(tmp_path):
    cfg = search_cfg(tmp_path, **{"MODEL.FNA.SEARCH.WARMUP_ITERS": 10,
                                  "MODEL.FNA.SEARCH.DERIVE_PERIOD": 0,
                                  "SOLVER.MAX_ITER": 2, "SOLVER.CHECKPOINT_PERIOD": 100})
    trainer = build_trainer(cfg)
    trainer.register_hooks([_SetAlphas({0: SKIP})])
    trainer.resume_or_load(resume=False)
    result = trainer.train()
    assert result["iterations"] == 2 and not result["stopped_early"]
    assert [v for v, _ in trainer.storage.history("search/skip_heavy").values()] == [1.0, 1.0]
    arch = load_arch(str(tmp_path / "searched_arch.json"))
    assert "skip-heavy" in arch.meta["warning"]


# ----------------------------------------------------------------------------- provenance
@pytest.mark.parametrize("passed", ["configs/mine.yaml", None])
def test_searched_arch_records_the_config_file_passed_not_argv(tmp_path, monkeypatch, passed):
    """Under ``python -m fna_d2.pipeline`` the process's argv names the pipeline's YAML: the
    recorded config is the one the caller passes (null when none)."""
    monkeypatch.setattr(sys, "argv", ["fna_d2.pipeline", "--config-file", "pipeline.yaml"])
    cfg = search_cfg(tmp_path, **{"SOLVER.MAX_ITER": 1, "MODEL.FNA.SEARCH.DERIVE_PERIOD": 0,
                                  "SOLVER.CHECKPOINT_PERIOD": 100})
    trainer = build_trainer(cfg, config_file=passed)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert load_arch(str(tmp_path / "searched_arch.json")).meta["config_file"] == passed


def test_stream_seeds_are_pinned():
    """The seed derivation every search stream uses; a change would silently change every
    search (and break resuming checkpoints written before it)."""
    assert mix_seed(3, "init") == 8470581646597317207
    assert mix_seed(3, "weight", "aug") == 1265541032548919333
    assert mix_seed(0, "iteration", 7, 1) == 36421741209249929
