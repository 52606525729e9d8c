"""``python -m fna_d2.tools analyze``: FLOPs, parameters, activations and structure of the
model an fna_d2 config builds, with :mod:`detectron2.utils.analysis` (fvcore's counters made
to take detectron2's inputs and outputs), as Detectron2's ``tools/analyze_model.py`` reports
them, but on fna_d2's config (:func:`fna_d2.config.get_fna_cfg`), model builder and test
loader. ::

    python -m fna_d2.tools analyze --config-file CFG [--tasks flop,parameter,activation,structure]
        [--num-inputs N] [--output FILE.json] [--import MODULE_OR_FILE.py] [KEY VALUE ...]

FLOPs and activations are counted on the first ``N`` images of ``DATASETS.TEST[0]`` (through
the same test loader the evaluation uses, so at the test size) and averaged; one FLOP is one
fused multiply-add, fvcore's convention. ``MODEL.WEIGHTS``, when set, is loaded (the counts do
not depend on it; the structure printout does not either).
"""
from __future__ import annotations

import itertools
import logging
from collections import Counter
from typing import Any, Dict, List, Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.utils.analysis import (FlopCountAnalysis, activation_count_operators,
                                       parameter_count, parameter_count_table)

from ..engine import FNATrainer
from ..engine.data import check_datasets
from ..errors import ToolInputError

__all__ = ["TASKS", "parse_tasks", "analyze_model", "format_analysis"]

logger = logging.getLogger(__name__)

TASKS = ("flop", "parameter", "activation", "structure")
#: tasks that run the model on test images
_NEEDS_INPUTS = ("flop", "activation")


def parse_tasks(text: str) -> List[str]:
    """``"flop,parameter"`` -> ``["flop", "parameter"]``; an unknown task is a
    :class:`~fna_d2.errors.ToolInputError` naming it."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise ToolInputError(f"--tasks {text!r}: unknown task(s) {bad}; choose out of "
                             f"{','.join(TASKS)}")
    return list(dict.fromkeys(tasks))


def _test_inputs(cfg: CfgNode, num_inputs: int) -> List[list]:
    """The first ``num_inputs`` batches of the test loader of ``DATASETS.TEST[0]``."""
    if not cfg.DATASETS.TEST:
        raise ToolInputError("DATASETS.TEST is empty: flop / activation counts run the model "
                             "on its first test images")
    check_datasets(cfg, train=False)
    loader = FNATrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])
    batches = list(itertools.islice(loader, num_inputs))
    if not batches:
        raise ToolInputError(f"dataset {cfg.DATASETS.TEST[0]!r} has no image to count on")
    return batches


def _flops(model: torch.nn.Module, batches: Sequence[list]) -> Dict[str, Any]:
    totals, by_op = [], Counter()
    unsupported: Counter = Counter()
    for batch in batches:
        counter = FlopCountAnalysis(model, batch)
        counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        totals.append(int(counter.total()))
        by_op.update(counter.by_operator())
        unsupported.update(counter.unsupported_ops())
    n = len(batches)
    return {"flops": sum(totals) / n, "flops_per_input": totals,
            "flops_by_operator": {k: v / n for k, v in sorted(by_op.items())},
            "unsupported_ops": dict(sorted(unsupported.items()))}


def _activations(model: torch.nn.Module, batches: Sequence[list]) -> Dict[str, Any]:
    by_op: Counter = Counter()
    for batch in batches:
        by_op.update(activation_count_operators(model, batch))
    n = len(batches)
    by_op_m = {k: v / n for k, v in sorted(by_op.items())}  # millions, fvcore's unit
    return {"activations_m": sum(by_op_m.values()), "activations_m_by_operator": by_op_m}


def analyze_model(cfg: CfgNode, tasks: Sequence[str], num_inputs: int = 1) -> Dict[str, Any]:
    """Build ``cfg``'s model (as the trainer does, ``MODEL.WEIGHTS`` loaded when set) and run
    each of ``tasks`` (:data:`TASKS`); returns a JSON-able dict: ``parameters`` and
    ``parameter_table``; ``flops`` (mean over the inputs), ``flops_per_input``,
    ``flops_by_operator``, ``unsupported_ops``; ``activations_m`` (millions) and
    ``activations_m_by_operator``; ``structure`` (the module printout)."""
    if num_inputs < 1:
        raise ToolInputError(f"--num-inputs {num_inputs}: needs at least 1")
    model = FNATrainer.build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    out: Dict[str, Any] = {"tasks": list(tasks)}
    if "parameter" in tasks:
        out["parameters"] = int(parameter_count(model)[""])
        out["parameter_table"] = parameter_count_table(model, max_depth=5)
    if "structure" in tasks:
        out["structure"] = str(model)
    if any(t in tasks for t in _NEEDS_INPUTS):
        batches = _test_inputs(cfg, num_inputs)
        out["num_inputs"] = len(batches)
        with torch.no_grad():
            if "flop" in tasks:
                out.update(_flops(model, batches))
            if "activation" in tasks:
                out.update(_activations(model, batches))
    return out


def _op_lines(by_op: Dict[str, float], unit: float, suffix: str) -> List[str]:
    return [f"  {k:<24} {v / unit:10.4f} {suffix}" for k, v in
            sorted(by_op.items(), key=lambda kv: -kv[1])]


def format_analysis(res: Dict[str, Any]) -> str:
    """The printout of :func:`analyze_model`'s result."""
    lines: List[str] = []
    if "structure" in res:
        lines += ["Model structure:", res["structure"], ""]
    if "parameters" in res:
        lines += [f"Parameters: {res['parameters']:,} ({res['parameters'] / 1e6:.3f} M)",
                  res["parameter_table"], ""]
    if "flops" in res:
        lines += [f"FLOPs (multiply-adds), mean of {res['num_inputs']} input(s): "
                  f"{res['flops'] / 1e9:.4f} G"]
        lines += _op_lines(res["flops_by_operator"], 1e9, "G")
        if res["unsupported_ops"]:
            lines.append("  not counted (no FLOP rule): " + ", ".join(
                f"{k} x{v}" for k, v in res["unsupported_ops"].items()))
        lines.append("")
    if "activations_m" in res:
        lines += [f"Activations, mean of {res['num_inputs']} input(s): "
                  f"{res['activations_m']:.4f} M"]
        lines += _op_lines(res["activations_m_by_operator"], 1.0, "M")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
