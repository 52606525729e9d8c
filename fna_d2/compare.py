"""Compare several pipeline runs (e.g. the same configs with ``SEED 0``, ``SEED 1``, ...).

On small data one run per network says little: the run-to-run spread of AP / mIoU can exceed
the difference between the searched net and the seed. This module reads the ``evaluate`` stage
of N pipeline output directories and writes a Markdown table of every run, the mean and sample
standard deviation per network, the paired difference (searched - seed, run by run) and a PNG
with every run's points::

    python -m fna_d2.compare output/demo/trees output/demo/trees_seed1 --output compare.md

Nothing here trains or evaluates; a run whose ``evaluate`` stage has not finished is an error
that names the missing file and the command that produces it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import yaml

from .errors import CompareError, FNAError
from .tasks import NET_NAMES
from .utils import file_sha256, fmt_number, mean_std, pyplot, save_figure, write_text

__all__ = ["RunResult", "CompareError", "load_run", "summarize", "t975", "plot_runs",
           "write_comparison", "main"]

SEARCHED, SEED = "adapt", "baseline"


@dataclass
class RunResult:
    """The evaluated numbers of one pipeline run."""

    name: str                                   # the output directory as given
    metric: str                                 # "AP" or "mIoU"
    numbers: Dict[str, Dict[str, float]]        # stage ("adapt"/"baseline") -> metric -> value
    rng_seed: Optional[int] = None                  # SEED of the adapt stage's config
    arch_sha: Optional[str] = None              # sha256 (12 hex) of derive/arch.json


def _rng_seed_of(config_yaml: str) -> Optional[int]:
    """Top-level ``SEED`` of a dumped detectron2 config, read without building the config."""
    if not os.path.isfile(config_yaml):
        return None
    with open(config_yaml, encoding="utf-8") as f:
        seed = (yaml.safe_load(f) or {}).get("SEED")
    return int(seed) if isinstance(seed, int) else None


def load_run(out_dir: str) -> RunResult:
    """Read ``out_dir/evaluate/results.json`` (written by ``python -m fna_d2.pipeline``)."""
    if not os.path.isdir(out_dir):
        raise CompareError(f"{out_dir}: not a directory (expected a pipeline OUTPUT_DIR)")
    path = os.path.join(out_dir, "evaluate", "results.json")
    if not os.path.isfile(path):
        raise CompareError(
            f"{path} is missing: the run's evaluate stage has not finished; run "
            f"`python -m fna_d2.pipeline --config-file <pipeline.yaml> --output-dir {out_dir}`")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CompareError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or SEARCHED not in data:
        raise CompareError(f"{path}: no '{SEARCHED}' entry (keys: {sorted(data)})"
                           if isinstance(data, dict) else f"{path}: expected a JSON object")
    metrics = {v.get("metric") for v in data.values() if isinstance(v, dict)}
    if len(metrics) != 1 or None in metrics:
        raise CompareError(f"{path}: the networks disagree on the metric "
                           f"({sorted(map(str, metrics))})")
    numbers: Dict[str, Dict[str, float]] = {}
    for stage, v in data.items():
        nums = v.get("numbers") or {}
        numbers[stage] = {k: float(x) for k, x in nums.items() if x is not None}
    arch = os.path.join(out_dir, "derive", "arch.json")
    sha = file_sha256(arch)[:12] if os.path.isfile(arch) else None
    return RunResult(name=out_dir, metric=metrics.pop(), numbers=numbers,
                     rng_seed=_rng_seed_of(os.path.join(out_dir, SEARCHED, "config.yaml")), arch_sha=sha)


# two-sided 95% quantiles of Student's t, df = 1..30 (standard tables); 1.960 beyond
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.960


def summarize(runs: Sequence[RunResult], key: Optional[str] = None) -> Dict[str, dict]:
    """Mean and sample std (n-1) per network of ``key`` (default: the runs' metric), and of the
    paired difference searched - seed over the runs that have both. Pure."""
    if not runs:
        raise CompareError("no runs to compare")
    metrics = {r.metric for r in runs}
    if len(metrics) != 1:
        raise CompareError("runs of different tasks: " + ", ".join(
            f"{r.name} ({r.metric})" for r in runs))
    key = key or runs[0].metric
    out: Dict[str, dict] = {}
    stages = [s for s in (SEARCHED, SEED) if any(s in r.numbers for r in runs)]
    for s in stages:
        out[s] = mean_std([r.numbers[s][key] for r in runs if key in r.numbers.get(s, {})])
    if SEARCHED in stages and SEED in stages:
        diffs = [r.numbers[SEARCHED][key] - r.numbers[SEED][key] for r in runs
                 if key in r.numbers.get(SEARCHED, {}) and key in r.numbers.get(SEED, {})]
        out["difference"] = mean_std(diffs)
        d = out["difference"]
        d["searched_ahead"] = sum(x > 0 for x in diffs)
        if d["std"] is not None:  # 95% confidence interval of the mean paired difference
            half = t975(d["n"] - 1) * d["std"] / math.sqrt(d["n"])
            d["ci95"] = (d["mean"] - half, d["mean"] + half)
    return out


def _pm(s: dict) -> str:
    """``mean +- std`` (``n/a`` without values, the mean alone for one value)."""
    return fmt_number(s["mean"]) + ("" if s["std"] is None else f" +- {fmt_number(s['std'])}")


def plot_runs(path: str, runs: Sequence[RunResult], key: str) -> str:
    """Every run's ``key`` per network (points joined run by run) over the mean bars."""
    plt = pyplot()
    stages = [s for s in (SEARCHED, SEED) if any(key in r.numbers.get(s, {}) for r in runs)]
    fig, ax = plt.subplots(figsize=(4.2 + 0.4 * len(stages), 3.4))
    summ = summarize(runs, key)
    xs = list(range(len(stages)))
    ax.bar(xs, [summ[s]["mean"] or 0.0 for s in stages], color=["#f2b8b6", "#b9cdf0"][:len(xs)],
           width=0.6, label="mean")
    for r in runs:
        pts = [(i, r.numbers[s][key]) for i, s in enumerate(stages) if key in r.numbers.get(s, {})]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="0.3", alpha=0.7, lw=1)
    ax.set_xticks(xs)
    ax.set_xticklabels([NET_NAMES.get(s, s) for s in stages])
    ax.set_ylabel(key)
    ax.set_title(f"{key} per run (lines join the networks of one run), n={len(runs)}")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return save_figure(fig, path)


