"""fna_d2.report is pure formatting: a ReportData in, report.md and its PNGs out, without a
pipeline (that it never imports fna_d2.pipeline is checked in test_house.py)."""
from fna_d2.arch import mobilenetv2_arch
from fna_d2.report import ReportData, pipeline_notes, write_report_files
from fna_d2.utils import pyplot, save_figure

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    return save_figure(fig, path)


def test_report_from_plain_data(tmp_path):
    seed = mobilenetv2_arch()
    heat = _png(str(tmp_path / "search" / "alpha_heatmap.png"))
    data = ReportData(
        title="t", task="detection", metric="AP", seed=seed, searched=seed,
        derived=seed.skips_to_end(),
        results={"FNA (searched)": {"AP": 7.9, "AP50": None},
                 "MobileNetV2 (seed)": {"AP": 10.3, "AP50": 35.6}},
        cost={"FNA (searched)": {"MAdds (G)": 0.452}, "MobileNetV2 (seed)": {"MAdds (G)": 0.57}},
        cost_input_size=(320, 320), wall_times={"search": 269.4, "adapt": None},
        stage_notes={"search": "done"}, notes=pipeline_notes(0, 10),
        figures={"heat map": heat, "absent": str(tmp_path / "search" / "nope.png")})
    md = write_report_files(str(tmp_path / "out" / "report.md"), data,
                            str(tmp_path / "out" / "report"))
    text = open(md).read()
    assert "| FNA (searched) | 7.90 | - |" in text           # missing numbers are "-"
    assert "FNA (searched) - MobileNetV2 (seed): -2.40 AP." in text
    assert "MAdds (G): 0.793 (-0.118 G)." in text
    assert "| search | 4 min 29 s | done |" in text and "| adapt | - |  |" in text
    assert "one training run per network (SEED 0)" in text and "SEED 1" in text
    assert text.index("![heat map](report/alpha_heatmap.png)") < text.index(
        "![AP of the searched network vs the seed](report/metric_bars.png)")
    assert "absent" not in text
    for name in ("alpha_heatmap.png", "metric_bars.png"):
        with open(str(tmp_path / "out" / "report" / name), "rb") as f:
            assert f.read(8) == PNG
