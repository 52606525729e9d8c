"""End-to-end pipeline on both instant-test demos (report with numbers, stage skipping, stale
detection, missing inputs, incompatible archs, input errors on one line, errors raised in
spawned workers) and one iteration of every paper config on
stand-in data registered under the real dataset names (COCO, Cityscapes).

About 3-4 minutes on 2 idle CPU cores (marked ``slow``)."""
import hashlib
import importlib.util
import json
import os
import re
import time

import pytest
from _shared import stage_manifest
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

import fna_d2  # noqa: F401
from fna_d2.arch import Arch, Stage, load_arch, save_arch
from fna_d2.compare import load_run, summarize, write_comparison
from fna_d2.config import get_fna_cfg
from fna_d2.engine import build_trainer
from fna_d2.errors import DatasetNotRegisteredError
from fna_d2.pipeline import Pipeline, PipelineError, main, split_opts
from fna_d2.pipeline.report_data import gather_report_data
from fna_d2.remap import resolve_seed_uri
from fna_d2.utils import file_sha256

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT = os.path.join(ROOT, "configs", "instant_test")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def trees_run(tmp_path_factory):
    """The tree instant-test pipeline, run once for the tests of this module."""
    out = str(tmp_path_factory.mktemp("trees"))
    pipe = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=out)
    manifests = pipe.run()
    return out, manifests


def _numbers_in(section: str) -> list:
    return [float(x) for x in re.findall(r"\|\s*(-?\d+\.\d+)\s*(?=\|)", section)]


def test_trees_pipeline_end_to_end(trees_run):
    out, manifests = trees_run
    assert list(manifests) == ["search", "derive", "adapt", "baseline", "evaluate", "report"]
    assert all(m["status"] == "done" for m in manifests.values())
    for f in ("search/searched_arch.json", "derive/arch.json", "adapt/model_final.pth",
              "baseline/model_final.pth", "evaluate/results.json", "report.md",
              "report/metric_bars.png", "report/alpha_heatmap.png", "report/search_curves.png"):
        assert os.path.isfile(os.path.join(out, f)), f
    derived = load_arch(os.path.join(out, "derive", "arch.json"))
    assert derived == derived.skips_to_end()
    # the search records its own stage config, not the process's argv (the pipeline YAML)
    searched = load_arch(os.path.join(out, "search", "searched_arch.json"))
    assert searched.meta["config_file"] == os.path.join(INSTANT, "trees_search.yaml")
    text = open(os.path.join(out, "report.md")).read()
    for heading in ("## Accuracy", "## Searched architecture", "## Cost of the backbones",
                    "## Stage wall times", "## Plots"):
        assert heading in text
    cost = text.split("## Cost of the backbones")[1].split("## Stage wall times")[0]
    nums = _numbers_in(cost)
    assert len(nums) >= 14 and all(n > 0 for n in nums)  # Params/MAdds and latency, 2 nets
    assert "| FNA (searched) |" in text and "| MobileNetV2 (seed) |" in text
    seed = get_fna_cfg(os.path.join(INSTANT, "trees_adapt.yaml")).SEED
    assert f"one training run per network (SEED {seed})" in text
    results = json.load(open(os.path.join(out, "evaluate", "results.json")))
    assert set(results) == {"adapt", "baseline"}
    assert all("AP" in r["results"]["bbox"] for r in results.values())
    # SCORE_THRESH_TEST 0 keeps detections after 2 iterations: AP is computed, not undefined
    assert all(0.0 <= r["numbers"]["AP"] <= 100.0 for r in results.values())


def test_second_run_skips_every_stage(trees_run):
    out, first = trees_run
    pipe = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=out)
    again = pipe.run()
    assert all(m.get("skipped") for m in again.values())
    assert all(again[s]["finished"] == first[s]["finished"] for s in again)


def test_stale_stage_reruns_and_downstream_follow(trees_run):
    out, first = trees_run
    pipe = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=out,
                    opts=["adapt:SOLVER.BASE_LR", "0.02"])
    assert pipe.status("adapt") == ("stale", "its config changed")
    assert pipe.status("search")[0] == "done"
    ran = pipe.run()
    assert ran["search"].get("skipped") and ran["baseline"].get("skipped")
    assert not ran["adapt"].get("skipped") and not ran["evaluate"].get("skipped")
    assert os.path.isdir(os.path.join(out, "adapt.stale"))
    assert stage_manifest(out, "adapt")["key"] != first["adapt"]["key"]


