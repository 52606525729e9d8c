"""Params and MAdds: per op (analytic), per architecture, per model (hooks), and the search's
cost table.

Counting convention (the one that reproduces the FNA paper's RetinaNet table, "MAdds at
800x1088, conv layers only"):

* **MAdds** = sum over every ``nn.Conv2d`` call of ``kh*kw*cin/groups*cout*Hout*Wout``, plus
  ``Hout*Wout*cout`` additions for convs that have a bias (the RetinaNet head, FPN and P6/P7
  convs; fna_d2's backbone convs have none), plus ``in*out`` (+ ``out`` for the bias) per row
  of every ``nn.Linear``. BatchNorm, activations, residual adds, upsampling and pooling are not
  counted. A shared head (RetinaNet) is counted once per pyramid level. Batch size 1; the
  input is zero-padded to the backbone's size divisibility as detectron2 does.
* **Params** = every parameter of the model (conv weights and biases, BN/GN affine; the
  super network's alphas), no buffers. MobileNetV2's 320->1280 conv is not part of any fna_d2
  backbone and so is not counted.

With this convention, RetinaNet (FPN 256, P6 from C5, 4x256 convs per branch, 9 anchors, 80
classes) at 800x1088 measures 11.488M / 133.053B on MobileNetV2 and 11.732M / 133.030B on FNA's
architecture; the paper reports 11.49M / 133.05B and 11.73M / 133.03B. Leaving out the bias
additions gives 132.99B / 132.97B (0.05% lower).

The command ``python -m fna_d2.cost --config-file CFG [--input-size H W] [KEY VALUE ...]``
prints the backbone / FPN / head / total Params and MAdds of the model a config builds;
``python -m fna_d2.cost --paper`` builds the paper's two RetinaNets and compares.
"""
from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .arch import SKIP, Arch, SearchSpace, parse_op

__all__ = ["Cost", "conv_out_size", "op_cost", "arch_cost", "op_cost_table", "expected_cost",
           "model_cost", "detectron2_model_cost", "paper_retinanet_cfg", "COST_TYPES",
           "PAPER_RETINANET", "main"]

#: cost types understood by :func:`op_cost_table`
COST_TYPES = ("madds", "params", "latency")

#: the paper's RetinaNet table (Params in M, MAdds in B at 800x1088)
PAPER_RETINANET = {"mobilenetv2": (11.49, 133.05), "fna": (11.73, 133.03)}


@dataclass
class Cost:
    """Parameter count and multiply-adds (plain counts, not millions / billions)."""

    params: int = 0
    madds: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.madds + other.madds)


def conv_out_size(size: int, kernel: int, stride: int = 1, dilation: int = 1,
                  padding: Optional[int] = None) -> int:
    """Output length of a conv along one axis ("same" padding ``dilation*(k-1)//2`` default)."""
    if padding is None:
        padding = dilation * (kernel - 1) // 2
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _conv(hw: Tuple[int, int], cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1,
          groups: int = 1, norm_params: bool = True) -> Tuple[Cost, Tuple[int, int]]:
    ho = conv_out_size(hw[0], k, stride, dilation)
    wo = conv_out_size(hw[1], k, stride, dilation)
    weights = k * k * cin // groups * cout
    return Cost(weights + (2 * cout if norm_params else 0), weights * ho * wo), (ho, wo)


def op_cost(op: str, cin: int, cout: int, stride: int, dilation: int,
            input_hw: Tuple[int, int], norm_params: bool = True) -> Tuple[Cost, Tuple[int, int]]:
    """Cost of op ``op`` on a ``cin x H x W`` input and its output ``(H, W)``.

    Params count the BN affine parameters (2 per channel) unless ``norm_params`` is False
    (the super network's searchable BNs have none)."""
    parsed = parse_op(op)
    if parsed is None:  # skip
        return Cost(), tuple(input_hw)  # type: ignore[return-value]
    k, e = parsed
    mid = cin * e
    total, hw = Cost(), tuple(input_hw)
    if e != 1:
        c, hw = _conv(hw, cin, mid, 1, norm_params=norm_params)
        total += c
    c, hw = _conv(hw, mid, mid, k, stride, dilation, groups=mid, norm_params=norm_params)
    total += c
    c, hw = _conv(hw, mid, cout, 1, norm_params=norm_params)
    return total + c, hw


