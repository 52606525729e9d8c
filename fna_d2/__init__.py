"""fna_d2: FNA (Fast Neural Network Adaptation, ICLR 2020) as a Detectron2 plugin.

Importing the package registers its backbones, heads and demo datasets with detectron2.
"""
from ._check import require_detectron2

require_detectron2()

from .config import add_fna_config, get_fna_cfg  # noqa: E402
from . import data, modeling  # noqa: E402,F401  (demo datasets; backbones, head, meta-arch)

__version__ = "0.1.0"
__all__ = ["add_fna_config", "get_fna_cfg", "__version__"]
