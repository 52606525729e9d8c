"""Params, MAdds and CPU latency of the searched network and of the seed, for the report (and
the Params/MAdds of the control architectures).

All are built from the adapt config (``MODEL.FNA.NETWORK derived``) on the CPU in one
process: with the derived architecture, with the seed's (``MODEL.FNA.ARCH ""``), with a
control's arch file.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

from ..cost import config_cost, cost_columns
from ..latency import time_module
from ..tasks import NET_NAMES

__all__ = ["measurement_config", "measurement_configs", "measure_costs", "measure_nets"]

_NORM_KEYS = ("MODEL.FNA.NORM", "MODEL.SEM_SEG_HEAD.NORM", "MODEL.FPN.NORM")


def measurement_config(adapt_cfg: CfgNode, arch_path: str) -> CfgNode:
    """The adapt config with ``arch_path`` (``""``: the seed's architecture), made for
    measuring: CPU, no weights, SyncBN -> BN (one process); frozen."""
    c = adapt_cfg.clone()
    c.defrost()
    c.MODEL.DEVICE = "cpu"
    c.MODEL.WEIGHTS = ""
    c.MODEL.FNA.NETWORK = "derived"
    c.MODEL.FNA.ARCH = arch_path
    for key in _NORM_KEYS:
        node, leaf = c, key.split(".")
        for part in leaf[:-1]:
            node = node[part]
        if node[leaf[-1]] == "SyncBN":  # measured in one process
            node[leaf[-1]] = "BN"
    c.freeze()
    return c


def measurement_configs(adapt_cfg: CfgNode) -> Dict[str, CfgNode]:
    """``{network name: frozen config}`` for the searched net (the adapt config's arch) and the
    seed (same config, seed architecture), as :func:`measurement_config` makes them."""
    return {NET_NAMES[stage]: measurement_config(adapt_cfg, arch_path)
            for stage, arch_path in (("adapt", adapt_cfg.MODEL.FNA.ARCH), ("baseline", ""))}


def measure_costs(cfgs: Dict[str, CfgNode], size: Sequence[int]) -> Dict[str, Dict[str, float]]:
    """Params/MAdds per network at ``size``, as :func:`measure_nets` counts them (no latency)."""
    return {name: cost_columns(config_cost(cfg, tuple(size))) for name, cfg in cfgs.items()}


def _backbone(model: nn.Module) -> nn.Module:
    """The bottom-up network of a detectron2 model (inside an FPN or not)."""
    bb = model.backbone
    return getattr(bb, "bottom_up", bb)


def measure_nets(cfgs: Dict[str, CfgNode], size: Sequence[int], repeats: int
                 ) -> Tuple[Dict[str, Dict[str, float]], Dict[str, Dict[str, float]]]:
    """(cost, latency) per network: Params/MAdds at ``size`` as ``python -m fna_d2.cost``
    counts them (:func:`~fna_d2.cost.config_cost`: the whole model, then its parts, as
    :func:`~fna_d2.cost.cost_columns` names them), and single-thread CPU latency of the
    backbone (batch 1, eval mode, 3 rounds of ``repeats`` timed runs: median of the round
    medians, min, max)."""
    cost = measure_costs(cfgs, size)
    lat: Dict[str, Dict[str, float]] = {}
    for name, cfg in cfgs.items():
        model = build_model(cfg).eval()
        bb = _backbone(model)
        div = getattr(model.backbone, "size_divisibility", 0) or 1
        h, w = (-(-int(s) // div) * div for s in size)
        x = torch.randn(1, 3, h, w)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # single-core latency: stable under load, mobile-like
        try:
            times = [time_module(bb, x, repeats=max(1, repeats)) for _ in range(3)]
        finally:
            torch.set_num_threads(threads)
        lat[name] = {"median (ms)": sorted(times)[1], "min (ms)": min(times),
                     "max (ms)": max(times)}
    return cost, lat