def test_interrupted_stage_resumes(trees_run):
    out, _ = trees_run
    pipe = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=out)
    man = stage_manifest(out, "baseline")
    man["status"] = "running"  # as left by a killed run
    with open(os.path.join(out, "baseline", "stage.json"), "w") as f:
        json.dump(man, f)
    assert pipe.status("baseline")[0] == "partial"
    resumed = pipe.run(["baseline"])["baseline"]
    assert resumed["status"] == "done" and not resumed.get("skipped")
    assert resumed["wall_time_s"] >= man["wall_time_s"]  # time of both runs
    assert not os.path.isdir(os.path.join(out, "baseline.stale"))  # resumed in place


def test_killed_and_resumed_stage_counts_the_time_of_every_run(trees_run):
    """A run killed before it could record its time (kill -9: no ``finally``) is counted from
    its start to the last file it wrote in the stage folder; the stage's wall time, in its
    manifest and in the report, is the sum of its runs."""
    out, _ = trees_run
    stage_dir = os.path.join(out, "baseline")
    man = stage_manifest(out, "baseline")
    t0 = time.time() - 20000.0
    # as a killed run leaves it: running, its own run open (no wall time), nothing summed yet
    man.update(status="running", wall_time_s=0.0,
               runs=[{"started": "x", "started_epoch": t0, "pid": 1, "host": "h",
                      "wall_time_s": None}])
    with open(os.path.join(stage_dir, "stage.json"), "w") as f:
        json.dump(man, f)
    for d, _, files in os.walk(stage_dir):  # its last write: 10000 s after it started
        for name in files:
            t = t0 if name == "stage.json" else t0 + 10000.0 - 60 * (name != "metrics.json")
            os.utime(os.path.join(d, name), (t, t))
    pipe = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=out)
    resumed = pipe.run(["baseline"])["baseline"]
    killed, last = resumed["runs"]
    assert killed["wall_time_s"] == pytest.approx(10000.0, abs=1e-3)
    assert killed["ended"].startswith("killed") and last["ended"] == "done"
    assert last["pid"] == os.getpid() and last["wall_time_s"] > 0
    assert resumed["wall_time_s"] == pytest.approx(killed["wall_time_s"] + last["wall_time_s"])
    assert stage_manifest(out, "baseline")["wall_time_s"] == resumed["wall_time_s"]
    data = gather_report_data(pipe)
    assert data.wall_times["baseline"] == resumed["wall_time_s"]
    assert "2 runs" in data.stage_notes["baseline"]


def test_modified_output_and_missing_input_name_the_stage(trees_run, tmp_path):
    out, _ = trees_run
    pipe = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=out)
    # an input produced by a stage that is not run must be up to date
    arch_path = os.path.join(out, "derive", "arch.json")
    original = open(arch_path).read()
    try:
        with open(arch_path, "a") as f:
            f.write("\n")
        assert pipe.status("derive")[0] == "stale"
        with pytest.raises(PipelineError, match="re-run stage 'derive'"):
            pipe.run(["adapt"])
    finally:
        with open(arch_path, "w") as f:
            f.write(original)
    # a fresh output dir: adapt has no derived arch yet
    fresh = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=str(tmp_path))
    assert fresh.status("adapt")[0] == "blocked"
    with pytest.raises(PipelineError, match="run stage 'search'"):
        fresh.run(["adapt"])
    with pytest.raises(PipelineError, match="run stage 'search'"):
        fresh.run(["derive"])
    # the CLI reports it as an error, exit code 2
    assert main(["--config-file", os.path.join(INSTANT, "trees_pipeline.yaml"),
                 "--output-dir", str(tmp_path), "--stages", "adapt"]) == 2


def test_incompatible_arch_is_refused_before_training(tmp_path):
    pipe = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=str(tmp_path))
    seedlike = load_arch(os.path.join(ROOT, "configs", "archs", "mobilenetv2.json"))
    stages = list(seedlike.stages)
    stages[1] = Stage(16, 40, 2, stages[1].ops)           # widths the seed does not have
    stages[2] = Stage(40, 32, 2, stages[2].ops)
    save_arch(Arch(tuple(stages), 32, {}), pipe.searched_arch_path)
    with pytest.raises(PipelineError, match="does not match seed"):
        pipe.run_stage("derive")
    save_arch(Arch(tuple(stages), 32, {}), pipe.derived_arch_path)
    with pytest.raises(PipelineError, match="incompatible with the seed"):
        pipe.run_stage("adapt")
    assert not os.path.exists(os.path.join(str(tmp_path), "adapt", "model_final.pth"))
    assert not os.path.exists(os.path.join(str(tmp_path), "adapt", "config.yaml"))


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("fna_d2.pipeline: error: "), lines[0]
    return lines[0]


