"""What the demo dataset builders (:mod:`.trees`, :mod:`.nuclei`) share: the datasets root,
the completeness marker (``stats.json`` with the right ``build_version``, written last), the
atomic directory build (temp sibling + rename) and their command line
(``--root/--src/--force``)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Callable, Dict, Optional, Sequence

__all__ = ["datasets_root", "is_complete", "atomic_build", "run_prepare_cli"]


def datasets_root(root: Optional[str] = None) -> str:
    """``root`` or ``$DETECTRON2_DATASETS`` (default ``./datasets``), made absolute."""
    return os.path.abspath(os.path.expanduser(root or os.environ.get("DETECTRON2_DATASETS") or "datasets"))


def is_complete(path: str, version: int) -> bool:
    """True if ``path`` holds a finished build of ``version`` (its ``stats.json`` says so)."""
    try:
        with open(os.path.join(path, "stats.json")) as f:
            return json.load(f).get("build_version") == version
    except (OSError, ValueError):
        return False


def atomic_build(final: str, build: Callable[[str], Any], version: int, force: bool = False) -> str:
    """Run ``build(tmp_dir)`` in a sibling temp dir and rename it to ``final``.

    Idempotent: returns at once if ``final`` is already complete; safe against concurrent
    builders (the first rename wins, the others discard their copy); an incomplete or stale
    ``final`` is moved aside and replaced (so is a complete one when ``force``).
    """
    if not force and is_complete(final, version):
        return final
    parent = os.path.dirname(final)
    base = os.path.basename(final)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{base}.building-", dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the dataset is for everyone
    except OSError as e:
        raise RuntimeError(
            f"cannot create the dataset directory under {parent}: {e}. Set DETECTRON2_DATASETS "
            f"to a writable directory."
        ) from e
    try:
        build(tmp)
        if not force and is_complete(final, version):  # another process finished first
            return final
        # directory swaps (not file writes): move a stale copy aside, then rename ours in
        if os.path.lexists(final):
            stale = tempfile.mkdtemp(prefix=f".{base}.stale-", dir=parent)
            os.rename(final, os.path.join(stale, base))
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final, version):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def run_prepare_cli(description: str, src_help: str,
                    prepare: Callable[[Optional[str], bool, Optional[str]], str],
                    split_line: Callable[[str, Dict[str, Any], Dict[str, Any]], str],
                    argv: Optional[Sequence[str]] = None) -> int:
    """The ``main()`` of the demo builders: ``--root/--src/--force``, build with
    ``prepare(root, force, src)``, print the path, then one ``split_line(split, split_stats,
    stats)`` per split (``stats``: the built set's ``stats.json``). Returns the exit code."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--root", help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    p.add_argument("--src", help=src_help)
    p.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = p.parse_args(argv)
    try:
        out = prepare(args.root, args.force, args.src)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with open(os.path.join(out, "stats.json")) as f:
        st = json.load(f)
    print(out)
    for split, s in st["splits"].items():
        print(split_line(split, s, st))
    return 0
