"""Content hashes (sha256, hex) of files and text."""
from __future__ import annotations

import hashlib

__all__ = ["file_sha256", "text_sha256"]


def file_sha256(path: str) -> str:
    """sha256 (hex) of the file at ``path``, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def text_sha256(text: str) -> str:
    """sha256 (hex) of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
