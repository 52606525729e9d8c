""":func:`export_trained_model`: a trained model to TorchScript or ONNX in one call, checked
against the eager model, with an ``export.json`` beside the file that says what the exported
model takes and returns and how close it came."""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional

import torch
from detectron2.config import CfgNode

from ..tasks import task_of
from ..utils import file_sha256, write_json
from .adapters import export_adapter, output_names
from .formats import FILE_NAMES, INPUT_NAME, ONNX_OPSET, load_export, write_export
from .inputs import load_sample, sample_image_path
from .model import load_trained_model
from .parity import compare_outputs

__all__ = ["DEFAULT_TOLERANCE", "export_trained_model"]

logger = logging.getLogger(__name__)

#: parity tolerance, relative to each output's magnitude (see :mod:`.parity`)
DEFAULT_TOLERANCE = 1e-3


def export_trained_model(cfg: CfgNode, fmt: str, output_dir: str,
                         sample_image: Optional[str] = None,
                         tolerance: float = DEFAULT_TOLERANCE, opset: int = ONNX_OPSET,
                         config_file: Optional[str] = None) -> Dict[str, Any]:
    """Export ``cfg``'s model with ``MODEL.WEIGHTS`` to ``output_dir/model.{ts,onnx}``, run the
    written file on the sample image and compare with the eager model. Returns what
    ``output_dir/export.json`` records (``parity.ok`` tells whether it passed; the file is
    kept either way)."""
    task, _ = task_of(cfg)
    model = load_trained_model(cfg)
    image_path = sample_image_path(cfg, sample_image)
    image, orig_hw = load_sample(cfg, image_path)
    names = output_names(cfg)
    adapter = export_adapter(cfg, model, image)
    path = os.path.join(output_dir, FILE_NAMES[fmt])
    logger.info(f"exporting {task} model {cfg.MODEL.WEIGHTS} to {path} ({fmt}, traced on "
                f"{image_path} at {tuple(image.shape[1:])})")
    write_export(fmt, adapter, image, path, names, opset)
    run = load_export(fmt, path)
    with torch.no_grad():
        ref = list(adapter(image))
    parity = compare_outputs(names, ref, run(image), tolerance, task == "detection")
    (logger.info if parity.ok else logger.error)(parity.summary())
    info = {
        "format": fmt, "file": os.path.basename(path), "task": task,
        "config_file": config_file, "weights": os.path.abspath(cfg.MODEL.WEIGHTS),
        "weights_sha256": file_sha256(cfg.MODEL.WEIGHTS),
        "input": {"name": INPUT_NAME, "shape": list(image.shape), "dtype": "float32",
                  "channels": cfg.INPUT.FORMAT, "range": "0-255",
                  "note": "one image resized as at test time (INPUT.MIN_SIZE_TEST "
                          f"{cfg.INPUT.MIN_SIZE_TEST}, MAX_SIZE_TEST "
                          f"{cfg.INPUT.MAX_SIZE_TEST}); normalisation and padding are in the "
                          "model; the graph is traced at this size"},
        "outputs": list(names),
        "sample_image": os.path.abspath(image_path), "sample_original_size": list(orig_hw),
        "parity": parity.to_dict(),
        "torch": torch.__version__, **({"onnx_opset": opset} if fmt == "onnx" else {}),
    }
    write_json(os.path.join(output_dir, "export.json"), info, sort_keys=True)
    return info
