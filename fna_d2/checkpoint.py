"""Seed-weight remapping routed through detectron2's checkpointer, and checkpoints that carry
their architecture.

:class:`FNACheckpointer` is a :class:`~detectron2.checkpoint.DetectionCheckpointer` whose
:meth:`~FNACheckpointer.resume_or_load` does, in order:

1. ``resume=True`` and ``OUTPUT_DIR/last_checkpoint`` exists: resume as detectron2 does;
   **no remapping** (the checkpoint already holds trained weights). A last checkpoint that
   cannot be read (truncated by a run killed while copying it, say) is named in a warning and
   the newest readable checkpoint of ``OUTPUT_DIR`` is resumed instead; with none readable,
   :class:`~fna_d2.errors.CheckpointError` names the file and the fix.
2. Otherwise (a fresh start), if ``MODEL.WEIGHTS`` holds every tensor of the FNA backbone (a
   trained model, e.g. for ``--eval-only``), it is loaded and the seed is **not** remapped:
   evaluating a trained model needs nothing but the model.
3. Otherwise, if ``cfg.MODEL.FNA.SEED_WEIGHTS`` is set: :func:`remap_into_model` remaps the
   seed into the model's FNA backbone (strict: every key and shape of the backbone must be
   produced, never a partial load) and writes ``OUTPUT_DIR/remap_report.{json,txt}``; with
   ``MODEL.FNA.REMAP.ENABLED`` False nothing is remapped (random init) and the report says
   so. Then ``MODEL.WEIGHTS``, if set, is loaded (e.g. heads only).
4. With ``MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS > 0`` and a ``bn_data_loader`` given to the
   checkpointer, BN statistics are recalibrated (:func:`recalibrate_bn`) after 3. Trainers
   that build their loader later can call :func:`recalibrate_bn` themselves.

Every checkpoint it writes carries the backbone's architecture record under
``fna_d2.arch.CHECKPOINT_ARCH_KEY`` (the architecture's JSON document, or the search space's
name); a checkpoint whose record is not the model's is refused with
:class:`~fna_d2.errors.ArchMismatchError` when loaded (the backbone builders check
``MODEL.WEIGHTS`` the same way, and build a derived network from the record when
``MODEL.FNA.ARCH`` is empty or missing); a search resuming in another space is left to the
search's own check (``SearchResumeError``). Checkpoints are read with ``weights_only=True``.

Checkpoints and the ``last_checkpoint`` tag are written atomically (to a temporary file,
renamed once complete), so a run killed while saving keeps its last good checkpoint: the
checkpointer's ``path_manager`` is an :class:`AtomicWritePathManager`, the one seam fvcore's
``Checkpointer.save`` / ``tag_last_checkpoint`` write through.

Trainers use it in place of ``DetectionCheckpointer``::

    self.checkpointer = FNACheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg,
                                        optimizer=optimizer, scheduler=self.scheduler)
"""
from __future__ import annotations

import itertools
import logging
import os
from typing import IO, Any, ContextManager, Dict, Iterable, Optional, Tuple, Union

import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats

from .arch import CHECKPOINT_ARCH_KEY, Arch
from .errors import CheckpointError, RemapError
from .modeling import MobileNetV2Seed, SuperNet, backbone_record, check_record, fna_backbones
from .remap import RemapReport, from_canonical, remap, to_canonical
from .seeds.files import is_detectron2_checkpoint, unwrap_state_dict
from .seeds.preprocessing import preprocessing_advice
from .seeds.uri import load_seed_checkpoint
from .utils import atomic_open, peek_torch_file, unwrap_model, write_json, write_text

__all__ = ["FNACheckpointer", "AtomicWritePathManager", "remap_into_model",
           "find_fna_backbone", "recalibrate_bn", "write_report", "REPORT_NAME"]

REPORT_NAME = "remap_report"
logger = logging.getLogger(__name__)


def find_fna_backbone(model: nn.Module) -> Tuple[str, nn.Module]:
    """``(module path, module)`` of the single FNA backbone (SuperNet, DerivedNet or
    MobileNetV2Seed) inside ``model`` (e.g. ``backbone.bottom_up`` under an FPN).

    Raises :class:`RemapError` if there is none or more than one."""
    found = fna_backbones(model)
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(n or '<model>' for n, _ in found)})"
        raise RemapError(f"MODEL.FNA.SEED_WEIGHTS is set but the model has {what} FNA "
                         "backbone(s) (SuperNet / DerivedNet / MobileNetV2Seed); set "
                         "MODEL.BACKBONE.NAME to an fna_d2 backbone or clear SEED_WEIGHTS")
    return found[0]


