"""Import-time check that detectron2 is installed, with the command that installs it."""

_HOW = (
    "fna_d2 needs detectron2, which has no PyPI package of that name. Run "
    "`bash scripts/setup_env.sh` from the fna_d2 checkout (it installs a pure-Python detectron2 "
    "into ~/.cache/fna_d2/venv), or install upstream detectron2 from source "
    "(`pip install 'git+https://github.com/facebookresearch/detectron2.git'`) where the network "
    "allows it."
)


def require_detectron2() -> None:
    """Raise ImportError with installation instructions when detectron2 is missing."""
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{_HOW} (import error: {e})") from None
