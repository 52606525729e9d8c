"""How much the task tells the alphas: the signal-to-noise ratio of the architecture gradient
of a search, measured on its own arch batches (``bench/bench_search_decision.py --signal``).

Adam moves each alpha by about ``lr * E[g] / sqrt(E[g^2])`` per step. For a gradient component
with per-batch mean ``m`` and standard deviation ``s`` that is ``lr * snr / sqrt(1 + snr^2)``
with ``snr = |m| / s``: a search whose task gradient is mostly batch noise moves alpha by a
fraction ``snr`` of the learning rate per step, whatever the gradient's size, so its logits
drift ``steps * lr * snr`` in the direction the task prefers and the rest is a random walk.
:func:`gradient_signal` measures ``m``, ``s`` and the cost term's (deterministic) gradient per
alpha over ``batches`` arch batches with the weights as they are; :func:`summarize_signal`
turns them into the median SNR, the expected drift over a schedule and the candidates'
functional spread (how different the outputs of one layer's candidates are: remapping starts
k3/k5/k7 of one expansion as the same function, so at the start only e3 / e6 / skip differ).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import torch

from fna_d2.arch import SKIP, parse_op
from fna_d2.utils.freeze import frozen_bn_statistics

__all__ = ["gradient_signal", "candidate_spread", "summarize_signal", "adam_drift",
           "noise_floor", "median"]


def gradient_signal(runner, batches: int) -> Dict[str, Any]:
    """Per alpha component: the task gradient's mean and std over ``batches`` arch batches of
    the search step runner ``runner`` (mixed ops, BN statistics frozen, as its arch step) and
    the cost term's gradient; nothing is updated. (Softmax is shift-invariant: each layer's
    components sum to 0, so no centring is needed.)"""
    net, model = runner.net, runner.model
    alphas = list(runner.alphas)
    net.set_mixed()
    grads: List[torch.Tensor] = []
    with frozen_bn_statistics(model):
        for _ in range(batches):
            loss = sum(model(runner.arch_stream.next()).values())
            g = torch.autograd.grad(loss, alphas, allow_unused=True)
            grads.append(torch.cat([(x if x is not None else torch.zeros_like(a)).flatten()
                                    for x, a in zip(g, alphas)]).detach().double().cpu())
        cost_loss = runner.cost_loss(runner.expected_cost())
        cg = torch.autograd.grad(cost_loss, alphas, allow_unused=True) if cost_loss.requires_grad \
            else [None] * len(alphas)
    g = torch.stack(grads)
    cost = torch.cat([(x if x is not None else torch.zeros_like(a)).flatten()
                      for x, a in zip(cg, alphas)]).detach().double().cpu()
    return {"mean": g.mean(0).tolist(), "std": g.std(0, unbiased=True).tolist(),
            "cost": cost.tolist(), "batches": batches,
            "layer_sizes": [int(a.numel()) for a in alphas]}


@torch.no_grad()
def candidate_spread(runner, batches: int = 1) -> Dict[str, List[float]]:
    """Per searchable layer: the mean over candidate pairs (skip excluded) of
    ``||o_i - o_j|| / ((||o_i|| + ||o_j||) / 2)`` on an arch batch's input to that layer
    (0: the candidates compute the same function), separately for pairs of one expansion
    (``same_expansion``: k3/k5/k7) and pairs of different expansions (``across``)."""
    net, model = runner.net, runner.model
    inputs: Dict[int, torch.Tensor] = {}
    mixed = net.mixed_ops()
    hooks = [m.register_forward_pre_hook(
        lambda mod, args, i=i: inputs.__setitem__(i, args[0].detach())) for i, m in
        enumerate(mixed)]
    out = {"same_expansion": [0.0] * len(mixed), "across": [0.0] * len(mixed)}
    net.set_mixed()
    try:
        with frozen_bn_statistics(model):
            for _ in range(batches):
                model(runner.arch_stream.next())
                for i, m in enumerate(mixed):
                    outs = [(parse_op(n)[1], op(inputs[i]).flatten())
                            for n, op in m.ops.items() if n != SKIP]
                    d: Dict[str, List[float]] = {"same_expansion": [], "across": []}
                    for k, (ea, a) in enumerate(outs):
                        for eb, b in outs[k + 1:]:
                            d["same_expansion" if ea == eb else "across"].append(float(
                                (a - b).norm() / ((a.norm() + b.norm()) / 2).clamp_min(1e-12)))
                    for key, v in d.items():
                        out[key][i] += (sum(v) / len(v) if v else float("nan")) / batches
    finally:
        for h in hooks:
            h.remove()
    return out


def adam_drift(snr: float) -> float:
    """Adam's expected step per unit learning rate for a component of per-batch SNR ``snr``."""
    return snr / math.sqrt(1.0 + snr * snr)


def noise_floor(batches: int) -> float:
    """E|mean| / std over ``batches`` draws of pure noise: sqrt(2 / pi) / sqrt(batches)."""
    return math.sqrt(2.0 / math.pi) / math.sqrt(batches)


def median(v: List[float]) -> float:
    """The median of the finite values of ``v`` (nan if none)."""
    s = sorted(x for x in v if x == x)
    n = len(s)
    return float("nan") if not n else (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)


def summarize_signal(sig: Dict[str, Any], arch_steps: int, lrs: List[float]) -> Dict[str, Any]:
    """Median per-batch SNR of the task gradient (and its level for pure noise), the cost
    gradient against the task noise, and the expected logit drift
    ``arch_steps * lr * adam_drift(snr)`` for each learning rate in ``lrs``."""
    m, s, c = sig["mean"], sig["std"], sig["cost"]
    snr = [abs(a) / b if b > 0 else 0.0 for a, b in zip(m, s)]
    cost_vs_noise = [abs(a) / b if b > 0 else 0.0 for a, b in zip(c, s)]
    med = median(snr)
    both = [abs(a + k) / b if b > 0 else 0.0 for a, k, b in zip(m, c, s)]
    return {"median_snr": med, "noise_floor_snr": noise_floor(sig["batches"]), "p90_snr": sorted(snr)[int(0.9 * (len(snr) - 1))],
            "median_snr_with_cost": median(both),
            "median_cost_over_noise": median(cost_vs_noise),
            "expected_drift": {str(lr): arch_steps * lr * adam_drift(median(both))
                               for lr in lrs}}
