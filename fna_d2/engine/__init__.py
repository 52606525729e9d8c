"""Training engines: :class:`FNATrainer` (parameter adaptation, baselines; :mod:`.trainer`),
:class:`SearchTrainer` (architecture adaptation; :mod:`.search`, built on the former) and the
entry points :func:`build_trainer` / :func:`evaluate_only` (:mod:`.launch`, the one module that
knows both). :mod:`.data` holds the dataset checks and train mappers, :mod:`.ddp` the
distributed helpers."""
from .launch import build_trainer, evaluate_only
from .search import SearchStepRunner, SearchTrainer
from .trainer import FNATrainer

__all__ = ["FNATrainer", "SearchTrainer", "SearchStepRunner", "build_trainer", "evaluate_only"]