def test_cli_prints_domain_errors_on_one_line(tmp_path, capsys):
    """Any FNAError (here ArchError, RemapError) is one line on stderr and exit code 2, not a
    traceback."""
    config = os.path.join(INSTANT, "trees_pipeline.yaml")
    arch = os.path.join(str(tmp_path), "derive", "arch.json")
    os.makedirs(os.path.dirname(arch))
    with open(arch, "w") as f:
        f.write("{not json")
    assert main(["--config-file", config, "--output-dir", str(tmp_path),
                 "--stages", "adapt"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "arch.json" in line and "invalid JSON" in line
    assert main(["--config-file", config, "--output-dir", str(tmp_path / "other"), "--status",
                 "MODEL.FNA.SEED_WEIGHTS", "fna_d2://no_such_seed"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "fna_d2://no_such_seed" in line


def test_error_in_spawned_workers_comes_back_as_itself(tmp_path):
    """With several processes an FNAError raised in the workers reaches the caller as the same
    error with its one-line message (not torch's ProcessRaisedException with a traceback)."""
    pipe = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=str(tmp_path),
                    num_gpus=2, threads=1, opts=["baseline:DATASETS.TRAIN", "('no_such_set',)"])
    with pytest.raises(DatasetNotRegisteredError, match=r"no_such_set.*in worker process"):
        pipe.run_stage("baseline")


def test_packaged_seed_is_hashed_into_trained_stage_keys(tmp_path):
    """``fna_d2://`` seeds count as inputs: a changed converted seed makes the stages stale."""
    pipe = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=str(tmp_path))
    seed = os.path.abspath(resolve_seed_uri("fna_d2://keras_mobilenetv2"))
    for stage in ("search", "adapt", "baseline"):
        assert pipe.spec(stage).inputs.get(seed) == "", stage
    _, hashes = pipe.key(pipe.spec("search"))
    assert hashes[os.path.relpath(seed, pipe.root)] == file_sha256(seed)


def test_missing_input_hint_repeats_output_dir_and_overrides(tmp_path):
    """The suggested re-run command must address the same output folder and stage keys."""
    out = str(tmp_path / "run")
    pipe = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"), output_dir=out,
                    opts=["SEED", "1", "adapt:SOLVER.BASE_LR", "0.002"])
    state, reason = pipe.status("derive")
    assert state == "blocked"
    assert (f"--output-dir {out} --stages search SEED 1 adapt:SOLVER.BASE_LR 0.002"
            in reason), reason
    default = Pipeline(os.path.join(INSTANT, "trees_pipeline.yaml"))
    assert "--output-dir" not in default.rerun_command("search")


def test_split_opts():
    pipe, common, per = split_opts(["OUTPUT_DIR", "x", "SOLVER.MAX_ITER", "5",
                                    "adapt:SOLVER.BASE_LR", "0.1", "FNA_PIPELINE.BASELINE_CONFIG",
                                    ""])
    assert pipe == ["OUTPUT_DIR", "x", "FNA_PIPELINE.BASELINE_CONFIG", ""]
    assert common == ["SOLVER.MAX_ITER", "5"] and per == {"adapt": ["SOLVER.BASE_LR", "0.1"]}
    with pytest.raises(ValueError, match="before the overrides"):
        split_opts(["SOLVER.MAX_ITER", "5", "--force", "report"])


def test_nuclei_pipeline_end_to_end(tmp_path):
    pipe = Pipeline(os.path.join(INSTANT, "nuclei_pipeline.yaml"), output_dir=str(tmp_path))
    manifests = pipe.run()
    assert all(m["status"] == "done" for m in manifests.values())
    text = open(os.path.join(str(tmp_path), "report.md")).read()
    acc = text.split("## Accuracy")[1].split("## Searched architecture")[0]
    assert "mIoU" in acc
    miou = _numbers_in(acc)
    assert len(miou) >= 6 and all(0.0 <= v <= 100.0 for v in miou)
    numbers = manifests["evaluate"]["numbers"]
    assert set(numbers) == {"adapt", "baseline"}
    assert all(isinstance(v["mIoU"], float) for v in numbers.values())


# ----------------------------------------------------------------------------- paper configs
def _swap_dataset(name, fn):
    """Replace the loader of a registered dataset name; returns the original loader."""
    original = DatasetCatalog[name] if name in DatasetCatalog.list() else None
    if original is not None:
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, fn)
    return original


