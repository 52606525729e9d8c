"""``MODEL.FNA.SEARCH.TARGET_COST``: the budgeted derivation against brute force, derived
architectures inside the band on the demo spaces, the one-sided cost term, a search that lands
in the band end to end, and the key's checks."""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os

import numpy as np
import pytest
import torch

from fna_d2.arch import mobilenetv2_arch, seed_in_space
from fna_d2.config import get_fna_cfg
from fna_d2.controls import space_of_config
from fna_d2.cost import budgeted_path, op_cost_table, path_cost
from fna_d2.engine import build_trainer
from fna_d2.engine.search import check_search_cfg
from fna_d2.errors import ConfigError

from _search_cfg import REPO, search_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def _brute(logp, table, lo, hi):
    best = None
    for path in itertools.product(*[range(len(r)) for r in table]):
        c = path_cost(table, path)
        if lo <= c <= hi:
            s = sum(logp[l][j] for l, j in enumerate(path))
            best = s if best is None else max(best, s)
    return best


@pytest.mark.parametrize("trial", range(6))
def test_budgeted_path_is_the_most_probable_path_in_the_band(trial):
    rng = np.random.default_rng(trial)
    table = rng.uniform(0.1, 1.0, size=(5, 4)).tolist()
    logp = [list(np.log(rng.dirichlet(np.ones(4)))) for _ in range(5)]
    costs = sorted(path_cost(table, p) for p in itertools.product(range(4), repeat=5))
    target = costs[int(rng.integers(len(costs)))]
    lo, hi = target * 0.97, target * 1.03
    path = budgeted_path(logp, table, lo, hi)
    assert path is not None and lo <= path_cost(table, path) <= hi
    score = sum(logp[l][j] for l, j in enumerate(path))
    assert score == pytest.approx(_brute(logp, table, lo, hi), abs=1e-9)
    assert budgeted_path(logp, table, costs[-1] * 1.01, costs[-1] * 1.02) is None


DEMOS = ["configs/demo/trees_search.yaml", "configs/demo/nuclei_search.yaml"]


@pytest.mark.parametrize("config", DEMOS)
def test_derived_architectures_land_within_5_percent_on_the_demo_spaces(config):
    space, size, os_, seed = space_of_config(os.path.join(REPO, config))
    table = op_cost_table(space, size, "madds", output_stride=os_)
    seed_cost = path_cost(table, space.path_of(seed_in_space(mobilenetv2_arch(), space)))
    rng = np.random.default_rng(0)
    for factor in (0.7, 1.0, 1.2):
        target = factor * seed_cost
        for _ in range(5):
            logp = [np.log(rng.dirichlet(np.ones(len(r)) * 0.5)) for r in table]
            path = budgeted_path(logp, table, target * 0.95, target * 1.05)
            assert path is not None
            assert abs(path_cost(table, path) / target - 1) <= 0.05
    # when the argmax already lies in the band, it is the answer
    logp = [np.log(rng.dirichlet(np.ones(len(r)))) for r in table]
    argmax = [int(np.argmax(r)) for r in logp]
    c = path_cost(table, argmax)
    assert budgeted_path(logp, table, c * 0.95, c * 1.05) == argmax


@pytest.fixture(scope="module")
def targeted(tmp_path_factory):
    """The tiny search with a target between its cheapest and dearest paths."""
    out = tmp_path_factory.mktemp("search_target")
    probe = build_trainer(search_cfg(out / "probe"))
    table = probe.runner.cost_table
    target = 0.5 * (sum(min(r) for r in table) + sum(max(r) for r in table))
    del probe
    trainer = build_trainer(search_cfg(out / "run", **{"MODEL.FNA.SEARCH.TARGET_COST": target}))
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer, out / "run", target


def test_a_search_with_a_target_writes_an_architecture_in_the_band(targeted):
    trainer, out, target = targeted
    assert trainer.runner.schedule.target == pytest.approx(target)
    with open(out / "searched_arch.json", encoding="utf-8") as f:
        meta = json.load(f)["meta"]
    assert abs(meta["searchable_madds_g"] / target - 1) <= 0.05
    assert meta["target_cost"] == pytest.approx(target)
    assert meta["derivation"] == "most probable path in the target band"
    rows = [json.loads(r) for r in (out / "metrics.json").read_text().splitlines()]
    ratios = [r["search/expected_cost_to_target"] for r in rows
              if "search/expected_cost_to_target" in r]
    costs = [r["search/expected_cost"] for r in rows if "search/expected_cost_to_target" in r]
    assert ratios and all(q == pytest.approx(c / target) for q, c in zip(ratios, costs))


def test_the_cost_term_pulls_only_above_the_target(targeted):
    trainer, _, _ = targeted
    runner = trainer.runner
    with torch.no_grad():
        for a in runner.alphas:
            a.normal_(0, 0.5)
    cost = float(runner.expected_cost())
    sched = runner.schedule
    for target, pulls in ((cost * 0.8, True), (cost * 1.25, False)):
        runner.schedule = dataclasses.replace(sched, target=target)
        for a in runner.alphas:
            a.grad = None
        loss = runner.cost_loss(runner.expected_cost())
        loss.backward()
        grads = torch.cat([a.grad.flatten() for a in runner.alphas])
        if pulls:  # the paper's log term's gradient, shifted by a constant
            assert float(loss) == pytest.approx(
                sched.lam * math.log(cost / target) / math.log(sched.tau), rel=1e-5)
            paper = dataclasses.replace(sched, target=None, cost_scale=1.0)
            runner.schedule = paper
            for a in runner.alphas:
                a.grad = None
            runner.cost_loss(runner.expected_cost()).backward()
            want = torch.cat([a.grad.flatten() for a in runner.alphas])
            assert torch.allclose(grads, want, rtol=1e-5, atol=1e-9) and want.abs().sum() > 0
        else:
            assert float(loss) == 0.0 and float(grads.abs().sum()) == 0.0
    runner.schedule = sched


@pytest.mark.parametrize("value,match", [
    ("big", "TARGET_COST"), (-1.0, "TARGET_COST"), (0, "TARGET_COST"), (True, "TARGET_COST")])
def test_bad_targets_are_refused_naming_the_key(tmp_path, value, match):
    cfg = search_cfg(tmp_path, **{"MODEL.FNA.SEARCH.TARGET_COST": value})
    with pytest.raises(ConfigError, match=match):
        check_search_cfg(cfg)


def test_seed_target_needs_a_space_the_seed_fits(tmp_path):
    # the tiny space has 2 layers where MobileNetV2 has 3: "seed" cannot be placed in it
    with pytest.raises(ConfigError, match="TARGET_COST 'seed'"):
        build_trainer(search_cfg(tmp_path, **{"MODEL.FNA.SEARCH.TARGET_COST": "seed"}))


def test_the_key_takes_numbers_and_seed_from_yaml_and_the_command_line():
    base = os.path.join(REPO, "configs", "demo", "trees_search.yaml")
    assert get_fna_cfg(base).MODEL.FNA.SEARCH.TARGET_COST is None
    assert get_fna_cfg(base, ["MODEL.FNA.SEARCH.TARGET_COST", "0.45"]) \
        .MODEL.FNA.SEARCH.TARGET_COST == 0.45
    assert get_fna_cfg(base, ["MODEL.FNA.SEARCH.TARGET_COST", "seed"]) \
        .MODEL.FNA.SEARCH.TARGET_COST == "seed"
