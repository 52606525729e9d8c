"""The FNA pipeline in one command: search -> derive -> adapt -> baseline [-> controls] ->
evaluate -> report.

::

    python -m fna_d2.pipeline --config-file configs/demo/trees_pipeline.yaml \\
        [--num-gpus N] [--output-dir DIR] [--stages derive,adapt] [--status] [KEY VALUE ...]

The pipeline config names the stage configs (``FNA_PIPELINE.SEARCH_CONFIG``, ``ADAPT_CONFIG``,
``BASELINE_CONFIG``; relative paths are resolved against the pipeline config's folder) and the
``OUTPUT_DIR``. See ``docs/pipeline.md``.

Modules: :mod:`.core` (:class:`Pipeline`: configs, stage states, the run), :mod:`.stages` (the
stage table), :mod:`.controls` (the optional control stages, ``FNA_PIPELINE.CONTROLS``),
:mod:`.manifest` (``stage.json``, keys), :mod:`.overrides` (``KEY VALUE``
splitting), :mod:`.workers` (train/eval processes through detectron2's ``launch``),
:mod:`.results` (evaluation results), :mod:`.report_data` and :mod:`.measure` (what the report
shows), :mod:`.cli` (the command line).
"""
from ..errors import PipelineError
from .cli import main, parse_args
from .controls import CONTROL_KINDS, stage_table
from .core import Pipeline
from .manifest import MANIFEST
from .overrides import split_opts
from .results import pick_metric
from .stages import STAGE_TABLE, STAGES, TRAINED, StageSpec, check_adapt_arch
from .workers import eval_worker, train_worker

__all__ = ["Pipeline", "PipelineError", "StageSpec", "STAGES", "STAGE_TABLE", "TRAINED",
           "MANIFEST", "main", "parse_args", "split_opts", "pick_metric", "check_adapt_arch",
           "train_worker", "eval_worker", "CONTROL_KINDS", "stage_table"]
