"""Params and MAdds: per op and per architecture, analytically (:mod:`.analytic`, with the
search's MAdds table and its expectation), per built model with forward hooks
(:mod:`.counting`, the counting convention that reproduces the paper's RetinaNet table), and
the ``python -m fna_d2.cost`` command (:mod:`.cli`). The search's latency table is
:mod:`fna_d2.latency`'s. :mod:`.budget`: the most probable path within a cost band (the
derivation under ``MODEL.FNA.SEARCH.TARGET_COST``)."""
from .analytic import Cost, arch_cost, conv_out_size, expected_cost, op_cost, op_cost_table
from .budget import budgeted_path, path_cost
from .cli import PAPER_RETINANET, main, paper_retinanet_cfg
from .counting import config_cost, cost_columns, detectron2_model_cost, model_cost

__all__ = ["Cost", "conv_out_size", "op_cost", "arch_cost", "op_cost_table", "expected_cost",
           "model_cost", "detectron2_model_cost", "config_cost", "cost_columns",
           "paper_retinanet_cfg", "PAPER_RETINANET", "main", "budgeted_path", "path_cost"]
