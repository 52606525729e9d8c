""":func:`quantize_trained_model`: a trained model to an int8 TorchScript in one call,
calibrated on training images, with ``quant.json`` beside it (what was quantized, parity of the
file against the eager int8 model, SQNR of the outputs against float, CPU latency of both and,
with ``evaluate=True``, the test metric of both)."""
from __future__ import annotations

import logging
import os
from typing import Any, Dict

import torch
from detectron2.config import CfgNode

from ..export import export_adapter, load_export, load_trained_model, write_export
from ..export.adapters import output_names
from ..export.inputs import load_sample, sample_image_path
from ..tasks import task_of
from ..utils import file_sha256, write_json
from .fx import BACKEND, quantize_model, quantized_parts
from .measure import calibration_batches, cpu_latency, evaluate, sqnr_db

__all__ = ["quantize_trained_model", "FILE_NAME", "RESULT_NAME"]

logger = logging.getLogger(__name__)

FILE_NAME = "model_int8.ts"
RESULT_NAME = "quant.json"


def quantize_trained_model(cfg: CfgNode, output_dir: str, calib_images: int = 64,
                           run_eval: bool = False, latency_s: float = 2.0,
                           config_file: str = None, backend: str = BACKEND) -> Dict[str, Any]:
    """Quantize ``cfg``'s model with ``MODEL.WEIGHTS``, write ``output_dir/model_int8.ts``
    (image in, the export's outputs out: see ``docs/export.md``) and ``quant.json``; returns
    what ``quant.json`` records."""
    task, metric = task_of(cfg)
    model = load_trained_model(cfg)
    calib = calibration_batches(cfg, calib_images)
    qmodel = quantize_model(model, calib, backend)  # sets torch's quantized engine
    image_path = sample_image_path(cfg)
    image, _ = load_sample(cfg, image_path)
    names = output_names(cfg)
    fadapter = export_adapter(cfg, model, image)
    qadapter = export_adapter(cfg, qmodel, image)
    path = os.path.join(output_dir, FILE_NAME)
    os.makedirs(output_dir, exist_ok=True)
    write_export("torchscript", qadapter, image, path, names, 17)
    with torch.no_grad():
        fout, qout = list(fadapter(image)), list(qadapter(image))
        sout = load_export("torchscript", path)(image)
    file_diff = max(float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
                    for a, b in zip(qout, sout))
    info: Dict[str, Any] = {
        "task": task, "config_file": config_file, "file": FILE_NAME,
        "weights": os.path.abspath(cfg.MODEL.WEIGHTS),
        "weights_sha256": file_sha256(cfg.MODEL.WEIGHTS),
        "backend": backend, "threads": torch.get_num_threads(), "quantized": quantized_parts(model),
        "calibration": {"dataset": cfg.DATASETS.TRAIN[0],
                        "images": sum(len(b) for b in calib)},
        "input": {"shape": list(image.shape), "sample_image": os.path.abspath(image_path)},
        "outputs": list(names),
        "file_vs_eager_int8_max_abs_diff": file_diff,
        "torch": torch.__version__,
    }
    if task == "segmentation":
        info["sqnr_db_vs_float"] = sqnr_db(fout[0], qout[0])
        info["label_agreement_vs_float"] = float(
            (fout[0].argmax(0) == qout[0].argmax(0)).float().mean())
    info["latency"] = {"float": cpu_latency(fadapter, image, latency_s),
                       "int8": cpu_latency(qadapter, image, latency_s)}
    info["latency"]["speedup"] = (info["latency"]["float"]["median_ms"]
                                  / info["latency"]["int8"]["median_ms"])
    if run_eval:
        ev = {k: evaluate(cfg, m, os.path.join(output_dir, "inference", k))
              for k, m in (("float", model), ("int8", qmodel))}
        info["eval"] = {"metric": metric, "dataset": ev["float"]["dataset"],
                        "float": ev["float"]["value"], "int8": ev["int8"]["value"],
                        "delta": ev["int8"]["value"] - ev["float"]["value"]}
    write_json(os.path.join(output_dir, RESULT_NAME), info, sort_keys=True)
    logger.info(f"wrote {path} and {RESULT_NAME}")
    return info
