"""fna_d2: FNA (Fast Neural Network Adaptation, ICLR 2020) as a Detectron2 plugin.

Importing the package registers its backbones, heads and demo datasets with detectron2. Without
detectron2 the package still imports, so that what needs torch only -- ``fna_d2.arch``,
``fna_d2.blocks`` and ``fna_d2.latency`` (``python -m fna_d2.latency build`` on a deployment
device) -- works there; the rest raises an ImportError that says how to install detectron2.
"""
from ._check import detectron2_import_error, require_detectron2

__version__ = "0.1.0"
__all__ = ["add_fna_config", "get_fna_cfg", "__version__"]

if detectron2_import_error() is None:
    from .config import add_fna_config, get_fna_cfg  # noqa: E402
    from . import data, modeling  # noqa: E402,F401  (demo datasets; backbones, head, meta-arch)
else:
    def __getattr__(name: str):
        if name in ("add_fna_config", "get_fna_cfg", "config", "data", "modeling"):
            require_detectron2()
        raise AttributeError(f"module 'fna_d2' has no attribute {name!r}")
