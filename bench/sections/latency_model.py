"""Section 3 of ``docs/benchmarks.md``: the latency model (``bench/bench_latency_model.py``,
default allocator, and its ``--malloc tuned`` run: the library's default)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .fmt import checks_by_name, f, img, machine, pct, status

__all__ = ["section", "summary"]


def section(r: Optional[Dict[str, Any]], rt: Optional[Dict[str, Any]], doc: str) -> List[str]:
    """From ``latency_model`` (``r``, default malloc) and ``latency_model_tuned_malloc``
    (``rt``, the library's default, tuned malloc)."""
    out = ["## 3. Latency model (`bench/bench_latency_model.py`)", ""]
    first = rt or r
    if not first:
        return out + ["Not run.", ""]
    s = first["settings"]
    clock = first["figures"].get("clock", "wall")
    runs = [v for v in (rt, r) if v]
    when = "; ".join(
        f"`bench_latency_model.py"
        f"{' --malloc tuned' if v['settings']['malloc'].get('mode') == 'tuned' else ''}` "
        f"on {v.get('date')}, commit `{v['machine'].get('git')}`, load average at its start "
        f"{v['machine'].get('load_average')}, {v['wall_time_s'] / 60:.1f} min" for v in runs)
    ck = checks_by_name(first)
    te, ts = ck[f"mean_rel_error@{clock}"]["target"], ck[f"spearman@{clock}"]["target"]
    out += [f"This section's runs: {when} ({machine(first['machine'])}).", "",
            f"{s['num_archs']} architectures sampled uniformly from the detection space "
            f"(21 searchable layers), {s['input_size'][0]}x{s['input_size'][1]}, batch 1, "
            f"{s['threads']} thread(s), {s['repeats']} timed repeats per op and per network, "
            f"{s['passes']} independent passes (table, calibration and networks re-measured). "
            "Prediction = the library's (`fna_d2.latency.predict_vs_measured` on the "
            "`LatencyTable` built by `get_latency_table`): scale x (measured stem and first "
            "block + sum of the table entries of the architecture's ops), where the scale is the "
            "table's own calibration, stored in the table file: the median of measured / "
            "predicted over 4 fixed whole networks timed when the table is built (per layer the "
            "fastest, median, slowest candidate, and fastest/slowest alternating; none of them "
            "is among the sampled architectures). *Uncalibrated* = the same with scale 1. "
            "Measured = the whole `DerivedNet`. Clocks: **cpu** = the library's code with "
            "`time_module` reading the process CPU time "
            f"({s.get('cpu_clock_estimator', 'median')} over the repeats; immune to the other "
            "processes on this machine), **wall** = the library exactly as shipped. Allocator: "
            "**tuned** = the library's default (`MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC True`, "
            "`fna_d2.latency.apply_malloc_tuning`: glibc's mmap/trim thresholds fixed at 1 GiB "
            "with `mallopt`); **default** = glibc as is (`LATENCY_TUNE_MALLOC False`). The "
            "setting is process-wide and irreversible, so the two are separate runs "
            "(`--malloc tuned` / none); the allocator setting is part of a table's device key.",
            "",
            "| malloc | clock | scale | mean rel. error (calibrated) | signed | uncalibrated |"
            f" signed | Spearman | status (calibrated: {te} / {ts}) | per pass: error / "
            "Spearman | noise floor between passes |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for res, mode in ((rt, "tuned (library default)"), (r, "default")):
        if res:
            out += _rows(res, mode, clock)
    out += ["", "Scale: one value per pass (each pass builds its own table). Errors and "
            "Spearman: median over the passes.", ""]
    out += [" ".join(_reading(r, rt, clock)), ""]
    pf = (r or {}).get("figures", {}).get("minor_page_faults")
    pft = (rt or {}).get("figures", {}).get("minor_page_faults")
    if pf or pft:
        parts = [f"{v['whole_network_per_forward']:.0f} minor page faults per forward pass of a "
                 f"whole network vs {v['layers_alone_per_forward']:.0f} for its layers run alone"
                 f" with the {m} allocator" for v, m in ((pf, "default"), (pft, "tuned")) if v]
        n = (pf or pft)["archs"]
        out += [f"Measured in these runs (first {n} architectures): " + "; ".join(parts) + ".",
                ""]
    out += [img(doc, rt), img(doc, r), ""]
    return out


def _rows(res: Dict[str, Any], mode: str, clock: str) -> List[str]:
    out, ck = [], checks_by_name(res)
    for c in res["settings"].get("clocks", [clock]):
        d = res["figures"][c]
        scales = ", ".join(f(p.get("scale"), 3) for p in d.get("per_pass", []))
        out.append(f"| {mode} | {c} | {scales} | {pct(d['mean_rel_error'])} | "
                   f"{pct(d['mean_signed_rel_error'])} | {pct(d.get('mean_rel_error_raw'))}"
                   f" | {pct(d.get('mean_signed_rel_error_raw'))} | {f(d['spearman'], 3)} | "
                   f"{status(ck[f'mean_rel_error@{c}']['met'])} / "
                   f"{status(ck[f'spearman@{c}']['met'])} | "
                   + ", ".join(f"{pct(p['mean_rel_error'])} / {f(p['spearman'], 3)}"
                               for p in d.get("per_pass", [])) + " | "
                   f"{pct(d.get('measured_noise_between_passes'))} (rank corr. "
                   f"{f(d.get('measured_rank_corr_between_passes'), 3)}) |")
    return out


def _reading(r: Optional[Dict[str, Any]], rt: Optional[Dict[str, Any]], clock: str) -> List[str]:
    reading = ["Reading."]
    if rt:
        dt = rt["figures"][rt["figures"].get("clock", clock)]
        bias = checks_by_name(rt)["uncalibrated_bias"]["text"]
        reading.append(
            f"With the library's defaults (tuned allocator, calibrated table; {clock} clock) the "
            f"table predicts whole networks to {pct(dt['mean_rel_error'])} on average with rank "
            f"correlation {f(dt['spearman'], 3)}; without the calibration the error is "
            f"{pct(dt.get('mean_rel_error_raw'))}, {bias}"
            f" ({pct(dt.get('mean_signed_rel_error_raw'))}): ops timed alone and repeatedly "
            "run with warm caches, in a network they do not. The scale, fitted on 4 fixed networks, "
            f"leaves a bias of {pct(dt['mean_signed_rel_error'])} on the sampled ones (per "
            "pass: " + ", ".join(pct(p["mean_signed_rel_error"]) for p in dt.get("per_pass", []))
            + f"; the same networks' measured latencies differ by "
            f"{pct(dt.get('measured_noise_between_passes'))} between passes).")
    if r:
        dd = r["figures"][r["figures"].get("clock", clock)]
        better = checks_by_name(rt).get("tuned_malloc_better") if rt else None
        worse = better is None or better["met"]
        reading.append(
            f"With glibc's allocator as is, the error is {pct(dd['mean_rel_error'])} "
            f"calibrated ({pct(dd.get('mean_rel_error_raw'))} uncalibrated) and the rank "
            f"correlation {f(dd['spearman'], 3)}"
            + ("." if not worse else ": glibc returns freed buffers above its "
               "(dynamic) mmap threshold to the kernel, so in a whole network the multi-MB "
               "activations of the high-resolution layers are page-faulted in again on every "
               "forward pass, while an op timed alone reuses its buffers. How much a network pays "
               "depends on its ops, so this error is architecture-dependent and no scale removes "
               "it; fixing the thresholds does (hence the library's default)."))
    reading.append(
        "For the search the scale does not matter: its cost loss is LAMBDA x log(COST_SCALE x "
        "E) / log(TAU) with E the softmax-weighted sum of the table entries "
        "(`fna_d2/engine/search/step.py`), so a constant factor adds log(scale) and leaves every "
        "architecture gradient unchanged; what matters there is the rank correlation, which the "
        "allocator setting decides. The scale makes the table's milliseconds (the logged "
        "expected cost, `searchable_latency_ms`) those of whole networks.")
    return reading


def summary(r: Optional[Dict[str, Any]], rt: Optional[Dict[str, Any]]) -> List[str]:
    out = []
    for res, what in ((rt, "tuned malloc = library default"), (r, "default malloc")):
        if not res:
            continue
        g, ck = res["figures"], checks_by_name(res)
        e, sp = ck[f"mean_rel_error@{g.get('clock')}"], ck[f"spearman@{g.get('clock')}"]
        out.append(f"| latency model | mean relative error, calibrated ({what}, {g.get('clock')}"
                   f" clock) | {pct(g['mean_rel_error'])} (uncalibrated "
                   f"{pct(g.get('mean_rel_error_raw'))}) | {e['target']} | "
                   f"{status(e['met'])} |")
        out.append(f"| latency model | Spearman rank correlation ({what}) | "
                   f"{f(g['spearman'], 3)} | {sp['target']} | {status(sp['met'])} |")
    return out
