"""detectron2 evaluation results as the pipeline stores them: plain JSON data, and the
headline numbers of a task (AP/AP50/AP75 or mIoU/fwIoU/pACC)."""
from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ["to_plain", "pick_metric"]

#: metric -> (results section, the numbers the pipeline reports)
_HEADLINES = {"AP": ("bbox", ("AP", "AP50", "AP75")),
              "mIoU": ("sem_seg", ("mIoU", "fwIoU", "pACC"))}


def to_plain(obj: Any) -> Any:
    """Nested (Ordered)dicts of numbers -> JSON-able plain data (NaN kept as None)."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if hasattr(obj, "item"):
        obj = obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def pick_metric(results: Optional[dict], metric: str) -> Dict[str, Optional[float]]:
    """The headline numbers of a detectron2 results dict: AP/AP50/AP75 or mIoU/fwIoU/pACC
    (None where detectron2 reported NaN, e.g. AP of a detector with no detections)."""
    if not results:
        return {}
    section, names = _HEADLINES[metric]
    task_res = results.get(section)
    if task_res is None:  # results of several test sets: take the first that has it
        for v in results.values():
            if isinstance(v, dict) and section in v:
                task_res = v[section]
                break
    if not isinstance(task_res, dict):
        return {}
    return {k: (None if task_res.get(k) is None else float(task_res[k])) for k in names
            if k in task_res}