def _target_of(backbone: nn.Module):
    """(target Arch/SearchSpace, canonical target_init, layout of the model's names)."""
    init = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    if isinstance(backbone, MobileNetV2Seed):
        canon, arch = to_canonical(init, "torchvision")
        return arch, canon, "torchvision"
    return (backbone.space if isinstance(backbone, SuperNet) else backbone.arch), init, "fna_d2"


def remap_into_model(model: nn.Module, cfg) -> RemapReport:
    """Remap ``cfg.MODEL.FNA.SEED_WEIGHTS`` (layout ``SEED_LAYOUT``) into the FNA backbone of
    ``model`` with ``cfg.MODEL.FNA.REMAP.{WIDTH,KERNEL}``, load it strictly, and return the
    report. ``REMAP.ENABLED`` False or an empty ``SEED_WEIGHTS``: no change, a disabled
    report."""
    f = cfg.MODEL.FNA
    if not f.SEED_WEIGHTS:
        return RemapReport.disabled("MODEL.FNA.SEED_WEIGHTS is empty")
    if not f.REMAP.ENABLED:
        return RemapReport.disabled("MODEL.FNA.REMAP.ENABLED is False: backbone left at its "
                                    "random init", seed_weights=f.SEED_WEIGHTS)
    path, backbone = find_fna_backbone(model)
    seed_sd, seed_arch, seed_obj = _read_seed(f.SEED_WEIGHTS, f.SEED_LAYOUT)
    advice = _advise_preprocessing(cfg, seed_arch.meta["layout"], seed_obj)
    target, init, model_layout = _target_of(backbone)
    out, report = remap(seed_sd, seed_arch, target, width=f.REMAP.WIDTH,
                        kernel=f.REMAP.KERNEL, target_init=init)
    if model_layout != "fna_d2":
        out = from_canonical(out, model_layout, target)
    # strict: same keys (remap guarantees it, load_state_dict checks it) and same shapes
    backbone.load_state_dict(out, strict=True)
    report.meta.update(seed_weights=f.SEED_WEIGHTS, backbone=path or "<model>",
                       backbone_type=type(backbone).__name__, model_layout=model_layout)
    if advice:
        report.meta["preprocessing_advice"] = {k: want for k, (_, want) in advice.items()}
    return report


def _advise_preprocessing(cfg, layout: str, seed_obj: Any) -> Dict[str, Tuple[Any, Any]]:
    """Warn (naming each key, the value to set and the current one) when a seed of
    ``layout`` meets a config that keeps the Keras seed's normalisation / BN eps."""
    advice = preprocessing_advice(layout, seed_obj, {
        "MODEL.PIXEL_MEAN": list(cfg.MODEL.PIXEL_MEAN),
        "MODEL.PIXEL_STD": list(cfg.MODEL.PIXEL_STD), "MODEL.FNA.BN_EPS": cfg.MODEL.FNA.BN_EPS})
    if advice:
        logger.warning(
            "MODEL.FNA.SEED_WEIGHTS=%r is a %s-layout seed, trained with other inputs or BN eps "
            "than the Keras seed whose settings this config keeps: set %s",
            cfg.MODEL.FNA.SEED_WEIGHTS, layout,
            ", ".join(f"{k} {want} (now {now})" for k, (now, want) in advice.items()))
    return advice


def _read_seed(uri: str, layout: str) -> Tuple[Dict[str, torch.Tensor], Arch, Any]:
    """(canonical state dict, seed arch, the file's object) of ``MODEL.FNA.SEED_WEIGHTS``;
    a :class:`RemapError` names the key and the file, and says when the file is a whole
    detectron2 model, which belongs in ``MODEL.WEIGHTS``."""
    obj = None
    try:
        obj = load_seed_checkpoint(uri)
        sd, arch = to_canonical(unwrap_state_dict(obj, where=uri), layout)
    except RemapError as e:
        hint = ""
        if is_detectron2_checkpoint(obj):
            what = "'model' and 'iteration'" if "iteration" in obj else "'model'"
            hint = (f". This file is a detectron2 checkpoint (a whole model: {what}), not seed "
                    f"weights: load it with MODEL.WEIGHTS instead and leave "
                    f"MODEL.FNA.SEED_WEIGHTS empty")
        raise RemapError(f"MODEL.FNA.SEED_WEIGHTS={uri!r}: {e}{hint}") from None
    return sd, arch, obj


