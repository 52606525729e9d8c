"""The search's phase-aware ETA (fna_d2.engine.search.eta) and its alphas in TensorBoard.

The ETA tests feed the storage histories directly (no clock): detectron2's printer takes the
warm-up's iteration time for every iteration left, ours adds the costlier search phase."""
from __future__ import annotations

import glob
import io
import json
import logging
import math
import os

import numpy as np
import pytest
import torch

from detectron2.modeling import build_model
from detectron2.utils.events import CommonMetricPrinter, EventStorage

from fna_d2.cost import detectron2_model_cost
from fna_d2.engine import build_trainer
from fna_d2.engine.search import (SearchMetricPrinter, SearchPhases, mixed_path_madds_ratio,
                                  search_eta)
from fna_d2.engine.search.plots import plot_alpha_heatmap
from fna_d2.modeling import find_supernet

from _search_cfg import search_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

PHASES = SearchPhases(warmup_iters=10, arch_steps=1, weight_steps=1, arch_weight_ratio=1.25)
MAX_ITER = 30


def _storage(search_times=()):
    """Iterations 3..9 timed in the warm-up (1 s each: 0.8 s weight step compute + 0.1 s data),
    then ``search_times`` from iteration 10 on; ``storage.iter`` is the last one."""
    storage = EventStorage(0)
    it = 3
    for it in range(3, 10):
        storage.iter = it
        storage.put_scalars(time=1.0, data_time=0.1, smoothing_hint=False)
        storage.put_scalar("search/weight_step_time", 0.8, smoothing_hint=False)
    for it, t in enumerate(search_times, start=10):
        storage.iter = it
        storage.put_scalars(time=t, data_time=0.2, smoothing_hint=False)
    storage.iter = it
    return storage


def _printed_eta(printer, storage, caplog):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="detectron2.utils.events"):
        with storage:
            printer.write()
    line = [r.getMessage() for r in caplog.records if "iter:" in r.getMessage()][-1]
    return storage.latest()["eta_seconds"][0], line


def test_eta_during_warmup_adds_the_costlier_search_phase(caplog):
    storage = _storage()  # 10 done: 0 warm-up iterations left, 20 search iterations
    # each search iteration: the warm-up's 1 s + 1 arch step of 1.25 x 0.8 s + 0.1 s data
    eta, line = _printed_eta(SearchMetricPrinter(MAX_ITER, PHASES), storage, caplog)
    assert eta == pytest.approx(20 * (1.0 + 1.25 * 0.8 + 0.1))
    assert "(estimated)" in line and "eta: 0:00:42 (estimated)" in line
    plain, _ = _printed_eta(CommonMetricPrinter(MAX_ITER), _storage(), caplog)
    assert plain == pytest.approx(20 * 1.0)  # detectron2's: the warm-up's time for all


def test_eta_mid_warmup_counts_each_phase_left():
    storage = _storage()
    storage.iter = 6  # pretend 7 done: 3 warm-up iterations and 20 search iterations left
    eta = search_eta(storage.histories(), 7, MAX_ITER, PHASES)
    # the warm-up history holds iterations 3..9 (all 1 s): only the phases' split matters here
    assert eta.seconds == pytest.approx(3 * 1.0 + 20 * 2.1) and not eta.measured


def test_eta_after_warmup_is_the_measured_phase_medians(caplog):
    times = [2.0, 2.4, 9.0, 2.2, 2.3]  # one slow outlier: the median ignores it
    storage = _storage(times)  # iterations 10..14 done: 15 left, all search iterations
    eta, line = _printed_eta(SearchMetricPrinter(MAX_ITER, PHASES), storage, caplog)
    assert eta == pytest.approx(15 * float(np.median(times)))
    assert "(estimated)" not in line and "eta: 0:00:34 " in line
    # a schedule whose warm-up is longer than the run: only warm-up iterations are left
    short = SearchPhases(100, 1, 1, 1.25)
    assert search_eta(_storage().histories(), 10, 20, short).seconds == pytest.approx(10.0)


def test_no_timed_iteration_falls_back_to_detectron2s_estimate():
    assert search_eta(EventStorage(0).histories(), 2, MAX_ITER, PHASES) is None


