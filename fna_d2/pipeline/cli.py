"""``python -m fna_d2.pipeline``: the command line of the pipeline.

::

    python -m fna_d2.pipeline --config-file configs/demo/trees_pipeline.yaml \\
        [--num-gpus N] [--output-dir DIR] [--stages derive,adapt] [--force report] \\
        [--status] [--threads T] [--import MODULE_OR_FILE.py ...] [KEY VALUE ...]

Trailing ``KEY VALUE`` overrides go to every stage config, except ``FNA_PIPELINE.*`` /
``OUTPUT_DIR`` (the pipeline's own) and ``STAGE:KEY`` (only that stage, e.g.
``adapt:SOLVER.MAX_ITER 10``). An error about the input (any :class:`~fna_d2.errors.FNAError`:
config, arch file, seed, latency table, pipeline state, an output folder another live run
holds, a ``--import`` module that cannot be imported) is printed on one line, exit code 2.
``--import`` (repeatable) imports a module of yours, e.g. one registering your datasets, here
and in every stage worker; each stage manifest records the list and a re-run hint repeats it
(docs/tools.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from ..errors import FNAError
from ..user_imports import add_import_argument
from ..utils import lock_holder
from ..utils.logs import setup_logging
from .core import Pipeline
from .stages import STAGES

__all__ = ["parse_args", "main"]

PROG = "python -m fna_d2.pipeline"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="FNA pipeline: search -> derive -> adapt -> baseline -> evaluate -> report")
    ap.add_argument("--config-file", required=True, help="pipeline config (FNA_PIPELINE.*)")
    ap.add_argument("--num-gpus", type=int, default=1, help="processes per stage (launch)")
    ap.add_argument("--output-dir", default=None, help="overrides the config's OUTPUT_DIR")
    ap.add_argument("--stages", default="", help=f"comma list out of {','.join(STAGES)}")
    ap.add_argument("--force", default="", help="comma list of stages to re-run anyway")
    ap.add_argument("--status", action="store_true", help="print each stage's status and exit")
    ap.add_argument("--dist-url", default="auto", help="launch() rendezvous URL")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads per process (0: torch's default). On a loaded "
                         "machine 1 can be many times faster than oversubscribed threads")
    add_import_argument(ap)
    ap.add_argument("opts", nargs=argparse.REMAINDER,
                    help="KEY VALUE overrides (every stage), STAGE:KEY VALUE (one stage)")
    return ap.parse_args(argv)


def _csv(s: str) -> List[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the pipeline (or print its status); 0 on success, 2 on an FNAError."""
    args = parse_args(argv)
    try:
        pipe = Pipeline(args.config_file, args.output_dir, args.num_gpus, args.opts,
                        args.dist_url, args.threads, imports=args.imports)
        os.makedirs(pipe.root, exist_ok=True)
        log = os.path.join(pipe.root, "pipeline_log.txt")
        setup_logging(log)
        if args.status:
            holder = lock_holder(pipe.root)
            if holder is not None:
                print(f"{pipe.root} is being run by {holder.describe()}")
            print(pipe.status_table())
            return 0
        pipe.run(_csv(args.stages) or None, force=_csv(args.force))
    except FNAError as e:  # every message names the stage, file, key or value at fault
        print(f"fna_d2.pipeline: error: {e}", file=sys.stderr)
        return 2
    print(f"[pipeline] report: {os.path.join(pipe.root, 'report.md')}")
    return 0
