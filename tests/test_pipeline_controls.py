"""The pipeline's control stages (``FNA_PIPELINE.CONTROLS``): on the trees instant test, a
finished pipeline run again with a random and a depth-shrunk control keeps its stages, makes the
controls at the derived net's backbone cost, trains them as the adapt stage trains (same config,
their arch file), evaluates them and puts them in the report; a second run skips them, an
interrupted one resumes; bad control keys are refused naming key and value. The report's
comparison section is also checked from plain data.

A few minutes on 2 loaded CPU cores (marked ``slow``): the tests of the fixture share one run."""
import json
import os

import pytest
from _shared import stage_manifest
import yaml

import fna_d2  # noqa: F401
from fna_d2.arch import load_arch, seed_arch
from fna_d2.controls import backbone_gmadds, space_of_config
from fna_d2.errors import ConfigError
from fna_d2.pipeline import Pipeline, main
from fna_d2.pipeline.manifest import config_digest
from fna_d2.report import NO_CONTROLS, comparison_section

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT = os.path.join(ROOT, "configs", "instant_test")
PIPE = os.path.join(INSTANT, "trees_pipeline.yaml")
CONTROLS = ["FNA_PIPELINE.CONTROLS", "['random','shrunk_depth']"]
CONTROL_STAGES = ["control_random_00", "control_shrunk_depth"]


@pytest.fixture(scope="module")
def controls_run(tmp_path_factory):
    """The trees instant pipeline without controls, then the same folder with two controls."""
    out = str(tmp_path_factory.mktemp("trees_controls"))
    plain = Pipeline(PIPE, output_dir=out, threads=1).run()
    plain_report = open(os.path.join(out, "report.md")).read()
    pipe = Pipeline(PIPE, output_dir=out, threads=1, opts=CONTROLS)
    return out, plain, plain_report, pipe, pipe.run()


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_controls_are_made_trained_evaluated_and_reported(controls_run):
    out, plain, plain_report, pipe, ran = controls_run
    assert NO_CONTROLS in plain_report and "| random_00 |" not in plain_report
    assert list(ran) == ["search", "derive", "adapt", "baseline", "controls"] + CONTROL_STAGES + [
        "evaluate", "report"]
    # the stages a pipeline without controls ran are kept: turning controls on adds stages
    assert all(ran[s].get("skipped") for s in ("search", "derive", "adapt", "baseline"))
    assert all(ran[s]["status"] == "done" and not ran[s].get("skipped")
               for s in ["controls"] + CONTROL_STAGES)

    # the archs: at the derived net's backbone MAdds, measured here independently
    space, size, os_, seed = space_of_config(os.path.join(INSTANT, "trees_search.yaml"))
    derived = load_arch(os.path.join(out, "derive", "arch.json"))
    target = backbone_gmadds(derived, size, os_)
    rec = json.load(open(os.path.join(out, "controls", "controls.json")))
    assert rec["target_gmadds"] == pytest.approx(target)
    tol = pipe.controls.tolerance
    rows = {r["name"]: r for r in rec["architectures"]}
    assert sorted(rows) == ["random_00", "shrunk_depth"]
    for name, row in rows.items():
        arch = load_arch(os.path.join(out, "controls", f"{name}.json"))
        cost = backbone_gmadds(arch, size, os_)
        assert cost == pytest.approx(row["gmadds"])
        assert arch.skips_to_end() != derived
        if name.startswith("random"):
            assert abs(cost / target - 1) <= tol
        else:  # the seed, layers removed: one removal step from the target at most
            assert cost < backbone_gmadds(seed_arch(seed), size, os_)
            assert abs(cost / target - 1) < 0.25

    # trained exactly as the adapt stage: its config, the control's arch file
    for stage in CONTROL_STAGES:
        adapt_cfg = yaml.safe_load(open(os.path.join(out, "adapt", "config.yaml")))
        name = stage[len("control_"):]
        man = stage_manifest(out, stage)
        assert man["control"] == name and man["arch_file"] == f"controls/{name}.json"
        assert man["gmadds"] == pytest.approx(rows[name]["gmadds"])
        cfg = yaml.safe_load(open(os.path.join(out, stage, "config.yaml")))
        assert cfg["MODEL"]["FNA"]["ARCH"] == os.path.join(out, "controls", f"{name}.json")
        assert cfg["OUTPUT_DIR"] == os.path.join(out, stage)
        for c in (cfg, adapt_cfg):
            c["MODEL"]["FNA"].pop("ARCH")
            c.pop("OUTPUT_DIR")
        assert cfg == adapt_cfg
        assert os.path.isfile(os.path.join(out, stage, "model_final.pth"))

    results = json.load(open(os.path.join(out, "evaluate", "results.json")))
    assert set(results) == {"adapt", "baseline"} | set(CONTROL_STAGES)
    assert all(0.0 <= results[s]["numbers"]["AP"] <= 100.0 for s in CONTROL_STAGES)

    text = open(os.path.join(out, "report.md")).read()
    section = text.split("## Searched vs controls")[1].split("## Searched architecture")[0]
    assert NO_CONTROLS not in text and "What this measures" in section
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")][1:]
    names = [ln.split("|")[1].strip() for ln in lines]
    assert names == ["FNA (searched)", "random_00", "shrunk_depth", "MobileNetV2 (seed)"]
    searched_ap = results["adapt"]["numbers"]["AP"]
    for ln, stage in zip(lines[1:], CONTROL_STAGES + ["baseline"]):
        cells = [c.strip() for c in ln.split("|")[1:-1]]
        assert float(cells[2]) == pytest.approx(results[stage]["numbers"]["AP"], abs=0.005)
        assert float(cells[3]) == pytest.approx(results[stage]["numbers"]["AP"] - searched_ap,
                                                abs=0.011)
        assert float(cells[4]) > 0 and float(cells[6]) > 0
    assert "the seed differs in architecture" in section
    status = pipe.status_table()
    assert all(f"{s} " in status for s in CONTROL_STAGES)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_finished_controls_are_skipped_and_an_interrupted_one_resumes(controls_run):
    out, _, _, _, first = controls_run
    again = Pipeline(PIPE, output_dir=out, threads=1, opts=CONTROLS).run()
    assert all(m.get("skipped") for m in again.values())
    assert all(again[s]["finished"] == first[s]["finished"] for s in CONTROL_STAGES)

    man = stage_manifest(out, "control_shrunk_depth")
    man["status"] = "running"  # as a killed run leaves it
    with open(os.path.join(out, "control_shrunk_depth", "stage.json"), "w") as f:
        json.dump(man, f)
    pipe = Pipeline(PIPE, output_dir=out, threads=1, opts=CONTROLS)
    assert pipe.status("control_shrunk_depth")[0] == "partial"
    ran = pipe.run()
    assert not ran["control_shrunk_depth"].get("skipped")
    assert ran["control_shrunk_depth"]["status"] == "done"
    assert len(ran["control_shrunk_depth"]["runs"]) == 2  # resumed in place
    assert not os.path.isdir(os.path.join(out, "control_shrunk_depth.stale"))
    assert ran["control_random_00"].get("skipped") and ran["controls"].get("skipped")


