"""``python -m fna_d2.tools``: fna_d2's counterparts of Detectron2's ``tools/`` scripts, on
fna_d2 configs (``FNA_PIPELINE``, ``MODEL.FNA``) and registrations (the demo datasets, and the
user's through ``--import``). ::

    python -m fna_d2.tools analyze --config-file CFG [--tasks flop,parameter,activation,structure]
        [--num-inputs N] [--output FILE.json] [--import M ...] [KEY VALUE ...]
    python -m fna_d2.tools visualize-json --input coco_instances_results.json --output DIR
        --dataset NAME [--conf-threshold 0.5] [--import M ...]
    python -m fna_d2.tools export [--import M ...] ARGS   # is python -m fna_d2.export ARGS

``export`` hands its arguments to ``python -m fna_d2.export`` (:mod:`fna_d2.export.cli`,
docs/export.md) after the imports. Bad input (an :class:`~fna_d2.errors.FNAError`: config,
dataset, results file, a module that cannot be imported) is one line on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from ..config import get_fna_cfg
from ..errors import FNAError
from ..export import cli as export_cli
from ..user_imports import add_import_argument, import_user_modules, normalize_import_specs
from ..utils import write_json
from ..utils.logs import setup_logging
from .analyze import TASKS, analyze_model, format_analysis, parse_tasks
from .visualize import visualize_json_results

__all__ = ["parse_args", "main"]

PROG = "python -m fna_d2.tools"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description="Detectron2's tools on fna_d2 configs")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    an = sub.add_parser("analyze", help="FLOPs, parameters, activations, structure of a model")
    an.add_argument("--config-file", required=True, help="an fna_d2 config")
    an.add_argument("--tasks", default="flop,parameter",
                    help=f"comma list out of {','.join(TASKS)} (default: flop,parameter)")
    an.add_argument("--num-inputs", type=int, default=1,
                    help="test images to count FLOPs / activations on (averaged)")
    an.add_argument("--output", default=None, help="also write the numbers to this JSON file")
    add_import_argument(an)
    an.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    vj = sub.add_parser("visualize-json", help="draw COCO instance results on a dataset")
    vj.add_argument("--input", required=True, help="coco_instances_results.json")
    vj.add_argument("--output", required=True, help="folder for the PNGs")
    vj.add_argument("--dataset", required=True, help="the registered dataset the results are of")
    vj.add_argument("--conf-threshold", type=float, default=0.5,
                    help="draw detections scoring at least this (default 0.5)")
    add_import_argument(vj)
    sub.add_parser("export", add_help=False,
                   help="python -m fna_d2.export (docs/export.md), after --import")
    return ap.parse_args(argv)


def _export(argv: List[str]) -> int:
    """``export [--import M ...] ARGS``: the imports, then ``fna_d2.export``'s own command."""
    ap = argparse.ArgumentParser(prog=f"{PROG} export", add_help=False)
    add_import_argument(ap)
    known, rest = ap.parse_known_args(argv)
    try:
        import_user_modules(normalize_import_specs(known.imports))
    except FNAError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return export_cli.main(rest)


def _run(args: argparse.Namespace) -> int:
    import_user_modules(normalize_import_specs(args.imports))
    if args.command == "analyze":
        tasks = parse_tasks(args.tasks)
        cfg = get_fna_cfg(args.config_file, args.opts)
        cfg.freeze()
        res = analyze_model(cfg, tasks, args.num_inputs)
        print(format_analysis(res), end="")
        if args.output:
            write_json(args.output, res)
            print(f"[analyze] numbers written to {args.output}")
        return 0
    paths = visualize_json_results(args.input, args.dataset, args.output, args.conf_threshold)
    print(f"[visualize-json] {len(paths)} image(s) written to {args.output}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; 0 on success, 2 on an FNAError (printed on one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        return _export(argv[1:])
    args = parse_args(argv)
    setup_logging(None)
    try:
        return _run(args)
    except FNAError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
