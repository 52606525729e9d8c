#!/usr/bin/env python
"""Does the demo's search decide, and what makes it? The nuclei demo search (its config as
``make demo-seg`` runs it) with the architecture learning rate varied, each with several
search seeds (``MODEL.FNA.SEARCH.SEED``, which seeds the super network's initialisation,
the alphas included, the train/arch split and the data order; ``SEED`` too):

- **entropy**: the final softmax(alpha) normalised entropy, mean over layers (1 = uniform);
- **top-1 probability** and **margin** (top-1 - top-2), mean over layers;
- **churn**: the fraction of searchable layers whose derived operation differs between the
  derived architecture 100 iterations before the end and the final one (a search that has
  decided no longer changes its mind);
- **agreement**: the fraction of layers where two search seeds derive the same operation, mean
  over the pairs of seeds, against the chance agreement of uniform draws (a search driven by
  the task's signal derives the same network from different seeds; one driven by noise agrees
  by chance only).

``--signal`` explains the numbers: it runs the demo search once more keeping its checkpoints
and measures, with the weights remapped (start), after the warm-up and at the end, the per-batch
signal-to-noise ratio of the architecture gradient and the functional spread of each layer's
candidates (:mod:`alpha_signal`), and the logit drift Adam can make of that SNR in the demo's
arch steps per learning rate.

``--train SETTING`` also trains the seed-0 architecture of that setting with the adaptation
config and the training seeds of ``bench/bench_fna_claims.py``, so its mIoU sits beside the
claims' searched, random and seed networks (same schedule, same training seeds).

Records (one per search or training) go to ``bench/results/search_decision/<demo>/`` and are
committed: the benchmark resumes. Summary: ``bench/results/search_decision.json`` and
``docs/img/search_decision.png``.

    python bench/bench_search_decision.py [--settings default,alpha_lr_0.1] [--seeds 2]
        [--train alpha_lr_0.1]
"""
from __future__ import annotations

import itertools
import os
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from ablation_jobs import Runner  # noqa: E402
from alpha_signal import candidate_spread, gradient_signal, median, summarize_signal  # noqa: E402
from bench_fna_claims import DEMOS, job_opts  # noqa: E402
from fna_d2.arch import load_arch, save_arch  # noqa: E402
from fna_d2.engine.search import SearchTrainer  # noqa: E402
from fna_d2.utils import mean_std, pyplot, read_json, write_json  # noqa: E402

NAME = "search_decision"
DEMO = "nuclei"
#: setting -> overrides of the demo search config (the default is the demo's own: 1e-2)
SETTINGS: Dict[str, List[Any]] = {
    "default": [],
    "alpha_lr_0.03": ["SOLVER.ARCH.BASE_LR", 0.03],
    "alpha_lr_0.1": ["SOLVER.ARCH.BASE_LR", 0.1],
    "alpha_lr_0.1_split_0.5": ["SOLVER.ARCH.BASE_LR", 0.1, "MODEL.FNA.SEARCH.ARCH_SPLIT", 0.5],
}
#: iterations before the end of the derived architecture churn is measured against
CHURN_BACK = 100
#: --signal: arch batches per gradient measurement, and the learning rates drift is given for
SIGNAL_BATCHES = 24
SIGNAL_LRS = [0.01, 0.03, 0.1]


def flat_ops(arch_file: str) -> List[str]:
    """The operation of every layer of a derived architecture (skips included), in order."""
    return [op for s in load_arch(arch_file).stages for op in s.ops]


def search_stats(out_dir: str) -> Dict[str, Any]:
    """Entropy, top-1, margin, the derived operations and churn of one finished search."""
    probs = read_json(os.path.join(out_dir, "alpha_probs.json"))
    layers = probs["layers"]
    top = [sorted(l["probs"], reverse=True) for l in layers]
    snaps = {int(f[len("arch_iter"):-len(".json")]): os.path.join(out_dir, "arch", f)
             for f in os.listdir(os.path.join(out_dir, "arch")) if f.startswith("arch_iter")}
    last = max(snaps)
    back = max((i for i in snaps if i <= last - CHURN_BACK), default=min(snaps))
    a, b = flat_ops(snaps[back]), flat_ops(snaps[last])
    searchable = len(layers)
    changed = sum(x != y for x, y in zip(a, b))
    return {"entropy": probs["entropy"],
            "logit_range": sum(max(l["alpha"]) - min(l["alpha"]) for l in layers) / len(layers),
            "top1": sum(t[0] for t in top) / len(top),
            "margin": sum(t[0] - t[1] for t in top) / len(top),
            "ops": [l["argmax"] for l in layers],
            "candidates": [len(l["candidates"]) for l in layers],
            "churn": changed / searchable, "iterations": last, "churn_from": back}