def test_madds_ratio_is_mixed_over_the_mean_path_and_touches_nothing(tmp_path):
    cfg = search_cfg(tmp_path)
    model = build_model(cfg)
    net = find_supernet(model)
    net.set_path([0] * len(net.mixed_ops()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    ratio = mixed_path_madds_ratio(model, (96, 96), cfg.MODEL.FNA.OUTPUT_STRIDE)
    assert net.current_path() == [0] * len(net.mixed_ops())  # the model's mode is kept
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"
    # oracle: the hook count of the mixed model over the mean of the counts of paths that give
    # every candidate of every layer equal weight (path j takes candidate j mod K)
    counts = [len(m.names) for m in net.mixed_ops()]
    n = math.lcm(*counts)
    net.set_mixed()
    mixed = detectron2_model_cost(model, (96, 96))["total"].madds
    paths = []
    for j in range(n):
        net.set_path([j % k for k in counts])
        paths.append(detectron2_model_cost(model, (96, 96))["total"].madds)
    assert ratio == pytest.approx(mixed / np.mean(paths), rel=1e-9)
    assert ratio > 1.2


def test_heatmap_image_is_the_figure_in_put_image_format(tmp_path):
    probs = [[0.7, 0.2, 0.1], [0.5, 0.5]]
    img = plot_alpha_heatmap(probs, [["k3_e3", "k5_e3", "skip"], ["k3_e3", "k5_e3"]],
                             ["s1.l0", "s1.l1"], str(tmp_path / "h.png"))
    assert img.dtype == np.float32 and img.ndim == 3 and img.shape[0] == 3
    assert img.min() >= 0.0 and img.max() <= 1.0 and img.std() > 0.05  # not blank
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_alpha_heatmap(probs, [["k3_e3", "k5_e3", "skip"], ["k3_e3", "k5_e3"]],
                              ["s1.l0", "s1.l1"], None).shape == img.shape


# ----------------------------------------------------------------------------- a real search
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """22 iterations, 21 of warm-up: the writer (period 20) prints at iteration 19, in the
    warm-up, then after the last (a search iteration)."""
    out = tmp_path_factory.mktemp("search_eta")
    cfg = search_cfg(out, **{"SOLVER.MAX_ITER": 22, "MODEL.FNA.SEARCH.WARMUP_ITERS": 21,
                             "MODEL.FNA.SEARCH.DERIVE_PERIOD": 10,
                             "SOLVER.CHECKPOINT_PERIOD": 100})
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=False)
    records = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = _Keep(logging.INFO)
    logging.getLogger("detectron2.utils.events").addHandler(handler)
    try:
        trainer.train()
    finally:
        logging.getLogger("detectron2.utils.events").removeHandler(handler)
    rows = [json.loads(l) for l in (out / "metrics.json").read_text().splitlines()]
    return trainer, out, records, rows


def test_real_search_prints_a_phase_aware_eta(run):
    _, _, records, rows = run
    lines = [r for r in records if "iter: 19 " in r]
    assert lines and "(estimated)" in lines[0], records
    row = next(r for r in rows if r["iteration"] == 19)
    # 2 left: one warm-up iteration and one (costlier) search iteration; detectron2's printer
    # says 2 x the median iteration time. time in metrics.json is that median (window 20)
    assert row["eta_seconds"] > 2 * row["time"] * 1.02
    assert "search/weight_step_time" in row and "search/arch_step_time" not in row
    assert "search/arch_step_time" in rows[-1]
    assert not any(k.startswith("alpha/") for r in rows for k in r)  # TensorBoard only


def test_alphas_reach_tensorboard(run):
    from tensorboard.backend.event_processing import event_accumulator
    from PIL import Image

    trainer, out, _, _ = run
    (events,) = glob.glob(os.path.join(out, "events.out.tfevents.*"))
    acc = event_accumulator.EventAccumulator(events, size_guidance={"images": 0,
                                                                    "histograms": 0})
    acc.Reload()
    images = acc.Images("alpha/heatmap")
    # every DERIVE_PERIOD (after iterations 10 and 20, steps 9 and 19) and at the end (22)
    assert [e.step for e in images] == [9, 19, 22]
    probs = [p.tolist() for p in (torch.softmax(a.detach(), 0)
                                  for a in trainer.net.arch_parameters())]
    want = plot_alpha_heatmap(probs, [m.names for m in trainer.net.mixed_ops()],
                              [f"s{s}.l{l}" for s, l in trainer.net.space.searchable_layers()],
                              None, "softmax(alpha) after 22 iterations")
    last = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("RGB"))
    assert last.shape == want.shape[1:] + (3,)
    assert np.abs(last.transpose(2, 0, 1) / 255.0 - want).max() < 1.5 / 255
    tags = acc.Tags()["histograms"]
    layers = [f"alpha/s{s}.l{l}" for s, l in trainer.net.space.searchable_layers()]
    assert sorted(tags) == sorted(layers)
    h = acc.Histograms(layers[0])[-1].histogram_value
    assert h.num == len(probs[0]) and h.sum == pytest.approx(1.0, abs=1e-5)
    assert h.max == pytest.approx(max(probs[0]), abs=1e-6)
