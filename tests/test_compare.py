"""fna_d2.compare: statistics over pipeline runs against hand-computed values and intervals,
the Markdown/PNG it writes, and its errors on bad run directories."""
import json
import math
import os
import statistics

import pytest

from fna_d2.compare import CompareError, load_run, main, summarize, t975, write_comparison


def _run_dir(root, name, adapt, baseline, seed=0, metric="AP", arch="{}"):
    """A pipeline OUTPUT_DIR with just what the evaluate stage and the adapt stage leave."""
    d = os.path.join(str(root), name)
    os.makedirs(os.path.join(d, "evaluate"))
    os.makedirs(os.path.join(d, "adapt"))
    os.makedirs(os.path.join(d, "derive"))
    res = {s: {"metric": metric, "task": "detection", "numbers": {metric + "50": 3 * v, metric: v}}
           for s, v in (("adapt", adapt), ("baseline", baseline))}
    with open(os.path.join(d, "evaluate", "results.json"), "w") as f:
        json.dump(res, f)
    with open(os.path.join(d, "adapt", "config.yaml"), "w") as f:
        f.write(f"MODEL:\n  FNA:\n    SEED: mobilenetv2\nSEED: {seed}\nVERSION: 2\n")
    with open(os.path.join(d, "derive", "arch.json"), "w") as f:
        f.write(arch)
    return d


def test_summary_matches_the_statistics_module(tmp_path):
    adapt, base = [7.86, 6.49, 8.10], [10.31, 9.03, 8.00]
    runs = [load_run(_run_dir(tmp_path, f"r{i}", a, b, seed=i))
            for i, (a, b) in enumerate(zip(adapt, base))]
    assert [r.rng_seed for r in runs] == [0, 1, 2]
    s = summarize(runs)
    # by hand: mean 22.45 / 3; squared deviations 0.1419 + 0.9867 + 0.3803 over n - 1 = 2
    assert s["adapt"]["mean"] == pytest.approx(7.4833, abs=1e-4)
    assert s["adapt"]["std"] == pytest.approx(math.sqrt(1.5089 / 2), abs=1e-3)
    assert s["baseline"]["std"] == pytest.approx(statistics.stdev(base))
    diffs = [a - b for a, b in zip(adapt, base)]
    d = s["difference"]
    assert d["mean"] == pytest.approx(statistics.mean(diffs))
    assert d["std"] == pytest.approx(statistics.stdev(diffs))
    assert d["searched_ahead"] == 1
    half = 4.303 * statistics.stdev(diffs) / math.sqrt(3)  # t(0.975, df=2) from the tables
    m = statistics.mean(diffs)
    assert d["ci95"] == pytest.approx((m - half, m + half))
    # another key than the metric
    assert summarize(runs, "AP50")["adapt"]["mean"] == pytest.approx(3 * statistics.mean(adapt))


def test_t_quantiles_are_the_table_values_and_fall_toward_normal():
    assert t975(1) == pytest.approx(12.706)
    assert t975(4) == pytest.approx(2.776)
    assert t975(30) == pytest.approx(2.042)
    assert t975(1000) == pytest.approx(1.960)
    qs = [t975(df) for df in range(1, 40)]
    assert all(a > b or b == 1.960 for a, b in zip(qs, qs[1:]))
    with pytest.raises(ValueError, match="degrees of freedom"):
        t975(0)


def test_one_run_has_no_interval(tmp_path):
    r = load_run(_run_dir(tmp_path, "only", 5.0, 6.0))
    s = summarize([r])
    assert s["difference"]["mean"] == pytest.approx(-1.0)
    assert s["difference"]["std"] is None and "ci95" not in s["difference"]
    text = open(write_comparison(str(tmp_path / "c.md"), [r], plot=False)).read()
    assert "One run" in text and not os.path.exists(str(tmp_path / "c.png"))


def test_report_lists_every_run_and_draws_a_png(tmp_path):
    runs = [load_run(_run_dir(tmp_path, "a", 1.0, 2.0, seed=3, arch='{"x": 1}')),
            load_run(_run_dir(tmp_path, "b", 4.0, 2.5, seed=4, arch='{"x": 2}'))]
    md = write_comparison(str(tmp_path / "out" / "cmp.md"), runs)
    text = open(md).read()
    assert "| FNA (searched) | 2.50 +- 2.12 | 2 |" in text      # mean 2.5, stdev of (1, 4)
    assert "| MobileNetV2 (seed) | 2.25 +- 0.35 | 2 |" in text
    assert "| searched - seed | 0.25 +- 1.77 | 2 |" in text     # diffs -1.0, 1.5: sqrt(2 * 1.25^2)
    assert "includes 0" in text and "ahead in 1 of 2" in text
    assert "different architectures" in text
    assert "| FNA (searched) AP | FNA (searched) AP50 | MobileNetV2 (seed) AP |" in text
    for r in runs:
        assert f"| `{r.name}` | {r.rng_seed} |" in text
    with open(str(tmp_path / "out" / "cmp.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_and_prints(tmp_path, capsys):
    a = _run_dir(tmp_path, "a", 1.0, 2.0)
    b = _run_dir(tmp_path, "b", 3.0, 2.0)
    out = str(tmp_path / "x.md")
    assert main([a, b, "--output", out, "--no-plot"]) == 0
    assert capsys.readouterr().out == open(out).read()


def test_bad_run_directories_name_the_file(tmp_path, capsys):
    with pytest.raises(CompareError, match="not a directory"):
        load_run(str(tmp_path / "nope"))
    os.makedirs(str(tmp_path / "unfinished"))
    with pytest.raises(CompareError, match=r"unfinished[/\\]evaluate[/\\]results.json is missing"
                                           r".*fna_d2.pipeline"):
        load_run(str(tmp_path / "unfinished"))
    bad = _run_dir(tmp_path, "bad", 1.0, 2.0)
    with open(os.path.join(bad, "evaluate", "results.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(CompareError, match="bad.*not valid JSON"):
        load_run(bad)
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nope")])
    assert e.value.code == 2 and "nope: not a directory" in capsys.readouterr().err


def test_runs_of_different_tasks_are_refused(tmp_path):
    det = load_run(_run_dir(tmp_path, "det", 1.0, 2.0))
    seg = load_run(_run_dir(tmp_path, "seg", 70.0, 71.0, metric="mIoU"))
    with pytest.raises(CompareError, match=r"det \(AP\).*seg \(mIoU\)"):
        summarize([det, seg])
    with pytest.raises(CompareError, match="no runs"):
        summarize([])


def test_cli_prints_any_fna_error_on_one_line(tmp_path, capsys, monkeypatch):
    """Not only CompareError: any FNAError while reading the runs is one line, exit code 2."""
    from fna_d2 import compare
    from fna_d2.errors import ArchError

    def bad_run(out_dir):
        raise ArchError(f"{out_dir}/derive/arch.json: stage 3 has no layers")

    monkeypatch.setattr(compare, "load_run", bad_run)
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [f"error: {tmp_path}/derive/arch.json: stage 3 has no "
                                        "layers"]
