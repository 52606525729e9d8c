"""Small helpers every part of fna_d2 uses, one per job: atomic file writes and JSON
(:mod:`.io`), content hashes (:mod:`.hashing`), headless plotting (:mod:`.plotting`), model
unwrapping (:mod:`.models`), freezing for alternating steps (:mod:`.freeze`), summary
statistics (:mod:`.stats`), number formatting (:mod:`.fmt`), reading a checkpoint's structure
without its tensors (:mod:`.torchfile`), the lock that keeps one live run in an output folder
(:mod:`.lock`) and the command lines' logging set-up (:mod:`.logs`, imported by its module name:
it needs detectron2, which the rest does not, so ``fna_d2.latency``'s command runs without it).
Nothing here imports the rest of fna_d2."""
from .fmt import fmt_number, fmt_seconds
from .freeze import frozen, frozen_bn_statistics
from .hashing import file_sha256, text_sha256
from .io import atomic_open, atomic_path, read_json, write_json, write_text
from .lock import LockHolder, OutputDirLock, lock_holder
from .models import unwrap_model
from .plotting import pyplot, save_figure
from .stats import mean_std
from .torchfile import peek_torch_file

__all__ = ["atomic_open", "atomic_path", "write_text", "write_json", "read_json", "file_sha256",
           "text_sha256", "pyplot", "save_figure", "unwrap_model", "mean_std", "fmt_number",
           "fmt_seconds", "frozen", "frozen_bn_statistics",
           "peek_torch_file", "OutputDirLock", "LockHolder", "lock_holder"]