def _stem(arch_like, input_size: Tuple[int, int], in_channels: int = 3):
    return _conv(tuple(input_size), in_channels, arch_like.stem_channels, 3, 2)


def arch_cost(arch: Arch, input_size: Tuple[int, int], output_stride: Optional[int] = None
              ) -> Cost:
    """Analytic cost of :class:`~fna_d2.modeling.DerivedNet` (stem + all stages) at
    ``input_size`` (H, W); equals :func:`model_cost` of that backbone."""
    built = arch.with_output_stride(output_stride)
    total, hw = _stem(built, input_size)
    for st in built.stages:
        for i, op in enumerate(st.ops):
            cin, cout, stride = st.layer_io(i)
            c, hw = op_cost(op, cin, cout, stride, st.dilation, hw)
            total += c
    return total


def op_cost_table(space: SearchSpace, input_size: Tuple[int, int] = (800, 1088),
                  cost: str = "madds", output_stride: Optional[int] = None,
                  table_fn: Optional[Callable[..., List[List[float]]]] = None,
                  **kwargs) -> List[List[float]]:
    """Per searchable layer (``space.searchable_layers()`` order), per candidate: the cost of
    that op at its input shape when the network input is ``input_size`` (H, W).

    ``cost``: "madds" (GMAdds, the paper's), "params" (M params, conv weights only: the
    searchable layers' BNs have no parameters) or "latency" (ms, from
    ``fna_d2.latency.latency_table(built_space, input_size, **kwargs)``). ``table_fn(
    built_space, input_size, **kwargs)`` overrides all of these. ``built_space`` is ``space``
    with the ``output_stride`` dilations applied (as the super network builds it)."""
    built = space.with_output_stride(output_stride)
    if table_fn is not None:
        return table_fn(built, input_size, **kwargs)
    if cost == "latency":
        try:
            from .latency import latency_table
        except ImportError as e:
            raise ValueError(f"MODEL.FNA.SEARCH.COST='latency' needs fna_d2.latency "
                             f"({e})") from None
        return latency_table(built, input_size, **kwargs)
    if cost not in ("madds", "params"):
        raise ValueError(f"MODEL.FNA.SEARCH.COST: unknown cost type {cost!r}; known: "
                         f"{', '.join(COST_TYPES)}")
    if kwargs:
        raise TypeError(f"unexpected arguments for cost={cost!r}: {sorted(kwargs)}")
    _, hw = _stem(built, input_size)
    table = []
    for st in built.stages:
        for i, cands in enumerate(st.candidates):
            cin, cout, stride = st.layer_io(i)
            costs = [op_cost(op, cin, cout, stride, st.dilation, hw, norm_params=False)
                     for op in cands]
            if len(cands) > 1:
                table.append([c.madds / 1e9 if cost == "madds" else c.params / 1e6
                              for c, _ in costs])
            hw = costs[0][1]  # every candidate keeps the same output shape
    return table


def expected_cost(alphas: Sequence[torch.Tensor], table: Sequence[Sequence[float]]
                  ) -> torch.Tensor:
    """sum over layers of ``softmax(alpha_l) . table[l]`` (differentiable in the alphas)."""
    if len(alphas) != len(table):
        raise ValueError(f"{len(alphas)} alpha vectors but a cost table of {len(table)} layers")
    total = None
    for l, (a, row) in enumerate(zip(alphas, table)):
        if a.numel() != len(row):
            raise ValueError(f"searchable layer {l}: {a.numel()} alphas but {len(row)} costs")
        c = (F.softmax(a, dim=-1) * torch.as_tensor(row, dtype=a.dtype, device=a.device)).sum()
        total = c if total is None else total + c
    if total is None:
        return torch.zeros(())
    return total


