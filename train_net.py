#!/usr/bin/env python
"""Train, search or evaluate with fna_d2.

The config decides what runs: ``MODEL.FNA.NETWORK: super`` searches (architecture adaptation,
:class:`fna_d2.engine.SearchTrainer`); anything else trains the network it builds (parameter
adaptation or a baseline, :class:`fna_d2.engine.FNATrainer`). Examples::

    python train_net.py --config-file configs/fna_retinanet_search.yaml --num-gpus 8
    python train_net.py --config-file configs/fna_retinanet_adapt.yaml --num-gpus 8
    python train_net.py --config-file configs/fna_retinanet_adapt.yaml --eval-only \
        MODEL.WEIGHTS output/fna_retinanet_adapt/model_final.pth
    python train_net.py --import my_datasets.py --config-file my_adapt.yaml \
        DATASETS.TRAIN '("my_train",)' DATASETS.TEST '("my_val",)'

``--import MODULE_OR_FILE.py`` (repeatable) imports a module of yours, e.g. one that registers
your datasets, in this process and in every worker of ``--num-gpus`` > 1 (docs/tools.md).

For the whole pipeline (search -> derive -> remap -> adapt -> evaluate -> report) use
``python -m fna_d2.pipeline``.

Bad input (an :class:`fna_d2.errors.FNAError`: config, arch file, seed weights, datasets...)
is reported on one line, without a traceback, and the exit code is 2 (also when it happens in
a worker of ``--num-gpus`` > 1). A training or search run holds its ``OUTPUT_DIR`` (the lock of
``fna_d2.utils.lock``, also refusing a folder inside a running pipeline's): a second run into it
exits 2 naming the live run; ``--eval-only`` takes no lock.
"""
import sys

from torch.multiprocessing import ProcessExitedException

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm

import fna_d2  # noqa: F401  (registers backbones, heads, datasets)
from fna_d2.config import get_fna_cfg
from fna_d2.engine import build_trainer, evaluate_only
from fna_d2.errors import FNAError, OutputDirLockedError
from fna_d2.user_imports import add_import_argument, import_user_modules, normalize_import_specs
from fna_d2.utils import OutputDirLock
from fna_d2.utils.logs import FNA_LOGGER, setup_logging

#: exit code for bad input (an FNAError), as argparse uses for a bad command line
EXIT_BAD_INPUT = 2


def setup(args):
    """Build the frozen config from ``--config-file`` and command-line overrides; set up the
    loggers: detectron2's and fvcore's by ``default_setup``, fna_d2's the same way (console on
    the main process, ``OUTPUT_DIR/log.txt``)."""
    cfg = get_fna_cfg(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logging(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), names=(FNA_LOGGER,))
    return cfg


def main(args):
    import_user_modules(args.imports)  # again in a spawned worker: a fresh interpreter
    cfg = setup(args)
    if args.eval_only:
        return evaluate_only(cfg, resume=args.resume)
    trainer = build_trainer(cfg, config_file=args.config_file)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def guarded_main(args):
    """:func:`main` in this process (each worker's with ``--num-gpus`` > 1): an FNAError is
    printed on one line and the process exits with :data:`EXIT_BAD_INPUT`."""
    try:
        return main(args)
    except FNAError as e:
        print(f"train_net.py: error: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)


def hold_output_dir(args):
    """The lock of the run's ``OUTPUT_DIR``, taken in the launching process before the workers
    start (on the first machine only: the others may share its file system); None for
    ``--eval-only``. A folder another live run holds is an :class:`OutputDirLockedError`."""
    if args.eval_only or args.machine_rank != 0:
        return None
    lock = OutputDirLock(get_fna_cfg(args.config_file, args.opts).OUTPUT_DIR)
    if not lock.try_acquire(enclosing=True):
        raise OutputDirLockedError(lock.refusal("another run"))
    return lock


def parse_args(argv=None):
    """detectron2's ``default_argument_parser`` plus ``--import`` (``args.imports``, files made
    absolute so that every worker imports the same ones)."""
    parser = default_argument_parser()
    add_import_argument(parser)
    args = parser.parse_args(argv)
    args.imports = normalize_import_specs(args.imports)
    return args


def invoke_main() -> None:
    args = parse_args()
    print("Command Line Args:", args)
    try:
        import_user_modules(args.imports)  # before anything else: a bad module fails first
        lock = hold_output_dir(args)
    except FNAError as e:
        print(f"train_net.py: error: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        launch(
            guarded_main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ProcessExitedException as e:  # a worker reported its FNAError already
        if e.exit_code != EXIT_BAD_INPUT:
            raise
        sys.exit(EXIT_BAD_INPUT)
    finally:
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    invoke_main()
