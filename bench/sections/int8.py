"""Section 7 of ``docs/benchmarks.md``: int8 post-training quantization of the demos' trained
models (``bench/bench_int8.py``, ``python -m fna_d2.quant``): test metric and CPU latency of
float and int8."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .fmt import machine, status, x

__all__ = ["section", "summary"]


def summary(r: Optional[Dict[str, Any]]) -> List[str]:
    if not r:
        return []
    return [f"| int8 quantization | {c['name']} | {c['value']} | {c.get('target') or '-'} | "
            f"{status(c.get('met')) if c.get('met') is not None else c.get('text') or '-'} |"
            for c in r.get("checks", [])]


def section(r: Optional[Dict[str, Any]], doc: str) -> List[str]:
    out = ["## 7. int8 post-training quantization (`bench/bench_int8.py`)", ""]
    if not r:
        return out + ["Not run (needs the demos trained first: see `docs/quantization.md`).", ""]
    s, ld = r["settings"], r.get("load", {})
    out += [f"`python -m fna_d2.quant` on the demos' adapted (searched) models: torch.ao FX "
            f"graph mode, `{s['backend']}` engine, per-channel int8 weights, backbone and head "
            "quantized (the backbone's stem conv, the head's last predictors, the depthwise convs "
            "without a fast int8 kernel, "
            "pre-processing, anchors, NMS and upsampling in float), calibrated on up to "
            f"{s['calib_images']} training images through the test-time mapper; metric on the "
            f"demo's test set with detectron2's evaluator. Latency: the whole model (image in, "
            f"outputs out, as exported), batch 1 at the test size, {s['threads']} torch "
            "thread(s), `torch.utils.benchmark` medians (wall clock). Machine: "
            f"{machine(r['machine'])}; load average {ld.get('start')} at the start, "
            f"{ld.get('end')} at the end (other jobs shared the cores: absolute times are "
            "inflated, the ratio is of the two models timed one after the other).", "",
            "| demo | metric | float | int8 | change | calib. images | float ms | int8 ms | "
            "int8 speed-up | int8 file (MB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for demo, f in r["figures"].items():
        ev, lat = f.get("eval") or {}, f["latency"]
        out.append(f"| {demo} | {ev.get('metric', '-')} | {ev.get('float', 0):.2f} | "
                   f"{ev.get('int8', 0):.2f} | {ev.get('delta', 0):+.2f} | "
                   f"{f['calibration']['images']} | {lat['float']['median_ms']:.1f} | "
                   f"{lat['int8']['median_ms']:.1f} | {x(lat['speedup'])} | "
                   f"{f.get('file_mb', 0):.1f} |")
    out.append("")
    out += [f"- {n}" for n in r.get("notes", [])]
    slower = [d for d, f in r["figures"].items() if f["latency"]["speedup"] < 1]
    out += [f"- int8 is slower than float for {', '.join(slower)} here: per-op overheads "
            "outweigh the cheaper convolutions on this CPU; measure on the target device."
            for _ in slower[:1]]
    out += ["- The depthwise convs the backend has no fast int8 kernel for "
            "(dilated ones under fbgemm / x86) stay in float: in int8 they ran 28-200x slower "
            "than float and made the nuclei model 3.5x slower than float before "
            "(`docs/quantization.md`, \"Where int8 loses\").",
            "- With the stem conv also int8 the nuclei model lost 1.58 mIoU (74.53) in an "
            "earlier run of this benchmark, which is why it stays in float."]
    weights = s.get("weights") or {}
    out += [f"- {d}: weights {w} (given with `--weights`), not the run's model_final.pth."
            for d, w in weights.items()]
    return out + [""]
