"""Training engines: :class:`FNATrainer` (parameter adaptation, baselines), :class:`SearchTrainer`
(architecture adaptation) and the ``train_net.py`` entry points."""
from .search import SearchStepRunner, SearchTrainer
from .trainer import FNATrainer, build_trainer, evaluate_only

__all__ = ["FNATrainer", "SearchTrainer", "SearchStepRunner", "build_trainer", "evaluate_only"]
