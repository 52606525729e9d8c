"""The search's outputs (rank 0; JSON and PNG written atomically), by
:class:`SearchOutputWriter`, at the times the :class:`SearchOutputs` hook picks:

* ``OUTPUT_DIR/arch/arch_iter{N:07d}.json`` every ``DERIVE_PERIOD`` iterations (N = completed
  iterations) and at the end, with ``alpha_probs.json``, ``alpha_heatmap.png`` and
  ``search_curves.png``;
* at the end, ``OUTPUT_DIR/searched_arch.json`` (the input of parameter adaptation's
  ``MODEL.FNA.ARCH``): the argmax architecture (with ``TARGET_COST``: the most probable path
  in the target's band), or, when the search stopped on collapse, the
  last architecture that was not skip-heavy;
* ``search_split.json`` once the search has started (or resumed);
* into the event storage at the same times, for TensorBoard only (``metrics.json`` stays
  small): the heat map as the image ``alpha/heatmap`` and, per searchable layer, a histogram
  ``alpha/s{stage}.l{layer}`` of its softmax(alpha) probabilities.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from detectron2.config import CfgNode
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from ...arch import Arch, save_arch
from ...cost import arch_cost, budgeted_path
from ...data.split import DataSplit, save_split
from ...errors import LatencyTableError
from ...latency import read_latency_table
from ...utils import write_json
from .config import LatencySettings
from .diagnostics import AlphaStats, alpha_stats
from .plots import merge_series, plot_alpha_heatmap, plot_search_curves, read_metrics_json
from .step import SearchStepRunner

__all__ = ["SearchOutputWriter", "SearchOutputs"]

logger = logging.getLogger(__name__)


class SearchOutputWriter:
    """Writes the search's files for a super network ``net`` under ``cfg.OUTPUT_DIR``.
    ``cost_table`` / ``madds_table``: the search's per-op cost table and the GMAdds one;
    ``config_file``: recorded in every arch file's meta (None: null); ``target_band``: the
    (lo, hi) cost band of ``TARGET_COST`` (None: the argmax architecture is derived)."""

    def __init__(self, cfg: CfgNode, net: nn.Module, cost_table: Sequence[Sequence[float]],
                 madds_table: Sequence[Sequence[float]],
                 config_file: Optional[str] = None,
                 target_band: Optional[Tuple[float, float]] = None) -> None:
        self.cfg, self.net = cfg, net
        self.cost_table, self.madds_table = cost_table, madds_table
        self.config_file = config_file
        self.target_band = target_band
        self.output_dir = cfg.OUTPUT_DIR
        self._latency_device: Optional[Dict[str, Any]] = None

    def derived_path(self, stats: Optional[AlphaStats] = None) -> Tuple[List[int], str]:
        """(path, how): the argmax of the alphas, or with a target the most probable path in
        its band (:func:`fna_d2.cost.budgeted_path`; the argmax, with a warning, if no path of
        the space costs that much)."""
        stats = stats or alpha_stats(self.net)
        if self.target_band is None:
            return list(stats.argmax), "argmax"
        logp = [np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-300, None))
                for p in stats.probs]
        path = budgeted_path(logp, self.cost_table, *self.target_band)
        if path is None:
            logger.warning(f"no path of the search space costs {self.target_band[0]:.4g} to "
                           f"{self.target_band[1]:.4g} (MODEL.FNA.SEARCH.TARGET_COST): "
                           f"deriving the argmax architecture")
            return list(stats.argmax), "argmax (no path in the target band)"
        return path, "most probable path in the target band"

    def _target_meta(self) -> Dict[str, Optional[float]]:
        if self.target_band is None:
            return {"target_cost": None, "target_tolerance": None}
        lo, hi = self.target_band
        return {"target_cost": (lo + hi) / 2, "target_tolerance": (hi - lo) / (hi + lo)}

    def derived_arch(self, done: int, path: Optional[Sequence[int]] = None,
                     **extra: Any) -> Arch:
        """The derived architecture (:meth:`derived_path`, or ``path``'s) with the search's
        meta data."""
        s, cfg = self.cfg.MODEL.FNA.SEARCH, self.cfg
        how = "given path"
        if path is None:
            path, how = self.derived_path()
        arch = self.net.path_arch(list(path))
        size = tuple(int(v) for v in s.COST_INPUT_SIZE)
        meta = dict(arch.meta)
        meta.update({
            "name": f"fna_searched_{self.net.space.name}",
            "space": self.net.space.name,
            "seed": int(s.SEED), "lambda": float(s.LAMBDA), "tau": float(s.TAU),
            "cost_type": s.COST, "cost_scale": float(s.COST_SCALE),
            "cost_input_size": list(size),
            "madds_g": arch_cost(arch, size, cfg.MODEL.FNA.OUTPUT_STRIDE).madds / 1e9,
            "searchable_madds_g": sum(self.madds_table[l][c] for l, c in enumerate(path)),
            "derivation": how,
            **self._target_meta(),
            "world_size": comm.get_world_size(), "total_batch": int(cfg.SOLVER.IMS_PER_BATCH),
            "iteration": int(done), "config_file": self.config_file,
            "config_dump": os.path.join(cfg.OUTPUT_DIR, "config.yaml"),
        })
        if s.COST == "latency":
            meta["searchable_latency_ms"] = sum(self.cost_table[l][c] for l, c in enumerate(path))
            meta["latency_device"] = self.latency_device()
        meta.update(extra)
        return Arch(arch.stages, arch.stem_channels, meta)

    def latency_device(self) -> Optional[Dict[str, Any]]:
        """The device record of the latency table the search uses (None if it is unreadable)."""
        if self._latency_device is None:
            path = LatencySettings.from_config(self.cfg).path
            try:
                self._latency_device = read_latency_table(path).device
            except LatencyTableError as e:
                logger.warning(f"cannot record the latency table's device: {e}")
        return self._latency_device

    def write(self, done: int, storage: Optional[EventStorage] = None) -> AlphaStats:
        """arch/arch_iter{done}.json, alpha_probs.json and the PNGs (curves from
        ``metrics.json`` and, newer, ``storage``'s histories), the alphas into ``storage``
        (:meth:`put_alphas`); returns the alpha stats."""
        stats = alpha_stats(self.net)
        save_arch(self.derived_arch(done),
                  os.path.join(self.output_dir, "arch", f"arch_iter{done:07d}.json"))
        self.write_alpha_probs(stats, done)
        heatmap = self.write_plots(stats, done, storage)
        if storage is not None:
            self.put_alphas(stats, storage, heatmap)
        return stats

    def layer_names(self) -> List[str]:
        """``s{stage}.l{layer}`` of each searchable layer (the heat map's rows)."""
        return [f"s{st}.l{li}" for st, li in self.net.space.searchable_layers()]

    def put_alphas(self, stats: AlphaStats, storage: EventStorage,
                   heatmap: Optional[np.ndarray] = None) -> None:
        """For TensorBoard: ``heatmap`` (CHW, [0, 1]) as the image ``alpha/heatmap`` and one
        histogram of softmax(alpha) per searchable layer, ``alpha/s{stage}.l{layer}``."""
        if heatmap is not None:
            storage.put_image("alpha/heatmap", heatmap)
        for name, p in zip(self.layer_names(), stats.probs):
            storage.put_histogram(f"alpha/{name}", torch.tensor(p, dtype=torch.float32),
                                  bins=max(10, len(p)))

    def write_searched_arch(self, done: int, stop_reason: str = "",
                            last_healthy: Optional[Tuple[int, List[int]]] = None,
                            skip_ratio_limit: float = 1.0) -> str:
        """``searched_arch.json``: the last healthy architecture if the search stopped on
        collapse, else the argmax (with a warning in its meta when skip-heavy)."""
        if stop_reason and last_healthy is not None:
            it, path = last_healthy
            arch = self.derived_arch(done, path, stopped_early=stop_reason,
                                     arch_iteration=int(it))
        else:
            stats = alpha_stats(self.net)
            extra = {"stopped_early": stop_reason} if stop_reason else {}
            if stats.skip_ratio > skip_ratio_limit:
                extra["warning"] = (f"skip-heavy architecture (skip ratio "
                                    f"{stats.skip_ratio:.2f})")
            arch = self.derived_arch(done, **extra)
        path = save_arch(arch, os.path.join(self.output_dir, "searched_arch.json"))
        logger.info(f"searched architecture written to {path} "
                    f"({arch.meta['madds_g']:.3f} GMAdds backbone at "
                    f"{arch.meta['cost_input_size']})")
        return path

    def write_alpha_probs(self, stats: AlphaStats, done: int) -> str:
        layers = []
        for (st, li), m, p, a in zip(self.net.space.searchable_layers(), self.net.mixed_ops(),
                                     stats.probs, stats.argmax):
            layers.append({"stage": st, "layer": li, "candidates": list(m.names),
                           "alpha": m.alpha.detach().cpu().double().tolist(), "probs": p,
                           "argmax": m.names[a]})
        return write_json(os.path.join(self.output_dir, "alpha_probs.json"),
                          {"format": "fna_d2.alpha_probs", "version": 1, "iteration": done,
                           "entropy": stats.entropy, "skip_ratio": stats.skip_ratio,
                           "layers": layers})

    def write_plots(self, stats: AlphaStats, done: int,
                    storage: Optional[EventStorage] = None) -> Optional[np.ndarray]:
        """The PNGs; returns the heat map as an image (None if it could not be drawn)."""
        out, s = self.output_dir, self.cfg.MODEL.FNA.SEARCH
        heatmap = None
        try:
            heatmap = plot_alpha_heatmap(stats.probs, [m.names for m in self.net.mixed_ops()],
                                         self.layer_names(),
                                         os.path.join(out, "alpha_heatmap.png"),
                                         f"softmax(alpha) after {done} iterations")
            keys = ["search/expected_cost", "total_loss", "arch/total_loss"]
            series = read_metrics_json(os.path.join(out, "metrics.json"), keys)
            hist = storage.histories() if storage is not None else {}
            for k in keys:
                if k in hist:  # HistoryBuffer.values() holds (value, iteration) pairs
                    series[k] = merge_series(series[k], [(i, v) for v, i in hist[k].values()])
            unit = "GMAdds" if s.COST == "madds" else "ms"
            plot_search_curves(series["search/expected_cost"],
                               {"weight half (total_loss)": series["total_loss"],
                                "arch half (arch/total_loss)": series["arch/total_loss"]},
                               os.path.join(out, "search_curves.png"), s.WARMUP_ITERS,
                               f"expected cost ({unit})")
        except Exception as e:  # a figure must never kill a search
            logger.warning(f"could not write the search plots: {e}")
        return heatmap


class SearchOutputs(HookBase):
    """Registered on rank 0: ``search_split.json`` before training, ``writer.write`` every
    ``period`` iterations, and at the end (also after an early stop on collapse, never after a
    failure) the final outputs and ``searched_arch.json`` from ``runner``'s outcome."""

    def __init__(self, writer: SearchOutputWriter, runner: SearchStepRunner, split: DataSplit,
                 period: int) -> None:
        self.writer, self.runner, self.split = writer, runner, split
        self.period = int(period)

    def before_train(self) -> None:  # after a successful start or resume
        save_split(self.split, os.path.join(self.writer.output_dir, "search_split.json"))

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period and done % self.period == 0 and done < self.trainer.max_iter:
            self.writer.write(done, self.trainer.storage)

    def after_train(self) -> None:
        r, done = self.runner, self.trainer.iter
        if done >= self.trainer.max_iter or r.stop_reason:
            self.writer.write(done, self.trainer.storage)
            self.writer.write_searched_arch(done, r.stop_reason, r.last_healthy,
                                            r.schedule.skip_ratio_limit)
