"""Measured-latency lookup tables for the search's cost term (``MODEL.FNA.SEARCH.COST:
latency``), and a check of how well such a table predicts whole networks.

:func:`latency_table` times every candidate op of every searchable layer of a
:class:`~fna_d2.arch.SearchSpace` on a device (the CPU, or a CUDA GPU with synchronised
timing), at the op's input shape for a batch of ``batch`` images of ``input_size``, keeps the
median of ``repeats`` timed runs (milliseconds) and scales it by a whole-network calibration.
``python -m fna_d2.latency build`` builds a table on the machine it runs on (a phone-class or
edge box with torch and fna_d2, no detectron2), ``... show`` prints one; a search uses a table
from another device only when told to (``foreign=True``, ``MODEL.FNA.SEARCH.
LATENCY_TABLE_FOREIGN``). The parts:

* :mod:`.malloc`: the C allocator setting and glibc malloc tuning (``tune_malloc``);
* :mod:`.timing`: the devices latency is measured on, the device key of a table, the clocks
  (:func:`time_module`; synchronising on CUDA), the torch thread count;
* :mod:`.measure`: what is timed (searchable ops, the fixed part, whole networks) and at which
  shapes;
* :mod:`.progress`: progress and time left while a table is measured;
* :mod:`.calibration`: the whole-network calibration scale;
* :mod:`.table`: :class:`LatencyTable`, the cached table file (format version 2), refusal of
  foreign tables (:class:`~fna_d2.errors.LatencyTableError`);
* :mod:`.evaluation`: :func:`predict_vs_measured`, :func:`spearman`;
* :mod:`.cli`: ``python -m fna_d2.latency build | show``.
"""
from ..errors import LatencyTableError
from .calibration import calibrate_table, default_calibration_archs
from .evaluation import predict_vs_measured, spearman
from .malloc import MALLOC_THRESHOLD, apply_malloc_tuning, malloc_signature
from .measure import InferenceNet, layer_shapes, measure_latency_table, timed_inputs
from .progress import Progress
from .table import (FOREIGN_KEY, LATENCY_FORMAT, LATENCY_VERSION, LatencyTable, describe_device,
                    get_latency_table, latency_table, measure_table, read_latency_table)
from .timing import device_signature, latency_device, time_module, timer_for

__all__ = ["LatencyTableError", "LatencyTable", "device_signature", "latency_device",
           "layer_shapes", "timed_inputs", "time_module", "timer_for", "measure_latency_table",
           "measure_table", "read_latency_table", "latency_table", "get_latency_table",
           "describe_device", "calibrate_table", "default_calibration_archs",
           "predict_vs_measured", "spearman", "apply_malloc_tuning", "malloc_signature",
           "InferenceNet", "Progress", "FOREIGN_KEY", "LATENCY_FORMAT", "LATENCY_VERSION",
           "MALLOC_THRESHOLD"]
