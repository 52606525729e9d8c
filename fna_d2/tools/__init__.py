"""fna_d2's counterparts of Detectron2's ``tools/`` scripts (which read detectron2's config
only, so fail on ``FNA_PIPELINE`` / ``MODEL.FNA`` keys, and know only detectron2's datasets):
:func:`analyze_model` (``tools/analyze_model.py``), :func:`visualize_json_results`
(``tools/visualize_json_results.py``); ``tools/deploy/export_model.py``'s job is
:mod:`fna_d2.export`'s. Command line: ``python -m fna_d2.tools`` (:mod:`.cli`, docs/tools.md).
"""
from .analyze import TASKS, analyze_model, format_analysis
from .visualize import read_instance_results, visualize_json_results

__all__ = ["TASKS", "analyze_model", "format_analysis", "read_instance_results",
           "visualize_json_results"]