def agreement(runs: List[Dict[str, Any]]) -> Optional[float]:
    """Mean fraction of layers two searches derive alike, over the pairs (None: < 2 runs)."""
    pairs = list(itertools.combinations(runs, 2))
    if not pairs:
        return None
    return sum(sum(x == y for x, y in zip(a["ops"], b["ops"])) / len(a["ops"])
               for a, b in pairs) / len(pairs)


def chance_agreement(candidates: List[int]) -> float:
    """Agreement of two uniform draws: mean over layers of 1 / number of candidates."""
    return sum(1.0 / n for n in candidates) / len(candidates)


class Bench:
    def __init__(self, a) -> None:
        self.a, self.spec = a, DEMOS[DEMO]
        self.rec = os.path.join(a.results_dir, NAME, DEMO)
        self.scratch = C.scratch(NAME, DEMO, quick=a.quick)
        self.runner = Runner(self.scratch, workers=1, threads=a.threads, label=NAME)
        os.makedirs(os.path.join(self.rec, "archs"), exist_ok=True)

    def path(self, rid: str) -> str:
        return os.path.join(self.rec, f"{rid}.json")

    def search(self, setting: str, seed: int) -> str:
        rid = f"search_{setting}_s{seed}"
        arch = os.path.join(self.rec, "archs", f"{rid}.json")
        if not os.path.exists(self.path(rid)):
            out = os.path.join(self.scratch, rid)
            opts = (job_opts(DEMO, self.a.quick, out, seed)
                    + ["MODEL.FNA.SEARCH.SEED", seed] + SETTINGS[setting])
            res = self.runner.run_record(
                {"id": rid, "kind": "search", "config": self.spec["search"], "opts": opts},
                {"setting": setting, "search_seed": seed})
            res.update(search_stats(out))
            save_arch(load_arch(res["arch_path"]).skips_to_end(), arch)
            write_json(self.path(rid), C.clean_json(res), indent=1)
        return arch

    def train(self, setting: str, arch: str, seed: int) -> None:
        rid = f"train_{setting}_s{seed}"
        if os.path.exists(self.path(rid)):
            return
        out = os.path.join(self.scratch, rid)
        res = self.runner.run_record(
            {"id": rid, "kind": "train", "config": self.spec["adapt"],
             "opts": job_opts(DEMO, self.a.quick, out, seed) + ["MODEL.FNA.ARCH", arch]},
            {"setting": setting, "train_seed": seed, "arch_file": os.path.relpath(arch, C.REPO)})
        write_json(self.path(rid), C.clean_json(res), indent=1)


