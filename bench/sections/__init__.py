"""The sections of ``docs/benchmarks.md``, one module per benchmark result (``search_step``,
``inference``, ``latency_model``, ``remap_ablation``, ``pipeline``), each with ``section(...)``
(its part of the page) and ``summary(...)`` (its rows of the summary table), and the shared
formatting in :mod:`.fmt`. They only format: the numbers and the verdicts (``checks``) come
from the result files the benchmark scripts wrote."""
