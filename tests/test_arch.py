"""Architecture data: JSON and authors' format round trips, validation messages, shipped files."""
import inspect
import json
import os
import pkgutil

import pytest

import fna_d2.arch as arch_pkg
from fna_d2.arch import (ARCH_VERSION, SKIP, Arch, ArchError, SearchSpace, Stage,
                         detection_space, fna_retinanet_arch, load_arch, mobilenetv2_arch,
                         parse_authors_format, save_arch, segmentation_space, to_authors_format)

ARCHS = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "archs")
PUBLISHED = ("[[32, 16], ['k3_e1'], 1]|[[16, 24], ['k3_e6', 'k3_e6', 'skip', 'skip'], 2]|"
             "[[24, 32], ['k7_e6', 'k5_e6', 'skip', 'skip'], 2]|"
             "[[32, 64], ['k3_e6', 'k5_e6', 'k7_e6', 'k3_e6'], 2]|"
             "[[64, 96], ['k5_e6', 'k7_e6', 'skip', 'skip'], 1]|"
             "[[96, 160], ['k7_e6', 'k7_e6', 'k7_e3', 'k7_e6'], 2]|[[160, 320], ['k7_e6'], 1]")


def test_json_round_trip(tmp_path):
    for a in (mobilenetv2_arch(), fna_retinanet_arch(), fna_retinanet_arch().with_output_stride(16)):
        path = save_arch(a, str(tmp_path / "a.json"))
        b = load_arch(path)
        assert b == a and b.meta == a.meta
        assert Arch.from_dict(json.loads(a.to_json())) == a
    assert not [p for p in os.listdir(tmp_path) if ".tmp." in p]  # atomic write left nothing


def test_authors_format_round_trip():
    a = parse_authors_format(PUBLISHED)
    assert a == fna_retinanet_arch()
    assert to_authors_format(a) == PUBLISHED
    assert parse_authors_format(to_authors_format(mobilenetv2_arch())) == mobilenetv2_arch()
    # the fixed first stage may be left out; double quotes and spaces are accepted
    short = PUBLISHED.split("|", 1)[1].replace("'", '"').replace(", ", " ,  ")
    assert parse_authors_format(short) == a
    assert a.depths == (1, 4, 4, 4, 4, 4, 1)
    assert a.skips_to_end().stages[1].ops == ("k3_e6", "k3_e6", SKIP, SKIP)


def test_shipped_arch_files():
    assert load_arch(os.path.join(ARCHS, "mobilenetv2.json")) == mobilenetv2_arch()
    published = fna_retinanet_arch()
    assert load_arch(os.path.join(ARCHS, "fna_retinanet_coco.json")) == published
    assert load_arch(os.path.join(ARCHS, "fna_retinanet_coco.txt")) == published
    assert detection_space().contains(published)


def _stages(**changes):
    stages = list(mobilenetv2_arch().stages)
    for idx, st in changes.items():
        stages[int(idx[1:])] = st
    return Arch(tuple(stages))


def test_validation_names_stage_layer_and_value():
    with pytest.raises(ArchError, match=r"stage 2, layer 1: unknown op 'k9_e6'"):
        _stages(s2=Stage(24, 32, 2, ("k3_e6", "k9_e6"))).validate()
    with pytest.raises(ArchError, match=r"stage 1, layer 0: 'skip' is only allowed.*16->24.*"
                                        r"stride 2"):
        _stages(s1=Stage(16, 24, 2, (SKIP, "k3_e6"))).validate()
    with pytest.raises(ArchError, match=r"stage 4: input width 72 does not match the previous "
                                        r"stage's output width 64"):
        _stages(s4=Stage(72, 96, 1, ("k3_e6",))).validate()
    with pytest.raises(ArchError, match=r"stage 3: stride must be one of \(1, 2\), got 3"):
        _stages(s3=Stage(32, 64, 3, ("k3_e6",))).validate()
    with pytest.raises(ArchError, match=r"stage 5: a stage needs at least one layer"):
        _stages(s5=Stage(96, 160, 2, ())).validate()


