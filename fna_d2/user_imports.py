"""Importing the user's own modules before a dataset is built: ``--import MODULE_OR_FILE.py``
of ``train_net.py``, ``python -m fna_d2.pipeline`` and ``python -m fna_d2.tools``.

Detectron2 knows a dataset once some code has registered it (``register_coco_instances``,
``DatasetCatalog.register``). That code lives in a module of the user's; :func:`import_user_modules`
imports each one named, in order, in the process that calls it. Spawned workers (``--num-gpus``
> 1) start as fresh interpreters, so every entry point passes the list on and calls it again
in each worker: a second call in one process imports nothing twice (a file is kept in
``sys.modules`` under a name made from its absolute path), so a module that registers datasets
at import does so once per process.

A spec is a file when it ends in ``.py`` or names an existing file (resolved against the current
folder), otherwise a dotted module name found on ``sys.path`` / ``PYTHONPATH``. A spec that cannot
be imported is a :class:`~fna_d2.errors.UserModuleError` naming it and what it raised.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from types import ModuleType
from typing import List, Sequence

from .errors import UserModuleError

__all__ = ["add_import_argument", "import_user_modules", "normalize_import_specs"]

IMPORT_HELP = ("a module (dotted name) or .py file to import before any dataset is built, e.g. "
               "one that registers your datasets with Detectron2; repeatable, imported in order "
               "in every process")


def add_import_argument(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--import MODULE_OR_FILE.py`` option (``args.imports``, a list)."""
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE_OR_FILE.py", help=IMPORT_HELP)


def _is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or os.path.isfile(spec)


def normalize_import_specs(specs: Sequence[str]) -> List[str]:
    """``specs`` with each file made absolute (so that a worker, a re-run command or a
    manifest names the same file from any folder); module names unchanged, duplicates
    dropped."""
    out = [os.path.abspath(s) if _is_file_spec(s) else s for s in specs]
    return list(dict.fromkeys(out))


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback, if any."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _import_file(path: str) -> ModuleType:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise UserModuleError(f"--import {path}: file not found")
    digest = hashlib.sha256(path.encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(path))[0])
    name = f"fna_d2_user_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserModuleError(f"--import {path}: not a Python source file Python can load")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise UserModuleError(f"--import {path}: importing the file raised "
                              f"{type(e).__name__}: {e}{_where(e)}") from e
    return module


def _import_name(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise UserModuleError(
                f"--import {name}: no module named {e.name!r} on the Python path (a file needs "
                f"its path, e.g. --import ./{name.replace('.', '/')}.py; a module's folder "
                "must be on PYTHONPATH)") from e
        raise UserModuleError(f"--import {name}: importing the module raised "
                              f"ModuleNotFoundError: {e}{_where(e)}") from e
    except Exception as e:
        raise UserModuleError(f"--import {name}: importing the module raised "
                              f"{type(e).__name__}: {e}{_where(e)}") from e


def import_user_modules(specs: Sequence[str]) -> List[ModuleType]:
    """Import every module / ``.py`` file of ``specs`` in order, in this process (each at most
    once); returns the modules. Raises :class:`~fna_d2.errors.UserModuleError`."""
    return [_import_file(s) if _is_file_spec(s) else _import_name(s) for s in specs]
