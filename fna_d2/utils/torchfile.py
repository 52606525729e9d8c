"""Reading a torch checkpoint without reading its tensors: :func:`peek_torch_file` memory-maps
the file (``torch.load(mmap=True, weights_only=True)``), so the structure, the keys and the
small values of a checkpoint of any size come back at the cost of its pickle; tensor data is
read only if touched. Files in torch's legacy (non-zip) format are loaded normally."""
from __future__ import annotations

import zipfile
from typing import Any

import torch

__all__ = ["peek_torch_file"]


def peek_torch_file(path: str) -> Any:
    """The object in the torch file ``path`` (``weights_only=True``, on the CPU, memory-mapped
    when the file is in torch's zip format). Raises what ``torch.load`` raises for a file
    that cannot be read (truncated, corrupt, not a torch file)."""
    if zipfile.is_zipfile(path):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return torch.load(path, map_location="cpu", weights_only=True)
