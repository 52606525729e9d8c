"""Whether detectron2 is installed, and the error that says how to install it."""
from typing import Optional

_HOW = (
    "fna_d2 needs detectron2, which has no PyPI package of that name. Run "
    "`bash scripts/setup_env.sh` from the fna_d2 checkout (it installs a pure-Python detectron2 "
    "into ~/.cache/fna_d2/venv), or install upstream detectron2 from source "
    "(`pip install 'git+https://github.com/facebookresearch/detectron2.git'`) where the network "
    "allows it. (Only `python -m fna_d2.latency` and the modules it uses -- fna_d2.arch, "
    "fna_d2.blocks, fna_d2.latency -- work without it.)"
)


def detectron2_import_error() -> Optional[ImportError]:
    """None if detectron2 imports, else the ImportError it raised."""
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        return e
    return None


def require_detectron2() -> None:
    """Raise ImportError with installation instructions when detectron2 is missing."""
    e = detectron2_import_error()
    if e is not None:
        raise ImportError(f"{_HOW} (import error: {e})") from None