@pytest.fixture
def stand_in_datasets():
    """coco_2017_train <- tree tiles, cityscapes_fine_sem_seg_train <- nuclei crops."""
    trees = DatasetCatalog.get("fna_trees_train")[:4]
    nuclei = DatasetCatalog.get("fna_nuclei_train")[:4]
    saved = {n: _swap_dataset(n, f) for n, f in (("coco_2017_train", lambda: trees),
                                                 ("cityscapes_fine_sem_seg_train",
                                                  lambda: nuclei))}
    yield
    for name, fn in saved.items():
        DatasetCatalog.remove(name)
        if fn is not None:
            DatasetCatalog.register(name, fn)


ONE_ITER = ["MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2",
            "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0",
            "MODEL.FNA.NORM", "BN", "MODEL.FNA.SEARCH.WARMUP_ITERS", "0",
            "MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1000"]
DET = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160"]
SEG = ["INPUT.MIN_SIZE_TRAIN", "(64, 128)", "INPUT.MAX_SIZE_TRAIN", "256",
       "INPUT.CROP.SIZE", "(65, 65)", "MODEL.SEM_SEG_HEAD.NORM", "BN"]


@pytest.mark.parametrize("name", ["fna_retinanet_search.yaml", "fna_retinanet_adapt.yaml",
                                  "fna_deeplabv3_search.yaml", "fna_deeplabv3_adapt.yaml"])
def test_paper_config_runs_one_iteration(name, stand_in_datasets, tmp_path):
    seg = "deeplab" in name
    opts = ONE_ITER + (SEG if seg else DET) + ["OUTPUT_DIR", str(tmp_path)]
    cfg = get_fna_cfg(os.path.join(ROOT, "configs", name), opts)
    if cfg.MODEL.FNA.NETWORK == "derived":  # stands in for the search output
        cfg.MODEL.FNA.ARCH = os.path.join(ROOT, "configs", "archs", "fna_retinanet_coco.json")
    assert cfg.DATASETS.TRAIN == (("cityscapes_fine_sem_seg_train",) if seg
                                  else ("coco_2017_train",))
    cfg.freeze()
    torch.manual_seed(0)
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 1 and os.path.isfile(os.path.join(str(tmp_path), "model_final.pth"))
    if cfg.MODEL.FNA.NETWORK == "super":
        assert os.path.isfile(os.path.join(str(tmp_path), "searched_arch.json"))


def test_inference_demo_draws_on_pipeline_output(trees_run, tmp_path):
    """demo/demo.py on the adapt stage's own config and weights writes a PNG."""
    out, _ = trees_run
    spec = importlib.util.spec_from_file_location("fna_demo", os.path.join(ROOT, "demo", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    png = str(tmp_path / "pred.png")
    assert demo.main(["--config-file", os.path.join(out, "adapt", "config.yaml"),
                      "--input", "fna_trees_val:0", "--output", png]) == 0
    assert Image.open(png).size[0] >= 512


def test_compare_reads_the_pipeline_output(trees_run, tmp_path):
    """fna_d2.compare on a real run directory: the numbers, SEED and arch hash it reads are the
    pipeline's; the same run twice gives a zero-spread difference equal to that run's."""
    out, _ = trees_run
    run = load_run(out)
    results = json.load(open(os.path.join(out, "evaluate", "results.json")))
    assert run.metric == "AP"
    assert run.numbers == {s: results[s]["numbers"] for s in ("adapt", "baseline")}
    assert run.rng_seed == get_fna_cfg(os.path.join(INSTANT, "trees_adapt.yaml")).SEED
    with open(os.path.join(out, "derive", "arch.json"), "rb") as f:
        assert run.arch_sha == hashlib.sha256(f.read()).hexdigest()[:12]
    diff = summarize([run, run])["difference"]
    assert diff["mean"] == pytest.approx(run.numbers["adapt"]["AP"] - run.numbers["baseline"]["AP"])
    assert diff["std"] == pytest.approx(0.0)
    md = write_comparison(str(tmp_path / "cmp.md"), [run, run])
    assert os.path.isfile(str(tmp_path / "cmp.png"))
    assert f"| `{out}` |" in open(md).read()
