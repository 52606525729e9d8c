#!/usr/bin/env python
"""Build ``fna_trees`` (the tree-crown demo detection set, COCO format) under
``$DETECTRON2_DATASETS`` (default ``./datasets``).

The builder is part of the package, :mod:`fna_d2.data.trees` (its docstring and
datasets/README.md give the rules); this is its command line. fna_d2 builds the set by itself
on first use, so running this is optional.

Usage: ``python datasets/prepare_tree_demo.py [--root DIR] [--src DIR] [--force]``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's fna_d2
from fna_d2.data.trees import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
