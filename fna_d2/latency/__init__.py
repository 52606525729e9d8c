"""Measured-latency lookup tables for the search's cost term (``MODEL.FNA.SEARCH.COST:
latency``), and a check of how well such a table predicts whole networks.

:func:`latency_table` times every candidate op of every searchable layer of a
:class:`~fna_d2.arch.SearchSpace` on the current device, at the op's input shape for a
batch-1 image of ``input_size``, keeps the median of ``repeats`` timed runs (milliseconds) and
scales it by a whole-network calibration. The parts:

* :mod:`.malloc`: the C allocator setting and glibc malloc tuning (``tune_malloc``);
* :mod:`.timing`: the device key of a table, :func:`time_module`, the torch thread count;
* :mod:`.measure`: what is timed (searchable ops, the fixed part, whole networks);
* :mod:`.calibration`: the whole-network calibration scale;
* :mod:`.table`: :class:`LatencyTable`, the cached table file (format version 2), refusal of
  foreign tables (:class:`~fna_d2.errors.LatencyTableError`);
* :mod:`.evaluation`: :func:`predict_vs_measured`, :func:`spearman`.
"""
from ..errors import LatencyTableError
from .calibration import calibrate_table, default_calibration_archs
from .evaluation import predict_vs_measured, spearman
from .malloc import MALLOC_THRESHOLD, apply_malloc_tuning, malloc_signature
from .measure import layer_shapes, measure_latency_table
from .table import LATENCY_FORMAT, LATENCY_VERSION, LatencyTable, get_latency_table, latency_table
from .timing import device_signature, time_module

__all__ = ["LatencyTableError", "LatencyTable", "device_signature", "layer_shapes",
           "time_module", "measure_latency_table", "latency_table", "get_latency_table",
           "calibrate_table", "default_calibration_archs", "predict_vs_measured", "spearman",
           "apply_malloc_tuning", "malloc_signature", "LATENCY_FORMAT", "LATENCY_VERSION",
           "MALLOC_THRESHOLD"]
