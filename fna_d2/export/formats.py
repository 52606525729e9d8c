"""Writing and running the two export formats.

- ``torchscript``: ``torch.jit.trace`` of the adapter, saved with ``torch.jit.save``
  (``model.ts``; load with ``torch.jit.load``, needs only torch).
- ``onnx``: torch's TorchScript-based exporter (``dynamo=False``; the default dynamo path of
  torch >= 2.9 needs ``onnxscript``, and without it writes an empty file), opset 17,
  input ``image``, outputs named as the adapter's (``model.onnx``). Checked with
  ``onnx.checker`` and run with onnxruntime, or with onnx's reference evaluator where
  onnxruntime is not installed.

Both are traced at the sample's size: the exported model takes images of that size.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, List, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ExportError

__all__ = ["FORMATS", "FILE_NAMES", "ONNX_OPSET", "write_export", "load_export"]

FORMATS = ("torchscript", "onnx")
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}
ONNX_OPSET = 17
INPUT_NAME = "image"


def _quiet() -> None:
    """The tracer's warnings about Python values turned into constants: expected here (the
    graph is specialised to the sample's size, which the export records)."""
    warnings.simplefilter("ignore", torch.jit.TracerWarning)
    warnings.simplefilter("ignore", FutureWarning)  # torch.jit / torch.onnx deprecation notes
    warnings.simplefilter("ignore", DeprecationWarning)


def write_export(fmt: str, adapter: nn.Module, image: torch.Tensor, path: str,
                 output_names: Sequence[str], opset: int = ONNX_OPSET) -> str:
    """Export ``adapter`` (``image -> tuple of tensors``) to ``path`` in format ``fmt``."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: unknown; use one of {', '.join(FORMATS)}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with warnings.catch_warnings(), torch.no_grad():
        _quiet()
        if fmt == "torchscript":
            traced = torch.jit.trace(adapter, (image,), check_trace=False)
            torch.jit.save(traced, tmp)
        else:
            torch.onnx.export(adapter, (image,), tmp, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(output_names))
    if not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
        raise ExportError(f"{fmt} export wrote no model to {path}")
    os.replace(tmp, path)
    return path


def _onnx_runner(path: str) -> Callable[[torch.Tensor], List[torch.Tensor]]:
    try:
        import onnx
    except ImportError:
        raise ExportError("checking an ONNX export needs the onnx package (pip install onnx "
                          "onnxruntime; scripts/setup_env.sh installs both)") from None
    try:
        onnx.checker.check_model(path)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{path}: not a valid ONNX model ({str(e).splitlines()[0]})") from None
    try:
        import onnxruntime as ort
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        ref = ReferenceEvaluator(path)
        return lambda x: [torch.from_numpy(np.asarray(o)) for o in
                          ref.run(None, {INPUT_NAME: x.numpy()})]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda x: [torch.from_numpy(o) for o in sess.run(None, {INPUT_NAME: x.numpy()})]


def load_export(fmt: str, path: str) -> Callable[[torch.Tensor], List[torch.Tensor]]:
    """A function ``image -> list of output tensors`` that runs the exported file."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise ExportError(f"{path}: missing or empty")
    if fmt == "onnx":
        return _onnx_runner(path)
    module = torch.jit.load(path, map_location="cpu")

    def run(x: torch.Tensor) -> List[torch.Tensor]:
        with torch.no_grad():
            return list(module(x))
    return run
