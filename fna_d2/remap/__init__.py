"""Parameter remapping (FNA, ICLR 2020, section 4) as pure functions on state dicts.

Two steps, both free of ``nn.Module`` s:

1. **Seed adapters** convert a seed checkpoint from its own parameter layout into fna_d2's
   canonical names (``stem.*``, ``stages.{s}.{l}.{expand,dw,project}.{conv,bn}.*``, plus
   ``head.*`` for the 1x1 conv to 1280 and ``classifier.*``), and infer the seed's
   architecture from tensor shapes: :func:`to_canonical` / :func:`from_canonical`
   (:mod:`.canonical`), over the layouts of :mod:`.layouts` (:data:`LAYOUTS`), with the
   architecture from :func:`infer_arch` (:mod:`.infer`).
2. :func:`remap` (:mod:`.core`) maps a canonical seed state dict into a target
   :class:`~fna_d2.arch.Arch` (derived network) or :class:`~fna_d2.arch.SearchSpace` (super
   network): depth first, then width and kernel together (the rules and their ablation
   variants: :mod:`.strategies`), and returns the target state dict plus a
   :class:`RemapReport` (:mod:`.report`).

Seed files and ``fna_d2://`` URIs live in :mod:`fna_d2.seeds`; :func:`load_seed_file`,
:func:`resolve_seed_uri` and :func:`unwrap_state_dict` are re-exported here.
"""
from ..errors import RemapError
from ..seeds.files import unwrap_state_dict
from ..seeds.uri import load_seed_file, resolve_seed_uri
from .canonical import from_canonical, to_canonical
from .core import BN_PARAMS, remap
from .infer import infer_arch
from .layouts import LAYOUTS, detect_layout
from .report import STATUSES, UNUSED_REASONS, RemapReport, TensorRecord, explain_unused
from .strategies import (KERNEL_STRATEGIES, WIDTH_STRATEGIES, depth_map, fit_kernel,
                         select_channels)

__all__ = [
    "RemapError",
    "RemapReport",
    "TensorRecord",
    "LAYOUTS",
    "WIDTH_STRATEGIES",
    "KERNEL_STRATEGIES",
    "STATUSES",
    "UNUSED_REASONS",
    "BN_PARAMS",
    "explain_unused",
    "detect_layout",
    "unwrap_state_dict",
    "to_canonical",
    "from_canonical",
    "infer_arch",
    "depth_map",
    "select_channels",
    "fit_kernel",
    "remap",
    "load_seed_file",
    "resolve_seed_uri",
]
