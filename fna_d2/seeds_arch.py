# redesign shim: removed after merge (importers: fna_d2/modeling/backbones.py, fna_d2/remap.py,
# fna_d2/report.py, fna_d2/pipeline.py, tests/test_remap.py, tests/test_backbones.py)
"""Seed architectures selectable by ``cfg.MODEL.FNA.SEED``: now in :mod:`fna_d2.arch.named`,
exported by :mod:`fna_d2.arch`."""
from .arch import SEED_ARCHS, efficientnet_lite0_arch, seed_arch  # noqa: F401

__all__ = ["efficientnet_lite0_arch", "SEED_ARCHS", "seed_arch"]
