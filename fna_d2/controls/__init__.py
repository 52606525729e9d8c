"""Controls for a searched architecture: cost-matched random architectures of its search space
and the seed shrunk by hand to its cost (:mod:`.matched`), and the command that writes them as
arch files (``python -m fna_d2.controls``, :mod:`.cli`; :func:`space_of_config` reads a search
config's space and cost settings)."""
from .cli import main, space_of_cfg, space_of_config, write_controls
from .matched import SHRINK_MODES, Matched, backbone_gmadds, sample_matched, shrink_seed

__all__ = ["Matched", "SHRINK_MODES", "backbone_gmadds", "sample_matched", "shrink_seed",
           "space_of_config", "space_of_cfg", "write_controls", "main"]