def test_json_errors(tmp_path):
    d = mobilenetv2_arch().to_dict()
    d["version"] = ARCH_VERSION + 1
    p = tmp_path / "v.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ArchError, match=rf"v\.json: unsupported arch file version {ARCH_VERSION + 1}"):
        load_arch(str(p))
    d = mobilenetv2_arch().to_dict()
    d["stages"][3]["ops"][2] = "k4_e6"
    p.write_text(json.dumps(d))
    with pytest.raises(ArchError, match=r"v\.json, stage 3, layer 2: unknown op 'k4_e6'"):
        load_arch(str(p))
    d = mobilenetv2_arch().to_dict()
    d["stages"][2]["cout"] = 40
    p.write_text(json.dumps(d))
    with pytest.raises(ArchError, match=r"stage 3: input width 32 does not match.*width 40"):
        load_arch(str(p))
    d = mobilenetv2_arch().to_dict()
    d["format"] = "something"
    p.write_text(json.dumps(d))
    with pytest.raises(ArchError, match=r"'format' must be 'fna_d2.arch'"):
        load_arch(str(p))
    p.write_text('{"format": "fna_d2.arch", ')
    with pytest.raises(ArchError, match=r"v\.json: invalid JSON at line 1"):
        load_arch(str(p))
    with pytest.raises(ArchError, match=r"nope\.json: cannot read arch file"):
        load_arch(str(tmp_path / "nope.json"))


def test_malformed_authors_strings(tmp_path):
    with pytest.raises(ArchError, match=r"stage 1: cannot parse"):
        parse_authors_format("[[32, 16], ['k3_e1'], 1]|[[16, 24], ['k3_e6' 'k3_e6'], ]")
    with pytest.raises(ArchError, match="empty architecture string"):
        parse_authors_format("  ")
    with pytest.raises(ArchError, match=r"stage 1, layer 1: unknown op 'k3_e5'"):
        parse_authors_format(PUBLISHED.replace("'k3_e6', 'skip'", "'k3_e5', 'skip'", 1))
    with pytest.raises(ArchError, match=r"stage 2, layer 0: 'skip' is only allowed"):
        parse_authors_format(PUBLISHED.replace("['k7_e6', 'k5_e6'", "['skip', 'k5_e6'"))
    # code is never evaluated
    evil = "[[32, 16], [__import__('os').system('touch " + str(tmp_path / "x") + "')], 1]"
    with pytest.raises(ArchError):
        parse_authors_format(evil)
    assert not (tmp_path / "x").exists()
    p = tmp_path / "a.txt"
    p.write_text("[[16, 24], ['k3_e6'], 2]|[[25, 32], ['k3_e6'], 2]")
    with pytest.raises(ArchError, match=r"a\.txt, stage 2: input width 25"):
        load_arch(str(p))


def test_no_eval_in_arch_package():
    names = [m.name for m in pkgutil.iter_modules(arch_pkg.__path__)]
    assert "files" in names  # the authors' format parser is among the modules checked
    for name in [""] + names:
        src = inspect.getsource(__import__(f"fna_d2.arch{'.' + name if name else ''}",
                                           fromlist=["_"]))
        assert "eval(" not in src and "exec(" not in src and "literal_eval" not in src, name


@pytest.mark.parametrize("stem", [24, 16])
def test_authors_format_stem_width_is_the_first_cin(stem):
    """The authors' format has no stem entry: the first stage's Cin is the stem width."""
    text = PUBLISHED.replace("[[32, 16], ['k3_e1'], 1]", f"[[{stem}, 16], ['k3_e1'], 1]")
    a = parse_authors_format(text)
    assert a.stem_channels == stem and a.stages[0] == Stage(stem, 16, 1, ("k3_e1",))
    assert a.depths == (1, 4, 4, 4, 4, 4, 1)
    assert to_authors_format(a) == text and parse_authors_format(to_authors_format(a)) == a
    assert parse_authors_format(PUBLISHED).stem_channels == 32


def test_spaces():
    det, seg = detection_space(), segmentation_space()
    assert det.num_searchable == 21 and seg.num_searchable == 25
    assert [st.depth for st in det.stages] == [1, 4, 4, 4, 4, 4, 1]
    assert det.stages[1].candidates[0] == ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6")
    assert det.stages[1].candidates[1][-1] == SKIP and SKIP not in det.stages[6].candidates[0]
    os16 = seg.with_output_stride(16)
    assert [(s.stride, s.dilation) for s in os16.stages][4:] == [(1, 1), (1, 2), (1, 2)]
    assert isinstance(os16, SearchSpace) and os16.num_searchable == 25
    path = det.arch_from_choices([[0]] + [[1] * st.depth for st in det.stages[1:]])
    assert det.contains(path) and not det.contains(mobilenetv2_arch())
    # one candidate index per searchable layer <-> an Arch of the space
    assert det.path_of(path) == [1] * 21 and det.arch_from_path([1] * 21) == path
    mixed = [l % 6 for l in range(21)]
    assert det.path_of(det.arch_from_path(mixed, {"name": "m"})) == mixed
    with pytest.raises(ArchError, match=r"x: architecture is not a path of search space "
                                        r"'detection'"):
        det.path_of(mobilenetv2_arch(), "x")
    with pytest.raises(ArchError, match=r"one candidate index per searchable layer.*\(21\), "
                                        r"got 2"):
        det.arch_from_path([0, 1])