def signal(a) -> Dict[str, Any]:
    """``--signal`` (module doc); its record is ``signal.json`` in the records folder."""
    rec = os.path.join(a.results_dir, NAME, DEMO, "signal.json")
    if os.path.exists(rec):
        return read_json(rec)
    spec = DEMOS[DEMO]
    out = os.path.join(C.scratch(NAME, DEMO, quick=a.quick), "signal_search")
    opts = (job_opts(DEMO, a.quick, out, 0)  # with periodic checkpoints (the last key wins)
            + ["SOLVER.CHECKPOINT_PERIOD", 2 if a.quick else 150])
    final = os.path.join(out, "model_final.pth")
    t0 = time.perf_counter()
    if not os.path.exists(final):
        p = C.run_python([os.path.join(C.REPO, "train_net.py"), "--config-file", spec["search"]]
                         + [str(o) for o in opts], log_path=out + ".log",
                         env={"OMP_NUM_THREADS": str(a.threads)})
        if p.returncode != 0:
            raise RuntimeError(f"the signal search failed: see {out}.log")
    cfg = C.demo_cfg(spec["search"], opts)
    trainer = SearchTrainer(cfg)
    trainer.resume_or_load(resume=False)  # the seed remapped into the super network
    warm = cfg.MODEL.FNA.SEARCH.WARMUP_ITERS
    arch_steps = (cfg.SOLVER.MAX_ITER - warm) * cfg.MODEL.FNA.SEARCH.ARCH_STEPS
    ckpts = sorted(f for f in os.listdir(out) if f.startswith("model_0") and f.endswith(".pth"))
    states = {"start (remapped)": None,
              "end of warm-up": os.path.join(out, ckpts[0]) if ckpts else None,
              "end": final}
    doc: Dict[str, Any] = {"arch_steps": arch_steps, "batches": SIGNAL_BATCHES, "states": {}}
    for name, path in states.items():
        if path is None and name != "start (remapped)":
            continue
        if path:
            trainer.checkpointer.load(path, checkpointables=[])
        batches = 2 if a.quick else SIGNAL_BATCHES
        sig = gradient_signal(trainer.runner, batches)
        spread = candidate_spread(trainer.runner, 1 if a.quick else 2)
        st = doc["states"][name] = {
            "checkpoint": os.path.basename(path) if path else None,
            **summarize_signal(sig, arch_steps, SIGNAL_LRS),
            "spread_same_expansion": median(spread["same_expansion"]),
            "spread_across": median(spread["across"]), "candidate_spread": spread,
            "gradient": sig}
        print(f"[{NAME}] signal at {name}: median SNR {st['median_snr_with_cost']:.3f} (noise "
              f"{st['noise_floor_snr']:.3f}), candidate spread {st['spread_same_expansion']:.3f}"
              f" (k3/k5/k7) / {st['spread_across']:.3f} (e3 vs e6)")
    doc.update(wall_s=time.perf_counter() - t0, **{k: v for k, v in C.machine_info(
        a.threads).items() if k in ("cpu", "load_average", "date", "git")})
    write_json(rec, C.clean_json(doc), indent=1)
    return doc


def summarize(a, wall_s: Optional[float] = None) -> Dict[str, Any]:
    rec = os.path.join(a.results_dir, NAME, DEMO)
    records = {os.path.splitext(f)[0]: read_json(os.path.join(rec, f))
               for f in sorted(os.listdir(rec)) if f.endswith(".json")
               and f != "signal.json"} if os.path.isdir(rec) else {}
    sig = read_json(os.path.join(rec, "signal.json")) if os.path.isdir(rec) else None
    settings: Dict[str, Any] = {}
    for s in SETTINGS:
        runs = [r for r in records.values() if r.get("kind") == "search" and r["setting"] == s]
        if not runs:
            continue
        trained = {int(r["train_seed"]): r["mIoU"] for r in records.values()
                   if r.get("kind") == "train" and r["setting"] == s and r.get("mIoU") is not None}
        settings[s] = {"overrides": SETTINGS[s], "seeds": len(runs),
                       **{k: mean_std([r[k] for r in runs]) for k in
                          ("entropy", "top1", "margin", "churn", "logit_range")},
                       "agreement": agreement(runs),
                       "chance_agreement": chance_agreement(runs[0]["candidates"]),
                       "wall_s": [r.get("wall_s") for r in runs],
                       "trained_mIoU": dict(trained, **mean_std(list(trained.values())))
                       if trained else None}
    claims = (C.read_result("fna_claims", a.quick) or {}).get("figures", {}).get(DEMO, {})
    ref = {n: {k: v.get(k) for k in ("mean", "std", "n")}
           for n, v in claims.get("networks", {}).items()}
    doc = {"name": NAME, "quick": a.quick, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "machine": C.machine_info(a.threads), "wall_time_s": wall_s, "demo": DEMO,
           "churn_back_iterations": CHURN_BACK, "settings": settings, "claims_networks": ref,
           "signal": None if not sig else {
               "arch_steps": sig["arch_steps"], "batches": sig["batches"],
               "states": {n: {k: v for k, v in st.items() if k not in ("gradient",
                                                                     "candidate_spread")}
                          for n, st in sig["states"].items()}}}
    doc["checks"] = checks(settings)
    img = (C.DOC_IMG if os.path.abspath(a.results_dir) == os.path.abspath(C.RESULTS)
           and not a.quick else os.path.join(a.results_dir, "img"))
    png = plot(settings, os.path.join(img, f"{NAME}.png"))
    doc["plot"] = os.path.relpath(png, C.REPO) if png else None
    path = write_json(os.path.join(a.results_dir, f"{NAME}.json"), C.clean_json(doc), indent=1)
    print(f"[bench] wrote {os.path.relpath(path, C.REPO)}")
    return doc