def write_report(report: RemapReport, output_dir: str) -> Optional[str]:
    """Write ``remap_report.json`` and ``remap_report.txt`` into ``output_dir`` (main process
    only); returns the JSON path."""
    if not output_dir or not comm.is_main_process():
        return None
    path = write_json(os.path.join(output_dir, f"{REPORT_NAME}.json"), report.to_dict(),
                      indent=1)
    write_text(os.path.join(output_dir, f"{REPORT_NAME}.txt"),
               report.summary(max_unused=10 ** 6) + "\n")
    return path


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data_loader: Iterable[Any], iters: int) -> int:
    """Recompute the running statistics of every tracking BN in ``model`` over ``iters``
    batches of ``data_loader`` (fvcore ``update_bn_stats``; the paper: 2000 iterations after
    remapping, before fine-tuning). Runs the model in training mode inside a throw-away
    ``EventStorage`` (detectron2 meta-archs then return losses, which are discarded); BNs
    without running statistics (the super net's searchable layers) are left alone.
    Returns the number of BN layers updated."""
    if iters <= 0:
        return 0
    net = unwrap_model(model)
    was_training = net.training
    net.train()
    no_stats = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and not m.track_running_stats]
    for m in no_stats:  # batch statistics either way; keeps them out of get_bn_modules
        m.eval()
    n = len(get_bn_modules(net))
    try:
        with EventStorage():
            update_bn_stats(net, itertools.islice(iter(data_loader), iters), iters)
    finally:
        net.train(was_training)
    logger.info("Recalibrated the statistics of %d BN layers over %d iterations", n, iters)
    return n


