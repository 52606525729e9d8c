#!/usr/bin/env python
"""Train, search or evaluate with fna_d2.

The config decides what runs: ``MODEL.FNA.NETWORK: super`` searches (architecture adaptation,
:class:`fna_d2.engine.SearchTrainer`); anything else trains the network it builds (parameter
adaptation or a baseline, :class:`fna_d2.engine.FNATrainer`). Examples::

    python train_net.py --config-file configs/fna_retinanet_search.yaml --num-gpus 8
    python train_net.py --config-file configs/fna_retinanet_adapt.yaml --num-gpus 8
    python train_net.py --config-file configs/fna_retinanet_adapt.yaml --eval-only \
        MODEL.WEIGHTS output/fna_retinanet_adapt/model_final.pth

For the whole pipeline (search -> derive -> remap -> adapt -> evaluate -> report) use
``python -m fna_d2.pipeline``.
"""
from detectron2.engine import default_argument_parser, default_setup, launch

import fna_d2  # noqa: F401  (registers backbones, heads, datasets)
from fna_d2.config import get_fna_cfg
from fna_d2.engine import build_trainer, evaluate_only


def setup(args):
    """Build the frozen config from ``--config-file`` and command-line overrides."""
    cfg = get_fna_cfg(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        return evaluate_only(cfg, resume=args.resume)
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