# ----------------------------------------------------------------------------- models
def _count_hooks(module: nn.Module, counts: Dict[str, int]) -> List:
    def hook(name: str):
        def fn(mod, inputs, out):
            if isinstance(mod, nn.Conv2d):
                spatial = out.shape[-2] * out.shape[-1] * (out.shape[0] if out.dim() == 4 else 1)
                n = mod.weight.numel() * spatial
                if mod.bias is not None:
                    n += mod.out_channels * spatial
            else:  # nn.Linear
                rows = out.numel() // mod.out_features
                n = rows * mod.in_features * mod.out_features
                if mod.bias is not None:
                    n += rows * mod.out_features
            counts[name] = counts.get(name, 0) + int(n)
        return fn

    return [m.register_forward_hook(hook(n)) for n, m in module.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))]


def model_cost(model: nn.Module, inputs=None, input_size: Optional[Tuple[int, int]] = None,
               run: Optional[Callable[[nn.Module], object]] = None, per_module: bool = False):
    """Hook-based Params / MAdds of ``model`` (convention in the module docstring).

    Runs ``run(model)`` if given, else ``model(inputs)``, else ``model(zeros(1, 3, H, W))``.
    Returns a :class:`Cost`, or ``(Cost, {module name: MAdds})`` with ``per_module``."""
    counts: Dict[str, int] = {}
    handles = _count_hooks(model, counts)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            if run is not None:
                run(model)
            else:
                if inputs is None:
                    if input_size is None:
                        raise ValueError("model_cost needs inputs, input_size or run")
                    p = next(model.parameters(), None)
                    inputs = torch.zeros(1, 3, *input_size,
                                         device=p.device if p is not None else "cpu")
                model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    total = Cost(sum(p.numel() for p in model.parameters()), sum(counts.values()))
    return (total, counts) if per_module else total


def _groups(model: nn.Module) -> Dict[str, str]:
    """Prefix of each report group: backbone (the bottom-up net), fpn, head."""
    from detectron2.modeling.backbone import FPN

    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, FPN):
        return {"backbone": "backbone.bottom_up.", "fpn": "backbone."}
    return {"backbone": "backbone."}


def _group_of(name: str, groups: Dict[str, str]) -> str:
    for g, prefix in groups.items():  # most specific first
        if (name + ".").startswith(prefix):
            return g
    return "head"


def detectron2_model_cost(model: nn.Module, input_size: Tuple[int, int] = (800, 1088),
                          meta: bool = True) -> Dict[str, Cost]:
    """Params / MAdds of a detectron2 meta-architecture at ``input_size`` (H, W), split into
    ``backbone`` (the bottom-up network), ``fpn`` (if any), ``head`` (everything else) and
    ``total``. RetinaNet-style (``head`` + ``head_in_features``) and ``sem_seg_head`` models
    run backbone + head on a zero tensor (with ``meta``: on a copy of the model on the "meta"
    device, shapes only, instantaneous); others run full inference on a zero image."""
    h, w = input_size
    div = getattr(getattr(model, "backbone", None), "size_divisibility", 0) or 1
    h, w = -(-h // div) * div, -(-w // div) * div
    fast = hasattr(model, "backbone") and (
        (hasattr(model, "head") and hasattr(model, "head_in_features"))
        or hasattr(model, "sem_seg_head"))
    if fast and meta:
        model = copy.deepcopy(model).to("meta")
    device = next(model.parameters()).device

    def run(m):
        x = torch.zeros(1, 3, h, w, device=device)
        if hasattr(m, "head") and hasattr(m, "head_in_features"):
            feats = m.backbone(x)
            m.head([feats[f] for f in m.head_in_features])
        elif hasattr(m, "sem_seg_head"):
            m.sem_seg_head(m.backbone(x))
        else:
            m([{"image": torch.zeros(3, h, w, device=device), "height": h, "width": w}])

    _, counts = model_cost(model, run=run, per_module=True)
    groups = _groups(model)
    out = {g: Cost() for g in list(groups) + ["head"]}
    for name, n in counts.items():
        out[_group_of(name, groups)].madds += n
    for name, p in model.named_parameters():
        out[_group_of(name.rsplit(".", 1)[0], groups)].params += p.numel()
    out["total"] = Cost(sum(c.params for c in out.values()), sum(c.madds for c in out.values()))
    return out


def paper_retinanet_cfg(network: str = "seed", arch: str = "", num_classes: int = 80):
    """A minimal config of the paper's RetinaNet (FPN 256, P6 from C5, 4 convs of 256 per
    branch, 9 anchors) on an FNA backbone, on CPU. ``arch``: arch file for "derived"."""
    from detectron2.config import get_cfg

    from .config import add_fna_config

    cfg = get_cfg()
    add_fna_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    cfg.MODEL.BACKBONE.NAME = "build_fna_retinanet_fpn_backbone"
    cfg.MODEL.FNA.NETWORK = network
    cfg.MODEL.FNA.ARCH = arch
    cfg.MODEL.FPN.IN_FEATURES = ["c3", "c4", "c5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 256
    cfg.MODEL.RETINANET.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    cfg.MODEL.RETINANET.NUM_CONVS = 4
    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)]
                                        for s in (32, 64, 128, 256, 512)]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _build(cfg) -> nn.Module:
    from detectron2.modeling import build_model

    from . import modeling  # noqa: F401  (registers the FNA backbones)

    return build_model(cfg)


