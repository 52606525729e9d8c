"""``python -m fna_d2.latency``: build a latency table on the machine it runs on, or show one.

::

    python -m fna_d2.latency build --space detection --input-size 800 1088 \\
        [--seed mobilenetv2] [--depths 4 4 4 4 4 1] [--output-stride 32] \\
        [--batch 1] [--device cpu|cuda|cuda:N] [--threads T] [--repeats 10] \\
        [--no-tune-malloc] [--force] [--quiet] --out table.json
    python -m fna_d2.latency show table.json

``build`` times every candidate op of the space (the way a search with ``MODEL.FNA.SEARCH.COST
latency`` would: the options map onto ``MODEL.FNA.SEARCH_SPACE``, ``SEED``, ``SEARCH_DEPTHS``,
``OUTPUT_STRIDE`` and ``MODEL.FNA.SEARCH.COST_INPUT_SIZE / LATENCY_BATCH / LATENCY_DEVICE /
LATENCY_THREADS / LATENCY_REPEATS / LATENCY_TUNE_MALLOC``), with progress and time left on
stderr, and writes the table file. It needs torch and fna_d2 only (no detectron2), so it runs
on the deployment device (a phone-class or edge box); a search elsewhere then uses the file
with ``MODEL.FNA.SEARCH.LATENCY_TABLE FILE`` and ``MODEL.FNA.SEARCH.LATENCY_TABLE_FOREIGN
True``. ``show`` prints a table's device, shapes, calibration and a per-layer summary. Bad
input (an :class:`~fna_d2.errors.FNAError`, or a bad option) is reported on one line, exit
status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, NoReturn, Optional, Sequence

from ..arch import SearchSpace, detection_space, seed_arch, segmentation_space, space_from_seed
from ..errors import ConfigError, FNAError
from .progress import Progress
from .table import LatencyTable, describe_device, measure_table, read_latency_table
from .timing import latency_device

__all__ = ["PROG", "SPACES", "build_space", "format_table", "main"]

PROG = "python -m fna_d2.latency"

#: ``--space`` (``MODEL.FNA.SEARCH_SPACE``) -> the space built from a seed
SPACES: Dict[str, Callable[..., SearchSpace]] = {"detection": detection_space,
                                                 "segmentation": segmentation_space}


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``PROG: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_space(name: str, seed: str = "mobilenetv2", depths: Sequence[int] = (),
                output_stride: int = 32) -> SearchSpace:
    """The space a search config with ``MODEL.FNA.SEARCH_SPACE name``, ``SEED seed``,
    ``SEARCH_DEPTHS depths`` and ``OUTPUT_STRIDE output_stride`` searches, as built (dilations
    applied): what its latency table is measured for."""
    if name not in SPACES:
        raise ConfigError(f"--space: unknown search space {name!r}; known: "
                          f"{', '.join(sorted(SPACES))}")
    base = seed_arch(seed)
    space = (space_from_seed(base, tuple(depths), f"{name}{list(depths)}") if depths
             else SPACES[name](base))
    return space.with_output_stride(output_stride)


def _build(args: argparse.Namespace) -> int:
    if min(args.input_size) < 1:
        raise ConfigError(f"--input-size must be two positive sizes H W, got {args.input_size}")
    for opt, v in (("--batch", args.batch), ("--repeats", args.repeats)):
        if v < 1:
            raise ConfigError(f"{opt} must be >= 1, got {v}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    device = str(latency_device(args.device, "--device"))
    space = build_space(args.space, args.seed, args.depths, args.output_stride)
    if os.path.exists(args.out) and not args.force:
        raise ConfigError(f"--out {args.out} exists; pass --force to measure it again")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise ConfigError(f"--out {args.out}: folder {parent} does not exist")
    progress = None if args.quiet else Progress(
        lambda line: print(line, file=sys.stderr, flush=True), every_s=2.0)
    lt = measure_table(space, args.input_size, args.out, args.repeats, device,
                       args.threads or None, not args.no_tune_malloc, batch=args.batch,
                       progress=progress)
    ops = sum(len(row) for row in lt.raw)
    print(f"wrote {args.out}: {len(lt.raw)} searchable layers ({ops} ops) at "
          f"{args.input_size[0]}x{args.input_size[1]} on {describe_device(lt.device)}; "
          f"calibration scale {lt.scale:.3f}. A search uses it with "
          f"MODEL.FNA.SEARCH.LATENCY_TABLE {args.out} (on another machine also "
          f"MODEL.FNA.SEARCH.LATENCY_TABLE_FOREIGN True)")
    return 0


def format_table(lt: LatencyTable) -> List[str]:
    """The lines ``show`` prints: device, shapes, calibration, per-layer fastest/slowest op."""
    h, w = (lt.input_size + ["?", "?"])[:2]
    lines = [f"{lt.path}: latency table, {len(lt.raw)} searchable layers at {h}x{w}, "
             f"{lt.repeats} repeats per op (ms, medians)",
             f"device: {describe_device(lt.device)}"]
    if lt.device.get("malloc"):
        lines.append(f"allocator: {lt.device['malloc']}")
    cal = lt.calibration
    lines.append(f"calibration: scale {lt.scale:.3f} ({len(cal.get('archs') or [])} networks), "
                 f"fixed part (stem + single-candidate layers) {lt.fixed_ms:.3f} ms raw")
    fastest = [min(range(len(r)), key=r.__getitem__) for r in lt.raw]
    slowest = [max(range(len(r)), key=r.__getitem__) for r in lt.raw]
    lines.append(f"whole network, calibrated: fastest {lt.predict(fastest):.3f} ms, slowest "
                 f"{lt.predict(slowest):.3f} ms")
    lines.append(f"{'layer':<8}{'input':>14}{'cout':>6}{'stride':>7}{'dil':>4}   "
                 f"{'fastest (ms)':<18}{'slowest (ms)':<18}")
    for row, rec, f, s in zip(lt.raw, lt.layers, fastest, slowest):
        shape = "x".join(str(v) for v in rec.get("input", []))
        names = rec["candidates"]
        lines.append(f"{'s%s.l%s' % (rec.get('stage'), rec.get('layer')):<8}{shape:>14}"
                     f"{rec.get('cout', ''):>6}{rec.get('stride', ''):>7}"
                     f"{rec.get('dilation', ''):>4}   {names[f]:<6}{row[f]:>10.3f}  "
                     f"{names[s]:<6}{row[s]:>10.3f}")
    return lines


def _show(args: argparse.Namespace) -> int:
    print("\n".join(format_table(read_latency_table(args.table))))
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog=PROG, description="Latency lookup tables of fna_d2 search spaces: build "
                                        "one on this machine, or show one.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    b = sub.add_parser("build", help="time every candidate op of a search space here")
    b.add_argument("--space", required=True,
                   help=f"search space (MODEL.FNA.SEARCH_SPACE): {', '.join(sorted(SPACES))}")
    b.add_argument("--seed", default="mobilenetv2",
                   help="seed whose widths define the space (MODEL.FNA.SEED; default "
                        "mobilenetv2)")
    b.add_argument("--depths", nargs="+", type=int, default=[],
                   help="layers per searchable stage (MODEL.FNA.SEARCH_DEPTHS; default: the "
                        "space's)")
    b.add_argument("--output-stride", type=int, default=32,
                   help="MODEL.FNA.OUTPUT_STRIDE (default 32; 16/8 dilate the later stages)")
    b.add_argument("--input-size", nargs=2, type=int, required=True, metavar=("H", "W"),
                   help="image size (MODEL.FNA.SEARCH.COST_INPUT_SIZE)")
    b.add_argument("--batch", type=int, default=1, help="MODEL.FNA.SEARCH.LATENCY_BATCH (1)")
    b.add_argument("--device", default="cpu",
                   help="cpu, cuda or cuda:N (MODEL.FNA.SEARCH.LATENCY_DEVICE; default cpu)")
    b.add_argument("--threads", type=int, default=0,
                   help="torch threads on the CPU (MODEL.FNA.SEARCH.LATENCY_THREADS; 0: torch's "
                        "default; 1: close to single-core mobile inference)")
    b.add_argument("--repeats", type=int, default=10,
                   help="timed runs per op and network (MODEL.FNA.SEARCH.LATENCY_REPEATS; 10)")
    b.add_argument("--no-tune-malloc", action="store_true",
                   help="leave glibc malloc as it is (MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC "
                        "False)")
    b.add_argument("--out", required=True, help="table file to write (JSON)")
    b.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    b.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s = sub.add_parser("show", help="print a table's device, shapes and per-layer summary")
    s.add_argument("table", help="latency table file")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``build`` or ``show``; 0 on success, 2 on bad input (one line on stderr)."""
    args = _parser().parse_args(argv)
    try:
        return _build(args) if args.command == "build" else _show(args)
    except FNAError as e:
        print(f"fna_d2.latency: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