def write_comparison(path: str, runs: Sequence[RunResult], plot: bool = True) -> str:
    """Markdown comparison of ``runs`` at ``path`` (plus ``<stem>.png`` when ``plot``)."""
    summ = summarize(runs)
    key = runs[0].metric
    keys = [key] + [k for k in runs[0].numbers.get(SEARCHED, {}) if k != key]  # metric first
    lines = [f"# FNA runs compared: {key}", "",
             f"{len(runs)} pipeline runs; each trains every network once. Mean +- sample "
             "standard deviation over the runs; the difference is searched - seed within a run.",
             "", "| run | SEED | derived arch (sha256) | " + " | ".join(
                 f"{NET_NAMES[s]} {k}" for s in (SEARCHED, SEED) for k in keys) + " |",
             "|---|---|---|" + "---|" * (2 * len(keys))]
    for r in runs:
        cells = [fmt_number(r.numbers.get(s, {}).get(k)) for s in (SEARCHED, SEED) for k in keys]
        lines.append(f"| `{r.name}` | {r.rng_seed if r.rng_seed is not None else '?'} | "
                     f"{r.arch_sha or 'n/a'} | " + " | ".join(cells) + " |")
    lines += ["", f"| network | {key} (mean +- std) | runs |", "|---|---|---|"]
    for s in (SEARCHED, SEED):
        if s in summ:
            lines.append(f"| {NET_NAMES[s]} | {_pm(summ[s])} | {summ[s]['n']} |")
    if "difference" in summ:
        d = summ["difference"]
        lines.append(f"| searched - seed | {_pm(d)} | {d['n']} |")
        lines += ["", f"The searched net was ahead in {d['searched_ahead']} of {d['n']} runs."]
        if "ci95" in d:
            lo, hi = d["ci95"]
            verdict = ("excludes 0: the runs support a difference" if lo > 0 or hi < 0 else
                       "includes 0: the runs do not show a difference")
            lines.append(f"95% confidence interval of the mean difference (Student's t, "
                         f"{d['n'] - 1} df): [{fmt_number(lo)}, {fmt_number(hi)}]; it {verdict}.")
        else:
            lines.append("One run: no spread to compare the difference with; run the pipeline "
                         "again with other seeds (`--output-dir OTHER SEED n`).")
    shas = {r.arch_sha for r in runs}
    if len(shas) > 1:
        lines += ["", "The runs derived different architectures (sha256 column): the spread "
                  "includes the search's run-to-run variation, not only training noise."]
    if plot:
        png = os.path.splitext(path)[0] + ".png"
        plot_runs(png, runs, key)
        lines += ["", f"![{key} per run]({os.path.basename(png)})"]
    return write_text(path, "\n".join(lines) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fna_d2.compare", description=__doc__.split(
        "\n")[0])
    ap.add_argument("runs", nargs="+", help="pipeline output directories (OUTPUT_DIR of each run)")
    ap.add_argument("--output", default="compare.md", help="Markdown file to write (and .png)")
    ap.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    a = ap.parse_args(argv)
    try:
        runs: List[RunResult] = [load_run(d) for d in a.runs]
        path = write_comparison(a.output, runs, plot=not a.no_plot)
    except FNAError as e:  # CompareError, or any other input error: one line naming it
        ap.exit(2, f"error: {e}\n")
    with open(path, encoding="utf-8") as f:
        print(f.read(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
