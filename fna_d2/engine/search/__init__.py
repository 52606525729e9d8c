"""Architecture adaptation (FNA sec. 5): :class:`SearchTrainer` around a
:class:`SearchStepRunner`, one subject a module:

* :mod:`.config`: ``MODEL.FNA.SEARCH`` checks, :class:`SearchSchedule`;
* :mod:`.streams`: reproducible, checkpointable data streams over the arch/weight split;
* :mod:`.step`: :class:`SearchStepRunner`, one iteration = arch steps then weight steps;
* :mod:`.diagnostics`: alpha statistics and the collapse rule;
* :mod:`.state`: the search's checkpoint state and the resume checks;
* :mod:`.eta`: the console's time left, phase by phase (:class:`SearchMetricPrinter`);
* :mod:`.outputs`: arch files, ``alpha_probs.json``, figures (:mod:`.plots`) and the hook
  that writes them;
* :mod:`.trainer`: :class:`SearchTrainer`, the detectron2 trainer and its loop.

The search builds on :mod:`fna_d2.engine.trainer` (never the other way round).
"""
from ...errors import SearchResumeError  # noqa: F401  (re-exported: old import path)
from .config import COST_TYPES, SearchSchedule, check_search_cfg
from .diagnostics import AlphaStats, alpha_stats, collapse_flags
from .eta import Eta, SearchMetricPrinter, SearchPhases, mixed_path_madds_ratio, search_eta
from .outputs import SearchOutputs, SearchOutputWriter
from .state import STATE_VERSION
from .step import SearchStepRunner
from .streams import DataStream, SeededMapDataset, StreamSampler, build_search_streams, mix_seed
from .trainer import SearchTrainer

__all__ = ["SearchTrainer", "SearchStepRunner", "SearchSchedule", "SearchResumeError",
           "DataStream", "StreamSampler", "SeededMapDataset", "AlphaStats", "alpha_stats",
           "collapse_flags", "check_search_cfg", "build_search_streams", "mix_seed",
           "SearchOutputs", "SearchOutputWriter", "COST_TYPES", "STATE_VERSION",
           "SearchMetricPrinter", "SearchPhases", "Eta", "search_eta", "mixed_path_madds_ratio"]
