"""Export of a trained model: TorchScript or ONNX in one command, checked against the eager
model. ::

    python -m fna_d2.export --config-file CFG --format torchscript|onnx --output DIR \\
        MODEL.WEIGHTS path/model_final.pth

Modules, one subject each: :mod:`.model` (the trained model, loaded strictly), :mod:`.inputs`
(the sample image), :mod:`.adapters` (image in, tensors out: what the export computes),
:mod:`.formats` (writing and running TorchScript / ONNX), :mod:`.parity` (exported vs eager),
:mod:`.core` (:func:`export_trained_model`), :mod:`.cli`. See ``docs/export.md``.
"""
from .adapters import OUTPUT_NAMES, export_adapter
from .cli import main, parse_args
from .core import DEFAULT_TOLERANCE, export_trained_model
from .formats import FILE_NAMES, FORMATS, load_export, write_export
from .model import load_trained_model, read_model_weights
from .parity import Parity, compare_outputs

__all__ = ["export_trained_model", "load_trained_model", "read_model_weights", "export_adapter",
           "write_export", "load_export", "compare_outputs", "Parity", "FORMATS", "FILE_NAMES",
           "OUTPUT_NAMES", "DEFAULT_TOLERANCE", "main", "parse_args"]
