"""Search figures (matplotlib, Agg backend, written atomically):

* ``alpha_heatmap.png``: per searchable layer (rows), the softmax(alpha) probability of each
  op (columns); blank where an op is not a candidate of that layer; the argmax is boxed. The
  same figure comes back as an RGB image array (for TensorBoard).
* ``search_curves.png``: expected cost and task losses over iterations, with the end of the
  warm-up marked.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ...utils import pyplot, save_figure

__all__ = ["plot_alpha_heatmap", "plot_search_curves", "read_metrics_json", "merge_series"]

Series = List[Tuple[int, float]]


def plot_alpha_heatmap(probs: Sequence[Sequence[float]], candidates: Sequence[Sequence[str]],
                       layer_names: Sequence[str], path: Optional[str] = None,
                       title: str = "") -> np.ndarray:
    """Heatmap of op probabilities per searchable layer, written to ``path`` (unless None);
    returns the figure as rendered, RGB, channels first (3, H, W), float32 in [0, 1]:
    detectron2's ``EventStorage.put_image`` format."""
    plt = pyplot()
    ops: List[str] = []
    for cands in candidates:
        ops.extend(o for o in cands if o not in ops)
    grid = np.full((len(probs), len(ops)), np.nan)
    for r, (p, cands) in enumerate(zip(probs, candidates)):
        for v, o in zip(p, cands):
            grid[r, ops.index(o)] = v
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(ops), 1.2 + 0.32 * len(probs)))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0.0,
                   vmax=max(1e-6, float(np.nanmax(grid))) if grid.size else 1.0, aspect="auto")
    ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right")
    ax.set_yticks(range(len(layer_names)), layer_names)
    for r, p in enumerate(probs):
        if len(p):
            c = ops.index(candidates[r][int(max(range(len(p)), key=lambda i: p[i]))])
            ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
    fig.colorbar(im, ax=ax, label="softmax(alpha)")
    ax.set_title(title or "op probabilities per searchable layer (argmax boxed)")
    try:
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        image = np.ascontiguousarray(rgba[..., :3].transpose(2, 0, 1), dtype=np.float32) / 255.0
        if path is not None:
            save_figure(fig, path, close=False)
        return image
    finally:
        plt.close(fig)


def read_metrics_json(path: str, keys: Iterable[str]) -> Dict[str, Series]:
    """``{key: [(iteration, value), ...]}`` from detectron2's ``metrics.json`` (one JSON
    object per line); a missing file gives empty series, bad lines are skipped."""
    keys = list(keys)
    out: Dict[str, Dict[int, float]] = {k: {} for k in keys}
    if os.path.isfile(path):
        with open(path, "r", encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(row, dict) or "iteration" not in row:
                    continue
                for k in keys:
                    if k in row:
                        out[k][int(row["iteration"])] = float(row[k])
    return {k: sorted(v.items()) for k, v in out.items()}


def merge_series(*series: Series) -> Series:
    """Union by iteration; later series win (e.g. the in-memory history over the file)."""
    merged: Dict[int, float] = {}
    for s in series:
        merged.update((int(i), float(v)) for i, v in s)
    return sorted(merged.items())


def plot_search_curves(cost: Series, losses: Dict[str, Series], path: str,
                       warmup_iters: Optional[int] = None, cost_label: str = "expected cost"
                       ) -> str:
    """Two panels: ``cost`` and each series of ``losses`` against the iteration."""
    plt = pyplot()
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    if cost:
        ax0.plot([i for i, _ in cost], [v for _, v in cost], color="tab:blue")
    ax0.set_ylabel(cost_label)
    ax0.set_title("architecture search")
    for name, s in losses.items():
        s = [(i, v) for i, v in s if math.isfinite(v)]
        if s:
            ax1.plot([i for i, _ in s], [v for _, v in s], label=name)
    ax1.set_ylabel("task loss")
    ax1.set_xlabel("iteration")
    if any(losses.values()):
        ax1.legend(loc="upper right", fontsize="small")
    if warmup_iters:
        for ax in (ax0, ax1):
            ax.axvline(warmup_iters, color="gray", ls="--", lw=1)
        ax0.text(warmup_iters, ax0.get_ylim()[1], " alternation starts", va="top",
                 fontsize="small", color="gray")
    try:
        return save_figure(fig, path, close=False)
    finally:
        plt.close(fig)