class AtomicWritePathManager:
    """A path manager (``iopath``'s interface) whose ``open`` for writing a local file goes
    through :func:`fna_d2.utils.atomic_open` with the wrapped manager's ``open``; reads,
    remote paths and every other method are the wrapped manager's."""

    def __init__(self, path_manager: Any) -> None:
        self.wrapped = path_manager

    def open(self, path: str, mode: str = "r", **kwargs: Any
             ) -> Union[IO, ContextManager[IO]]:
        if mode in ("w", "wb") and "://" not in path:
            return atomic_open(path, mode,
                               opener=lambda name, m: self.wrapped.open(name, m, **kwargs))
        return self.wrapped.open(path, mode, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class FNACheckpointer(DetectionCheckpointer):
    """A :class:`DetectionCheckpointer` that remaps ``MODEL.FNA.SEED_WEIGHTS`` into the model
    when training starts fresh (see the module doc). ``cfg=None`` behaves exactly like
    ``DetectionCheckpointer`` (writing atomically). ``remap_report`` holds the last report
    (None after a resume)."""

    def __init__(self, model: nn.Module, save_dir: str = "", *, cfg=None,
                 bn_data_loader: Optional[Iterable[Any]] = None, save_to_disk=None,
                 **checkpointables: Any) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = AtomicWritePathManager(self.path_manager)
        self.cfg = cfg
        self.bn_data_loader = bn_data_loader
        self.remap_report: Optional[RemapReport] = None

    # -- writing: every checkpoint carries the backbone's architecture
    def save(self, name: str, **kwargs: Any) -> None:
        found = fna_backbones(self.model)
        if len(found) == 1:
            kwargs.setdefault(CHECKPOINT_ARCH_KEY, backbone_record(found[0][1]))
        super().save(name, **kwargs)

    # -- reading: weights_only, unreadable files named, the architecture checked
    def _torch_load(self, f: str) -> Any:
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling and zip errors come in many types
            raise CheckpointError(f"{f}: cannot be read as a torch checkpoint ({_first_line(e)})"
                                  "; it may be truncated or corrupt (a run killed while "
                                  "writing or copying it): copy it again, or load another "
                                  "checkpoint") from None

    def _load_file(self, filename: str) -> Dict[str, Any]:
        loaded = super()._load_file(filename)
        record = loaded.pop(CHECKPOINT_ARCH_KEY, None) if isinstance(loaded, dict) else None
        found = fna_backbones(self.model)
        # a search's own resume check (engine.search.state) names another space and the split
        if record is not None and len(found) == 1 and not isinstance(found[0][1], SuperNet):
            resumed = os.path.dirname(os.path.abspath(filename)) == os.path.abspath(self.save_dir)
            check_record(record, found[0][1], repr(filename), fix=(
                f"The run in {self.save_dir} was trained with the checkpoint's architecture: "
                "resume it with the config it was started with, or train into a new "
                "OUTPUT_DIR." if resumed else ""))
        return loaded

    # -- start-up
    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        if resume and self.has_checkpoint():
            last = self.newest_readable_checkpoint()
            logger.info("Resuming from %s: seed weights are not remapped", last)
            self.remap_report = None
            return self.load(last)
        if path and self._covers_backbone(path):
            logger.info("%s holds every tensor of the FNA backbone: loading it without "
                        "remapping the seed (MODEL.FNA.SEED_WEIGHTS)", path)
            self.remap_report = None
            return self.load(path, checkpointables=[])
        remapped = self._remap_seed()
        ret = self.load(path, checkpointables=[])
        if remapped:
            self._maybe_recalibrate()
        return ret

    def newest_readable_checkpoint(self) -> str:
        """The checkpoint ``last_checkpoint`` names if it can be read; otherwise (with a
        warning naming it) the newest readable training checkpoint of the save folder; with
        none, :class:`CheckpointError` naming the file and the fix."""
        last = self.get_checkpoint_file()
        why = _unreadable(last, need_iteration=False)
        if why is None:
            return last
        others = [f for f in self.get_all_checkpoint_files()
                  if os.path.abspath(f) != os.path.abspath(last)
                  and ".tmp." not in os.path.basename(f)]  # a write in progress (utils.io)
        for f in sorted(others, key=os.path.getmtime, reverse=True):
            if _unreadable(f, need_iteration=True) is None:
                logger.warning("The last checkpoint %s cannot be read (%s): resuming from %s, "
                               "the newest readable checkpoint in %s", last, why, f,
                               self.save_dir)
                return f
        tag = os.path.join(self.save_dir, "last_checkpoint")
        raise CheckpointError(
            f"cannot resume from {self.save_dir}: its last checkpoint {last} cannot be read "
            f"({why}) and no other checkpoint there can. Copy the file again if it is a bad "
            f"copy; or delete it and {tag} to train from the start in this OUTPUT_DIR (or "
            f"start without --resume, or use a new OUTPUT_DIR)")

    def _covers_backbone(self, path: str) -> bool:
        """True when the local torch file ``path`` holds every tensor of the model's FNA
        backbone (read without its tensors); False for anything else, which :meth:`load`
        then reads (and reports) as usual."""
        found = fna_backbones(self.model)
        if len(found) != 1 or "://" in path or not os.path.isfile(path) \
                or path.endswith((".pkl", ".pyth")):
            return False
        try:
            obj = peek_torch_file(path)
        except Exception:  # load() names the file and the error
            return False
        sd = obj.get("model", obj) if isinstance(obj, dict) else None
        if not isinstance(sd, dict):
            return False
        name, backbone = found[0]
        prefix = f"{name}." if name else ""
        return all(prefix + k in sd for k in backbone.state_dict())

    def _remap_seed(self) -> bool:
        """Remap the seed if configured; log and write the report. True if weights changed."""
        if self.cfg is None or not self.cfg.MODEL.FNA.SEED_WEIGHTS:
            return False
        report = remap_into_model(self.model, self.cfg)
        self.remap_report = report
        if report.enabled:
            c = report.counts()
            logger.info("Remapped seed %s into %s: %s", self.cfg.MODEL.FNA.SEED_WEIGHTS,
                        report.meta.get("backbone"),
                        ", ".join(f"{k} {v}" for k, v in c.items() if v))
            logger.info("\n%s", report.summary())
        else:
            logger.info(report.summary())
        out = self.cfg.OUTPUT_DIR or self.save_dir
        path = write_report(report, out)
        if path:
            logger.info("Remapping report written to %s", path)
        return report.enabled

    def _maybe_recalibrate(self) -> None:
        iters = int(self.cfg.MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS)
        if iters <= 0:
            return
        if self.bn_data_loader is None:
            logger.warning("MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS=%d but the checkpointer got no "
                           "bn_data_loader: call fna_d2.checkpoint.recalibrate_bn(model, loader, "
                           "iters) from the trainer", iters)
            if self.remap_report is not None:
                self.remap_report.meta["bn_recalibration"] = "skipped: no data loader"
            return
        n = recalibrate_bn(self.model, self.bn_data_loader, iters)
        if self.remap_report is not None:
            self.remap_report.meta["bn_recalibration"] = {"iters": iters, "bn_layers": n}
            write_report(self.remap_report, self.cfg.OUTPUT_DIR or self.save_dir)


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"


def _unreadable(path: str, need_iteration: bool) -> Optional[str]:
    """Why the checkpoint ``path`` cannot be resumed from (None if it can): missing, not a
    torch file (truncated, corrupt) or no training checkpoint (no ``model``, or with
    ``need_iteration`` no ``iteration``). Reads the file without its tensors."""
    if not path or not os.path.isfile(path):
        return "the file does not exist"
    try:
        obj = peek_torch_file(path)
    except Exception as e:  # unpickling and zip errors come in many types
        return _first_line(e)
    if not isinstance(obj, dict) or "model" not in obj:
        return "not a checkpoint: no 'model'"
    if need_iteration and "iteration" not in obj:
        return "not a training checkpoint: no 'iteration'"
    return None
