"""Logging set-up of fna_d2's command lines: :func:`setup_logging` gives the ``fna_d2`` logger
(and, where the caller has not done so already, detectron2's) the handlers detectron2's
``default_setup`` gives ``detectron2``: the console on the main process and ``log.txt`` in the
output folder (``log.txt.rank{N}`` on the others), through
:func:`detectron2.utils.logger.setup_logger`."""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence

from detectron2.utils.logger import setup_logger

__all__ = ["setup_logging", "FNA_LOGGER"]

#: the root logger of every fna_d2 module (``logging.getLogger(__name__)`` under ``fna_d2.``)
FNA_LOGGER = "fna_d2"


def setup_logging(output: Optional[str], distributed_rank: int = 0,
                  names: Sequence[str] = (FNA_LOGGER, "detectron2")) -> List[logging.Logger]:
    """Set up each logger in ``names`` with detectron2's ``setup_logger(output,
    distributed_rank, name=...)``: INFO and above to the console (main process) and to
    ``output`` (a folder, which gets ``log.txt``, or a ``.txt`` / ``.log`` file). Cached by
    detectron2, so calling it again with the same arguments adds no second handler; the
    loggers share one stream per file."""
    return [setup_logger(output, distributed_rank=distributed_rank, name=n) for n in names]
