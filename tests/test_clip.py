"""Gradient clipping of the weight optimizers: ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model"``
clips the global norm of all gradients (the paper's mmcv ``grad_clip``); detectron2's per-tensor
"norm" stays available; the paper and demo configs use the global one."""
from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from fna_d2.config import get_fna_cfg
from fna_d2.engine import FNATrainer
from fna_d2.engine.search import SearchTrainer
from fna_d2.errors import ConfigError

from _search_cfg import REPO, search_cfg


class TwoParams(nn.Module):
    """Two 2-vectors whose gradients the tests set by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.b = nn.Parameter(torch.zeros(2))


def _cfg(clip_type: str, value: float):
    """SGD at LR 1 with no momentum or decay, so a step subtracts exactly the (clipped) grad."""
    return get_fna_cfg(opts=["SOLVER.BASE_LR", "1.0", "SOLVER.MOMENTUM", "0.0",
                             "SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.WEIGHT_DECAY_NORM", "0.0",
                             "SOLVER.CLIP_GRADIENTS.ENABLED", "True",
                             "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", clip_type,
                             "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", str(value)])


def _step(cfg):
    """One step of FNATrainer's optimizer with grads (3, 0) and (0, 4): global norm 5."""
    model = TwoParams()
    opt = FNATrainer.build_optimizer(cfg, model)
    model.a.grad = torch.tensor([3.0, 0.0])
    model.b.grad = torch.tensor([0.0, 4.0])
    opt.step()
    return -model.a.detach(), -model.b.detach()


def test_full_model_clips_the_global_norm_to_the_value():
    a, b = _step(_cfg("full_model", 1.0))  # 5 -> 1: every gradient scaled by 1/5
    assert torch.allclose(a, torch.tensor([0.6, 0.0]), atol=1e-6)
    assert torch.allclose(b, torch.tensor([0.0, 0.8]), atol=1e-6)
    assert math.isclose(float(torch.cat([a, b]).norm()), 1.0, rel_tol=1e-5)


def test_full_model_leaves_a_smaller_global_norm_alone():
    # each tensor (3 and 4) is below 4.5 but not the total (5): only the global clip acts
    a, b = _step(_cfg("full_model", 10.0))
    assert torch.allclose(a, torch.tensor([3.0, 0.0])) and torch.allclose(b, torch.tensor([0, 4.0]))


def test_per_tensor_norm_stays_available():
    a, b = _step(_cfg("norm", 1.0))  # each tensor on its own: 3 -> 1 and 4 -> 1
    assert torch.allclose(a, torch.tensor([1.0, 0.0]), atol=1e-6)
    assert torch.allclose(b, torch.tensor([0.0, 1.0]), atol=1e-6)


def test_bad_clip_type_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"SOLVER\.CLIP_GRADIENTS\.CLIP_TYPE.*'global'"):
        FNATrainer.build_optimizer(_cfg("global", 1.0), TwoParams())


def test_search_weight_optimizer_clips_the_global_norm_of_the_weights(tmp_path):
    cfg = search_cfg(str(tmp_path), **{"SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model",
                                       "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 2.0})
    model = SearchTrainer.build_model(cfg)
    opt = SearchTrainer.build_optimizer(cfg, model)
    alphas = SearchTrainer.find_supernet(model).arch_parameters()
    alpha_ids = {id(a) for a in alphas}
    weights = [p for p in model.parameters() if id(p) not in alpha_ids and p.requires_grad]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    def total():  # in float64: a float32 sum over ~4M entries is off by 0.2%
        return float(torch.cat([p.grad.double().flatten() for p in weights]).norm())

    assert total() > 2.0
    opt.step()
    assert math.isclose(total(), 2.0, rel_tol=1e-4)
    assert all(torch.equal(a.grad, torch.ones_like(a)) for a in alphas)  # not the weight optimizer's


@pytest.mark.parametrize("name", ["fna_retinanet_search.yaml", "fna_retinanet_adapt.yaml",
                                  "mobilenetv2_retinanet.yaml"])
def test_paper_configs_clip_the_global_norm(name):
    cfg = get_fna_cfg(os.path.join(REPO, "configs", name))
    c = cfg.SOLVER.CLIP_GRADIENTS
    assert c.ENABLED and c.CLIP_TYPE == "full_model" and c.CLIP_VALUE == 35.0
    FNATrainer.build_optimizer(cfg, TwoParams())  # the key is accepted


#: the trees demo keeps the per-tensor clip its published numbers were measured with
#: (docs/departures.md): the paper's 35 in the search, 5 in adaptation and baseline
DEMO_CLIP = {"demo/trees_search.yaml": 35.0, "demo/trees_adapt.yaml": 5.0,
             "demo/trees_baseline.yaml": 5.0}


@pytest.mark.parametrize("name", sorted(DEMO_CLIP))
def test_trees_demo_keeps_its_measured_per_tensor_clip(name):
    cfg = get_fna_cfg(os.path.join(REPO, "configs", name))
    c = cfg.SOLVER.CLIP_GRADIENTS
    assert c.ENABLED and c.CLIP_TYPE == "norm" and c.CLIP_VALUE == DEMO_CLIP[name]
    FNATrainer.build_optimizer(cfg, TwoParams())