def _print_report(title: str, report: Dict[str, Cost], input_size, file=None) -> None:
    print(f"{title} at {input_size[0]}x{input_size[1]}:", file=file)
    print(f"  {'part':<10}{'Params (M)':>12}{'MAdds (B)':>12}", file=file)
    for name, c in report.items():
        print(f"  {name:<10}{c.params / 1e6:>12.3f}{c.madds / 1e9:>12.3f}", file=file)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fna_d2.cost",
        description="Params / MAdds (conv layers; see the fna_d2.cost docstring) of the model a "
                    "config builds: backbone, FPN, head, total.")
    parser.add_argument("--config-file", default="", help="detectron2 / fna_d2 YAML config")
    parser.add_argument("--input-size", nargs=2, type=int, default=(800, 1088),
                        metavar=("H", "W"), help="input size (default: 800 1088, the paper's)")
    parser.add_argument("--paper", action="store_true",
                        help="build the paper's RetinaNets (MobileNetV2 and FNA) and compare "
                             "with its table")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    size = tuple(args.input_size)
    if args.paper:
        import os
        import tempfile

        from .arch import fna_retinanet_arch, save_arch

        worst = 0.0
        with tempfile.TemporaryDirectory() as d:
            arch = save_arch(fna_retinanet_arch(), os.path.join(d, "fna.json"))
            for key, network, path in (("mobilenetv2", "seed", ""), ("fna", "derived", arch)):
                cfg = paper_retinanet_cfg(network, path)
                rep = detectron2_model_cost(_build(cfg), size)
                _print_report(f"RetinaNet, {key} backbone", rep, size)
                pp, pm = PAPER_RETINANET[key]
                got_p, got_m = rep["total"].params / 1e6, rep["total"].madds / 1e9
                dp, dm = (got_p / pp - 1) * 100, (got_m / pm - 1) * 100
                worst = max(worst, abs(dp), abs(dm))
                print(f"  paper     {pp:>12.2f}{pm:>12.2f}   (measured {dp:+.2f}% / {dm:+.2f}%)")
        return 0 if worst <= 0.5 else 1
    if not args.config_file:
        parser.error("--config-file is required (or use --paper)")
    from .config import get_fna_cfg

    opts = [o for o in args.opts if o != "--"]
    cfg = get_fna_cfg(args.config_file, opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    rep = detectron2_model_cost(_build(cfg), size)
    _print_report(f"{cfg.MODEL.META_ARCHITECTURE} ({args.config_file})", rep, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