def checks(settings: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per setting: decided (entropy < 0.9) and seed-consistent (agreement above chance)."""
    out = []
    for s, v in settings.items():
        ent = v["entropy"]["mean"]
        out.append(C.check(f"{s}_entropy", ent, "< 0.9", ent < 0.9,
                           f"{s}: final alpha entropy {ent:.3f}"))
        if v["agreement"] is not None:
            ag, ch = v["agreement"], v["chance_agreement"]
            out.append(C.check(f"{s}_agreement", ag, f"> chance {ch:.2f}", ag > ch + 0.1,
                               f"{s}: search seeds agree on {ag:.0%} of layers "
                               f"(chance {ch:.0%})"))
    return out


def plot(settings: Dict[str, Any], path: str) -> Optional[str]:
    if not settings:
        return None
    plt = pyplot()
    names = list(settings)
    f, ax = plt.subplots(1, 1, figsize=(6.5, 3.4))
    xs = range(len(names))
    for key, color in (("entropy", "C0"), ("top1", "C1"), ("churn", "C3")):
        ax.plot(xs, [settings[n][key]["mean"] for n in names], "o-", color=color, label=key)
    ax.plot(xs, [settings[n]["agreement"] for n in names], "s--", color="C2",
            label="seed agreement")
    ax.plot(xs, [settings[n]["chance_agreement"] for n in names], ":", color="C2",
            label="chance agreement")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(f"{DEMO} demo search: does it decide? (mean over search seeds)", fontsize=9)
    return C.finish_fig(f, path)


def main(argv=None) -> int:
    ap = C.arg_parser(__doc__, "instant-test sizes")
    ap.add_argument("--settings", default="default,alpha_lr_0.03,alpha_lr_0.1")
    ap.add_argument("--seeds", type=int, default=2, help="search seeds per setting (2)")
    ap.add_argument("--train", default="", help="settings whose seed-0 architecture to train")
    ap.add_argument("--train-seeds", type=int, default=None,
                    help=f"training seeds (default: the claims bench's, {DEMOS[DEMO]['seeds']})")
    ap.add_argument("--signal", action="store_true",
                    help="measure the arch gradient's signal-to-noise ratio (module doc)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--summarize", action="store_true", help="only rewrite the summary")
    ap.add_argument("--results-dir", default=None)
    a = ap.parse_args(argv)
    a.results_dir = os.path.abspath(a.results_dir or C.results_dir(a.quick))
    os.chdir(C.REPO)
    chosen = [s.strip() for s in a.settings.split(",") if s.strip()]
    train = [s.strip() for s in a.train.split(",") if s.strip()]
    bad = [s for s in chosen + train if s not in SETTINGS]
    if bad:
        ap.error(f"unknown setting(s) {', '.join(bad)}; known: {', '.join(SETTINGS)}")
    t0 = time.perf_counter()
    if not a.summarize:
        b = Bench(a)
        for seed in range(1 if a.quick else a.seeds):
            for s in chosen:
                b.search(s, seed)
                summarize(a)
        if a.signal:
            signal(a)
        for s in train:
            arch = b.search(s, 0)
            for seed in range(1 if a.quick else (a.train_seeds or DEMOS[DEMO]["seeds"])):
                b.train(s, arch, seed)
                summarize(a)
    doc = summarize(a, wall_s=time.perf_counter() - t0)
    for c in doc["checks"]:
        print(f"[{NAME}] {c['text']}: {status_word(c['met'])}")
    return 0


def status_word(met: Optional[bool]) -> str:
    return "n/a" if met is None else ("met" if met else "not met")


if __name__ == "__main__":
    sys.exit(main())
