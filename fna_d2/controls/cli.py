"""``python -m fna_d2.controls``: write the controls of a searched architecture as arch files.

    python -m fna_d2.controls sample --config-file configs/demo/trees_search.yaml \\
        --like output/demo/trees/search/arch.json --n 5 --output controls/
    python -m fna_d2.controls shrink --space detection --madds 2.5 --output controls/

``sample``: ``--n`` distinct architectures drawn uniformly from the search space within
``--tol`` (default 3%) of the target backbone MAdds; ``shrink``: the seed shrunk by hand to the
target (``--mode depth``, ``expansion`` or ``both``). The space and the cost's input size come
from ``--config-file`` (the search config: its space, ``MODEL.FNA.SEARCH.COST_INPUT_SIZE`` and
``OUTPUT_STRIDE``; the super network is built, without weights, to read its space) or from
``--space`` / ``--depths`` / ``--input-size`` / ``--output-stride``. The target is ``--madds``
(GMAdds of the backbone) or ``--like`` (an arch file, or ``seed``). Each architecture is
written as ``<output>/<name>.json`` (train it with ``MODEL.FNA.ARCH``), and
``<output>/controls.json`` lists them with their costs. Bad input: one line, exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence, Tuple

from detectron2.config import CfgNode
from detectron2.modeling import build_backbone

from .. import modeling  # noqa: F401  (registers the FNA backbones)
from ..arch import (SearchSpace, detection_space, load_arch, save_arch, seed_arch,
                    segmentation_space, space_from_seed, ssdlite_space)
from ..config import get_fna_cfg
from ..errors import ArchError, FNAError
from ..utils import write_json
from .matched import SHRINK_MODES, Matched, backbone_gmadds, sample_matched, shrink_seed

__all__ = ["main", "space_of_config", "space_of_cfg", "write_controls"]

_SPACES = {"detection": detection_space, "segmentation": segmentation_space,
           "ssdlite": lambda seed: ssdlite_space(detection_space(seed))}
_DEFAULT_SIZE = {"detection": (800, 1088), "segmentation": (1024, 2048), "ssdlite": (320, 320)}


def space_of_config(config_file: str, opts: Sequence[str] = ()
                    ) -> Tuple[SearchSpace, Tuple[int, int], Optional[int], str]:
    """(search space, cost input size, output stride, seed name) of a search config: the space
    is read off the super network the config builds (no weights loaded)."""
    return space_of_cfg(get_fna_cfg(config_file, [o for o in opts if o != "--"]), config_file)


def space_of_cfg(search_cfg: CfgNode, where: str = "the search config"
                 ) -> Tuple[SearchSpace, Tuple[int, int], Optional[int], str]:
    """:func:`space_of_config` of a config already built (not changed: a copy builds the super
    network); ``where`` names it in errors."""
    cfg = search_cfg.clone()
    cfg.defrost()
    cfg.MODEL.FNA.NETWORK = "super"
    cfg.MODEL.FNA.SEED_WEIGHTS = ""
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    backbone = build_backbone(cfg)
    space = next((getattr(m, "space") for m in backbone.modules()
                  if isinstance(getattr(m, "space", None), SearchSpace)), None)
    if space is None:
        raise ArchError(f"{where}: the backbone {cfg.MODEL.BACKBONE.NAME} has no search "
                        f"space (is this a search config?)")
    size = tuple(int(v) for v in cfg.MODEL.FNA.SEARCH.COST_INPUT_SIZE)
    return space, size, int(cfg.MODEL.FNA.OUTPUT_STRIDE), cfg.MODEL.FNA.SEED


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fna_d2.controls", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("sample", "random architectures of the space at the target cost"),
                        ("shrink", "the seed shrunk by hand to the target cost")):
        s = sub.add_parser(name, help=help_)
        src = s.add_argument_group("the space and the cost's input size")
        src.add_argument("--config-file", default="", help="a search config")
        src.add_argument("--space", choices=sorted(_SPACES), default="detection")
        src.add_argument("--seed", default="mobilenetv2", help="seed architecture name")
        src.add_argument("--depths", type=int, nargs="+", default=None,
                         help="layers per searchable stage (as MODEL.FNA.SEARCH_DEPTHS)")
        src.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None)
        src.add_argument("--output-stride", type=int, default=None)
        t = s.add_mutually_exclusive_group(required=True)
        t.add_argument("--madds", type=float, help="target backbone GMAdds")
        t.add_argument("--like", help="an arch file whose cost is the target, or 'seed'")
        s.add_argument("--output", default="", help="folder for the arch files and "
                       "controls.json (default: print only)")
        if name == "sample":
            s.add_argument("--n", type=int, default=5, help="architectures to draw (5)")
            s.add_argument("--tol", type=float, default=0.03, help="relative band (0.03)")
            s.add_argument("--rng-seed", type=int, default=0)
            s.add_argument("--exclude", nargs="*", default=[], help="arch files not to return")
        else:
            s.add_argument("--mode", choices=SHRINK_MODES + ("both",), default="both")
        s.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def _space(a) -> Tuple[SearchSpace, Tuple[int, int], Optional[int], str]:
    if a.config_file:
        return space_of_config(a.config_file, a.opts)
    seed = seed_arch(a.seed)
    space = (space_from_seed(seed, a.depths, f"{a.space}{list(a.depths)}") if a.depths
             else _SPACES[a.space](seed))
    if a.depths and a.space == "ssdlite":
        space = ssdlite_space(space)
    size = tuple(a.input_size) if a.input_size else _DEFAULT_SIZE[a.space]
    os_ = a.output_stride or (16 if a.space == "segmentation" else None)
    return space, size, os_, a.seed


def _target(a, space: SearchSpace, size, os_, seed: str) -> float:
    if a.madds is not None:
        return a.madds
    if a.like == "seed":
        arch = seed_arch(seed)
    else:
        if not os.path.isfile(a.like):
            raise ArchError(f"--like {a.like}: no such arch file (or 'seed')")
        arch = load_arch(a.like)
    return backbone_gmadds(arch, size, os_)


def write_controls(results: List[Matched], out: str, names: List[str], context: dict) -> str:
    """``out/<name>.json`` per architecture and ``out/controls.json`` (``context`` plus one row
    per architecture: its file, cost, error against the target, how it was made); returns the
    path of ``controls.json``."""
    os.makedirs(out, exist_ok=True)
    rows = []
    for m, name in zip(results, names):
        path = save_arch(m.arch, os.path.join(out, f"{name}.json"))
        rows.append({"name": name, "arch_file": os.path.basename(path), "gmadds": m.gmadds,
                     "rel_error": m.rel_error, "method": m.method, **m.info})
    return write_json(os.path.join(out, "controls.json"), dict(context, architectures=rows),
                      indent=1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = _parser().parse_args(argv)
    try:
        space, size, os_, seed = _space(a)
        target = _target(a, space, size, os_, seed)
        if a.command == "sample":
            exclude = [load_arch(f) for f in a.exclude]
            results = sample_matched(space, target, a.n, size, os_, a.tol, a.rng_seed,
                                     exclude=exclude)
            names = [f"random_{i:02d}" for i in range(len(results))]
        else:
            modes = SHRINK_MODES if a.mode == "both" else (a.mode,)
            results = [shrink_seed(seed_arch(seed), space, target, size, os_, m) for m in modes]
            names = [f"{seed}_shrunk_{m}" for m in modes]
    except FNAError as e:
        print(f"fna_d2.controls: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        return 2
    print(f"search space {space.name!r}, backbone MAdds at {size[0]}x{size[1]}; "
          f"target {target:.4f} GMAdds")
    for m, name in zip(results, names):
        ops = " | ".join(" ".join(st.ops) for st in m.arch.stages[1:])
        print(f"  {name:<28}{m.gmadds:>9.4f} GMAdds ({m.rel_error:+.1%}, {m.method})  {ops}")
    if a.output:
        write_controls(results, a.output, names, {"command": a.command, "search_space": space.name,
                                          "input_size": list(size), "output_stride": os_,
                                          "seed": seed, "target_gmadds": target})
        print(f"wrote {len(results)} arch files and controls.json to {a.output}")
    return 0
