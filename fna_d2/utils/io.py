"""Atomic file writes: the data goes to a temporary file beside the target, which is renamed
over it only once complete, so a process killed mid-write leaves the previous file intact."""
from __future__ import annotations

import contextlib
import json
import os
from typing import IO, Any, Iterator, Optional

__all__ = ["atomic_open", "atomic_path", "write_text", "write_json", "read_json"]


def _tmp_name(path: str) -> str:
    root, ext = os.path.splitext(path)
    # keep the extension last: writers that pick a format from it (matplotlib) still can
    return f"{root}.tmp.{os.getpid()}{ext}"


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` for writers that take a file name (e.g. a figure's
    ``savefig``): renamed over ``path`` on a clean exit, removed on an exception. Parent
    folders are created."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", opener: Any = open) -> Iterator[IO]:
    """Open a temporary file for writing; on a clean exit it replaces ``path``, on an
    exception it is removed and ``path`` is untouched. Parent folders are created.
    ``opener(name, mode)``: e.g. detectron2's ``PathManager.open``; the rename is local."""
    if "r" in mode or "a" in mode or "+" in mode:
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not supported")
    kwargs = {} if "b" in mode or opener is not open else {"encoding": "utf-8"}
    with atomic_path(path) as tmp:
        with opener(tmp, mode, **kwargs) as f:
            yield f


def write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return path


def write_json(path: str, obj: Any, indent: Optional[int] = 2, sort_keys: bool = False,
               default: Any = None) -> str:
    """Write ``obj`` as JSON (with a final newline) to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=sort_keys, default=default)
        f.write("\n")
    return path


def read_json(path: str) -> Any:
    """The JSON in ``path``, or None when the file is missing or is not valid JSON (e.g. a
    run killed before the file was complete)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
