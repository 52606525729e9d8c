"""int8 post-training quantization of a trained model (torch.ao FX graph mode, x86). ::

    python -m fna_d2.quant --config-file CFG --calib-images 64 --output DIR [--eval] \\
        MODEL.WEIGHTS path/model_final.pth

Modules, one subject each: :mod:`.fx` (quantizing the backbone and head of a model, the rest
left in float), :mod:`.measure` (calibration data, evaluation, CPU latency, SQNR), :mod:`.core`
(:func:`quantize_trained_model`: quantize, write the TorchScript, measure), :mod:`.cli`. See
``docs/quantization.md``.
"""
from ..errors import QuantizationError
from .cli import main, parse_args
from .core import FILE_NAME, RESULT_NAME, quantize_trained_model
from .fx import (BACKEND, BACKENDS, QuantizedBackbone, quantize_model,
                 quantized_parts)
from .measure import calibration_batches, cpu_latency, evaluate, sqnr_db

__all__ = ["quantize_model", "quantize_trained_model", "quantized_parts", "QuantizedBackbone",
           "QuantizationError", "BACKEND", "BACKENDS", "FILE_NAME", "RESULT_NAME",
           "calibration_batches",
           "evaluate", "cpu_latency", "sqnr_db", "main", "parse_args"]
