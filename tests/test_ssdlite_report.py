"""The pipeline report counts an SSDLite network as ``python -m fna_d2.cost`` does: the whole
model (the FNA backbone with the seed's 1280 conv, the extra layers, the head) and each part,
for the searched architecture and for the seed."""
import dataclasses
import os

import pytest

from fna_d2.arch import save_arch, seed_arch
from fna_d2.config import get_fna_cfg
from fna_d2.cost import main as cost_main
from fna_d2.pipeline.measure import measure_nets, measurement_configs
from fna_d2.report import ReportData, write_report
from fna_d2.tasks import NET_NAMES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADAPT = os.path.join(ROOT, "configs", "demo", "trees_ssdlite_adapt.yaml")
SIZE = (320, 320)
PARTS = ("backbone", "extras", "head")


def _searched(path: str) -> str:
    """The seed with its first stride-4 layer widened to k5_e6: another cost than the seed's."""
    seed = seed_arch("mobilenetv2")
    stages = list(seed.stages)
    stages[2] = dataclasses.replace(stages[2], ops=("k5_e6",) + tuple(stages[2].ops[1:]))
    return save_arch(dataclasses.replace(seed, stages=tuple(stages)), path)


def _cli(capsys, arch: str):
    """{part: (Params M, MAdds B)} as the cost CLI prints them for the adapt config + arch."""
    assert cost_main(["--config-file", ADAPT, "--input-size", str(SIZE[0]), str(SIZE[1]),
                      "MODEL.FNA.ARCH", arch]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        f = line.split()
        if len(f) == 3 and f[0] in PARTS + ("total",):
            rows[f[0]] = (float(f[1]), float(f[2]))
    return rows


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    arch = _searched(str(tmp_path_factory.mktemp("arch") / "arch.json"))
    cfg = get_fna_cfg(ADAPT, ["MODEL.FNA.ARCH", arch])
    cost, _ = measure_nets(measurement_configs(cfg), SIZE, repeats=1)
    return arch, cost


def test_report_cost_of_ssdlite_equals_the_cost_cli(measured, capsys):
    arch, cost = measured
    clis = {}
    for stage, arch_path in (("adapt", arch), ("baseline", "")):
        cli = _cli(capsys, arch_path)
        assert set(cli) == set(PARTS) | {"total"}
        got = cost[NET_NAMES[stage]]
        assert got["Params (M)"] == pytest.approx(cli["total"][0], abs=6e-4)
        assert got["MAdds (G)"] == pytest.approx(cli["total"][1], abs=6e-4)
        for part in PARTS:
            assert got[f"{part} Params (M)"] == pytest.approx(cli[part][0], abs=6e-4)
            assert got[f"{part} MAdds (G)"] == pytest.approx(cli[part][1], abs=6e-4)
        clis[stage] = cli
    # the two networks differ, so equal numbers are not one network measured twice
    assert clis["adapt"]["total"] != clis["baseline"]["total"]
    # the whole model is more than its backbone (the extras and head are counted)
    seed = cost[NET_NAMES["baseline"]]
    assert seed["MAdds (G)"] > seed["backbone MAdds (G)"] + seed["extras MAdds (G)"]


def test_report_shows_the_whole_ssdlite_and_its_backbone(measured, tmp_path):
    _, cost = measured
    data = ReportData(title="t", task="detection", metric="AP", seed=seed_arch("mobilenetv2"),
                      cost=cost, cost_input_size=SIZE)
    text = open(write_report(str(tmp_path / "report.md"), data), encoding="utf-8").read()
    fna, seed = (cost[NET_NAMES[s]] for s in ("adapt", "baseline"))
    for net in (fna, seed):
        assert f"{net['MAdds (G)']:.3f}" in text and f"{net['extras MAdds (G)']:.3f}" in text
    whole = fna["MAdds (G)"] / seed["MAdds (G)"]
    backbone = fna["backbone MAdds (G)"] / seed["backbone MAdds (G)"]
    assert f"MAdds (G): {whole:.3f} (" in text
    assert f"backbone MAdds (G): {backbone:.3f} (" in text
    assert "no 1280 conv" not in text
