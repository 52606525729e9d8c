"""Cost-matched controls (``fna_d2.controls``): random architectures of a space within the band,
distinct, reproducible, and exactly the band's networks when the band is small enough to
enumerate; the seed shrunk by hand; the command line and its errors."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from fna_d2.arch import SKIP, detection_space, load_arch, mobilenetv2_arch, space_from_seed
from fna_d2.controls import backbone_gmadds, sample_matched, shrink_seed
from fna_d2.controls.cli import main
from fna_d2.cost import arch_cost, op_cost_table
from fna_d2.errors import ArchError

SIZE = (320, 320)


def _key(arch):
    return tuple(st.ops for st in arch.skips_to_end().stages)


def test_samples_are_distinct_paths_within_the_band_and_reproducible():
    space, seed = detection_space(), mobilenetv2_arch()
    target = backbone_gmadds(seed, SIZE)
    got = sample_matched(space, target, 8, SIZE, tol=0.03, seed=1)
    assert len(got) == 8 and len({_key(m.arch) for m in got}) == 8
    for m in got:
        assert space.contains(m.arch)
        true = arch_cost(m.arch, SIZE).madds / 1e9  # the network's own cost, not the table's
        assert m.gmadds == pytest.approx(true, rel=1e-6)
        assert abs(true / target - 1) <= 0.03
        assert m.arch.skips_to_end() == m.arch  # as the derived network is built
    again = sample_matched(space, target, 8, SIZE, tol=0.03, seed=1)
    assert [_key(m.arch) for m in again] == [_key(m.arch) for m in got]
    other = sample_matched(space, target, 8, SIZE, tol=0.03, seed=2)
    assert {_key(m.arch) for m in other} != {_key(m.arch) for m in got}
    excluded = sample_matched(space, target, 8, SIZE, tol=0.03, seed=1, exclude=[got[0].arch])
    assert _key(got[0].arch) not in {_key(m.arch) for m in excluded}


def _tiny_space():
    return space_from_seed(mobilenetv2_arch(), (1, 1, 1, 1, 2, 1), "tiny")


def _band_networks(space, lo, hi):
    """Every distinct network of ``space`` with backbone cost in [lo, hi], by enumeration (the
    per-layer op costs summed; the first test checks the sampler's costs against arch_cost)."""
    table = [np.asarray(r) for r in op_cost_table(space, SIZE)]
    fixed = backbone_gmadds(space.arch_from_path([0] * len(table)), SIZE) - sum(
        float(r[0]) for r in table)
    idx = np.array(list(itertools.product(*[range(len(r)) for r in table])))
    cost = fixed + sum(r[idx[:, l]] for l, r in enumerate(table))
    return {_key(space.arch_from_path([int(v) for v in p]))
            for p in idx[(cost >= lo) & (cost <= hi)]}


@pytest.mark.parametrize("max_draws", [2_000_000, 0])  # rejection; a walk from a greedy start
def test_a_band_small_enough_to_enumerate_is_returned_exactly(max_draws):
    space = _tiny_space()
    target, tol = 0.335, 0.005
    want = _band_networks(space, target * (1 - tol), target * (1 + tol))
    assert 5 <= len(want) <= 60  # the band holds a handful of networks
    got = sample_matched(space, target, len(want), SIZE, tol=tol, seed=0, max_draws=max_draws)
    assert {_key(m.arch) for m in got} == want
    for m in got:
        assert abs(m.gmadds / target - 1) <= tol
    if max_draws == 0:
        assert {m.method for m in got} == {"metropolis"}
    with pytest.raises(ArchError, match="found only"):
        sample_matched(space, target, len(want) + 1, SIZE, tol=tol, seed=0, max_draws=max_draws)


def test_a_target_outside_the_space_names_its_range():
    with pytest.raises(ArchError, match=r"its paths cost .* to .* GMAdds"):
        sample_matched(detection_space(), 0.01, 3, SIZE)


def test_shrunk_seed_removes_layers_or_expansion_evenly_to_the_nearest_step():
    seed, space = mobilenetv2_arch(), detection_space()
    full = backbone_gmadds(seed, SIZE)
    target = 0.7 * full
    depth = shrink_seed(seed, space, target, SIZE, mode="depth")
    assert space.contains(depth.arch)
    for st, seed_st in zip(depth.arch.stages[1:], seed.stages[1:]):
        real = [op for op in st.ops if op != SKIP]
        assert real and set(real) == {seed_st.ops[0]}  # seed layers kept, never a stage emptied
        assert list(st.ops) == real + [SKIP] * (len(st.ops) - len(real))
    removed = [seed_st.depth - sum(op != SKIP for op in st.ops)
               for st, seed_st in zip(depth.arch.stages[1:], seed.stages[1:])]
    assert max(removed) - min(r for r, s in zip(removed, seed.stages[1:]) if s.depth > 1) <= 1
    assert abs(depth.rel_error) < 0.1
    expansion = shrink_seed(seed, space, target, SIZE, mode="expansion")
    ops = [op for st in expansion.arch.stages[1:] for op in st.ops if op != SKIP]
    assert set(ops) <= {"k3_e6", "k3_e3"} and "k3_e3" in ops
    assert [st.depth for st in expansion.arch.stages] == [st.depth for st in space.stages]
    assert expansion.gmadds == pytest.approx(backbone_gmadds(expansion.arch, SIZE))
    with pytest.raises(ArchError, match="nothing to shrink"):
        shrink_seed(seed, space, full * 1.01, SIZE)


def test_cli_writes_loadable_arch_files_and_a_summary(tmp_path, capsys):
    out = tmp_path / "controls"
    assert main(["sample", "--space", "detection", "--input-size", "320", "320", "--like",
                 "seed", "--n", "3", "--output", str(out)]) == 0
    doc = json.loads((out / "controls.json").read_text())
    assert doc["target_gmadds"] == pytest.approx(backbone_gmadds(mobilenetv2_arch(), SIZE))
    assert len(doc["architectures"]) == 3
    for row in doc["architectures"]:
        arch = load_arch(str(out / row["arch_file"]))
        assert backbone_gmadds(arch, SIZE) == pytest.approx(row["gmadds"])
        assert abs(row["rel_error"]) <= 0.03
    assert main(["shrink", "--space", "detection", "--input-size", "320", "320", "--madds",
                 "0.4", "--output", str(out)]) == 0
    assert (out / "mobilenetv2_shrunk_depth.json").exists()
    capsys.readouterr()
    assert main(["sample", "--like", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
