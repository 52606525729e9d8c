"""fna_d2.utils, fna_d2.errors and the one layer walk (fna_d2.arch.iter_layers)."""
import hashlib
import inspect
import json
import os
import statistics

import pytest
from torch import nn

import fna_d2.errors as errors
from fna_d2.arch import (SKIP, detection_space, iter_layers, mobilenetv2_arch, parse_op,
                         segmentation_space)
from fna_d2.cost import conv_out_size
from fna_d2.utils import (atomic_open, file_sha256, fmt_number, fmt_seconds, mean_std,
                          read_json, save_figure, pyplot, text_sha256, unwrap_model, write_json,
                          write_text)


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = str(tmp_path / "sub" / "a.json")
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert read_json(path) == {"v": 1}
    assert os.listdir(tmp_path / "sub") == ["a.json"]  # the temporary file is gone


def test_write_text_and_read_json(tmp_path):
    p = str(tmp_path / "t.txt")
    write_text(p, "hello\n")
    assert open(p).read() == "hello\n"
    assert read_json(p) is None  # not JSON
    assert read_json(str(tmp_path / "missing.json")) is None
    q = write_json(str(tmp_path / "j.json"), {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert json.loads(open(q).read()) == {"a": [1, 2], "b": 1}
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(p, "a"):
            pass


def test_hashes_match_hashlib(tmp_path):
    p = tmp_path / "blob.bin"
    data = os.urandom(3 << 20)
    p.write_bytes(data)
    assert file_sha256(str(p)) == hashlib.sha256(data).hexdigest()
    assert text_sha256("ä") == hashlib.sha256("ä".encode("utf-8")).hexdigest()


def test_mean_std_is_the_sample_statistic_and_undefined_for_one_value():
    assert mean_std([1.0, 2.0, 6.0]) == {"mean": 3.0, "std": statistics.stdev([1, 2, 6]), "n": 3}
    assert mean_std([4.0]) == {"mean": 4.0, "std": None, "n": 1}
    assert mean_std([]) == {"mean": None, "std": None, "n": 0}


def test_formatting():
    assert fmt_number(1.23456) == "1.23" and fmt_number(1.5, 3) == "1.500"
    assert fmt_number(None) == "n/a" and fmt_number(float("nan"), missing="-") == "-"
    assert fmt_number(7) == "7"
    assert fmt_seconds(75) == "1 min 15 s" and fmt_seconds(3725.2) == "1 h 02 min"
    assert fmt_seconds(9.94) == "9.9 s" and fmt_seconds(None) == "-"


def test_unwrap_model():
    m = nn.Linear(2, 2)
    assert unwrap_model(m) is m
    assert unwrap_model(nn.DataParallel(m)) is m


def test_save_figure_writes_a_png_atomically(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, str(tmp_path / "f.png"), dpi=40)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["f.png"]


def test_every_domain_error_derives_from_one_base():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if c.__module__ == errors.__name__ and c is not errors.FNAError]
    assert len(classes) >= 10
    for c in classes:
        assert issubclass(c, errors.FNAError), c
    # the built-in each used to be stays a base, so callers' `except ValueError` still work
    assert issubclass(errors.ArchError, ValueError)
    assert issubclass(errors.DatasetNotRegisteredError, KeyError)
    assert str(errors.DatasetNotRegisteredError("no 'x'")) == "no 'x'"


@pytest.mark.parametrize("size", [(320, 320), (321, 513), (800, 1088)])
@pytest.mark.parametrize("output_stride", [None, 16, 8])
def test_iter_layers_sizes_agree_with_the_conv_arithmetic(size, output_stride):
    """Each layer's output size equals that of its depthwise conv (kernel, stride, dilation,
    same padding), for every candidate, chained from the stride-2 stem."""
    for net in (mobilenetv2_arch(), detection_space(), segmentation_space()):
        built = net.with_output_stride(output_stride)
        h, w = conv_out_size(size[0], 3, 2), conv_out_size(size[1], 3, 2)
        layers = list(iter_layers(built, size))
        assert len(layers) == sum(st.depth for st in built.stages)
        for layer in layers:
            assert layer.in_hw == (h, w)
            for op in layer.ops:
                k = 1 if op == SKIP else parse_op(op)[0]
                out = (conv_out_size(h, k, layer.stride, layer.dilation),
                       conv_out_size(w, k, layer.stride, layer.dilation))
                assert layer.out_hw == out, (layer, op)
            h, w = layer.out_hw
        if output_stride:
            assert max(size) // max(h, w) in (output_stride, output_stride - 1)
    space = detection_space()
    got = [(l.stage, l.index) for l in iter_layers(space) if l.searchable]
    assert got == space.searchable_layers()
    assert all(l.in_hw is None for l in iter_layers(space))