@pytest.mark.parametrize("opts, words", [
    (["FNA_PIPELINE.CONTROLS", "['random','bogus']"], ["FNA_PIPELINE.CONTROLS", "'bogus'"]),
    (["FNA_PIPELINE.CONTROLS", "['random','random']"], ["FNA_PIPELINE.CONTROLS", "twice"]),
    (["FNA_PIPELINE.CONTROLS", "['random']", "FNA_PIPELINE.CONTROL_RANDOM_N", "0"],
     ["FNA_PIPELINE.CONTROL_RANDOM_N", "0"]),
    (["FNA_PIPELINE.CONTROL_TOLERANCE", "1.5"], ["FNA_PIPELINE.CONTROL_TOLERANCE", "1.5"]),
])
def test_bad_control_keys_name_key_and_value(opts, words, tmp_path, capsys):
    with pytest.raises(ConfigError) as e:
        Pipeline(PIPE, output_dir=str(tmp_path), opts=opts)
    assert all(w in str(e.value) for w in words) and PIPE in str(e.value)
    assert main(["--config-file", PIPE, "--output-dir", str(tmp_path), "--status"] + opts) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words)


def test_control_keys_are_not_part_of_the_stage_keys(tmp_path):
    plain = Pipeline(PIPE, output_dir=str(tmp_path))
    ctl = Pipeline(PIPE, output_dir=str(tmp_path), opts=CONTROLS
                   + ["FNA_PIPELINE.CONTROL_RANDOM_N", "3"])
    for s in ("search", "adapt", "baseline"):
        assert config_digest(plain.stage_cfg(s), plain.root) == config_digest(
            ctl.stage_cfg(s), ctl.root)
    assert ctl.stages()[4:9] == ["controls", "control_random_00", "control_random_01",
                                 "control_random_02", "control_shrunk_depth"]
    assert plain.stages() == ["search", "derive", "adapt", "baseline", "evaluate", "report"]
    assert ctl.eval_targets() == ["adapt", "baseline"] + ctl.stages()[5:9]
    # a control stage has the adapt config with its own folder and arch
    cfg = ctl.stage_cfg("control_random_01")
    assert cfg.OUTPUT_DIR == os.path.join(ctl.root, "control_random_01")
    assert cfg.MODEL.FNA.ARCH == os.path.join(ctl.root, "controls", "random_01.json")
    assert cfg.SOLVER.MAX_ITER == ctl.stage_cfg("adapt").SOLVER.MAX_ITER


def test_comparison_section_from_plain_rows():
    rows = [{"network": "FNA (searched)", "made": "searched", "mIoU": 70.0,
             "backbone MAdds (G)": 0.5, "backbone Params (M)": 2.0},
            {"network": "random_00", "made": "random", "mIoU": 71.25,
             "backbone MAdds (G)": 0.51, "backbone Params (M)": 2.2},
            {"network": "shrunk_depth", "made": "shrunk", "mIoU": None,
             "backbone MAdds (G)": 0.49, "backbone Params (M)": 1.9}]
    lines = comparison_section(rows, "mIoU")
    assert lines[0].startswith("| network | made as | mIoU | mIoU - searched |")
    assert lines[2].split("|")[4].strip() == "(reference)"
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert cells[2:7] == ["71.25", "+1.25", "0.510", "+2.0%", "2.200"]
    cells = [c.strip() for c in lines[4].split("|")[1:-1]]
    assert cells[2:6] == ["-", "-", "0.490", "-2.0%"]
    assert any("What this measures" in ln for ln in lines)
    assert comparison_section([], "AP") == [NO_CONTROLS]
