"""fna_d2's exceptions: one base, :class:`FNAError`, for every error the package raises about
its input (configs, architectures, weights, data, latency tables, pipeline state).

Each error also derives from the built-in it has always been (``ValueError``, ``RuntimeError``
or ``KeyError``), so ``except ValueError`` in user code keeps working. The command-line entry
points catch :class:`FNAError` and print its message on one line instead of a traceback: every
message names the file, key or value at fault.
"""
from __future__ import annotations

__all__ = ["FNAError", "ConfigError", "ArchError", "ArchMismatchError", "RemapError",
           "SeedWeightsError", "CheckpointError", "SplitError", "LatencyTableError",
           "SearchResumeError", "DatasetNotRegisteredError", "PipelineError", "CompareError"]


class FNAError(Exception):
    """Base of fna_d2's errors: bad input or state, with a message that names where."""


class ConfigError(FNAError, ValueError):
    """A config file or override that fna_d2 cannot use; the message names file and key."""


class ArchError(FNAError, ValueError):
    """A malformed architecture, search space or arch file. The message names where."""


class ArchMismatchError(ArchError):
    """A checkpoint written for one architecture, loaded with a config (or model) of another;
    the message names both architectures and where each came from."""


class RemapError(FNAError, ValueError):
    """Remapping cannot proceed; the message names the tensor(s) and shapes involved."""


class SeedWeightsError(FNAError, RuntimeError):
    """The seed weights cannot be found, read or cached."""


class CheckpointError(FNAError, RuntimeError):
    """A checkpoint that cannot be read (truncated, corrupt, missing); the message names the
    file and what to do."""


class SplitError(FNAError, ValueError):
    """An arch/weight split that cannot be used (empty half, bad fraction, changed data)."""


class LatencyTableError(FNAError, ValueError):
    """A latency table that does not belong to this device or search space."""


class SearchResumeError(FNAError, RuntimeError):
    """A checkpoint that cannot continue this search (other space, other data split)."""


class DatasetNotRegisteredError(FNAError, KeyError):
    """``DATASETS.TRAIN`` / ``DATASETS.TEST`` names a dataset Detectron2 does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PipelineError(FNAError, RuntimeError):
    """A pipeline stage cannot run; the message says which stage to (re-)run."""


class CompareError(FNAError, ValueError):
    """A run directory that cannot be compared (missing, unfinished, or of another task)."""


class OutputDirLockedError(FNAError, RuntimeError):
    """An output folder another live run holds; the message names the folder and that run's
    pid, host, start time and command."""


__all__ += ["OutputDirLockedError"]


class ExportError(FNAError, ValueError):
    """A trained model that cannot be exported as asked (weights file missing or not fitting
    the config's model, no sample image, an unknown format); the message names the file or
    key at fault."""


__all__ += ["ExportError"]


class UserModuleError(FNAError, ImportError):
    """A module or ``.py`` file named with ``--import`` that cannot be imported (not found, or
    it raised while importing); the message names the module or file and what it raised."""


class ToolInputError(FNAError, ValueError):
    """Input that a ``python -m fna_d2.tools`` command cannot use (a results file that is not
    COCO instance results, no image in common with the dataset, an unknown task); the message
    names the file or value at fault."""


class QuantizationError(FNAError, RuntimeError):
    """A trained model that cannot be quantized as asked (no calibration images, an unknown
    int8 backend, a part torch.fx cannot trace); the message names the option or part."""


__all__ += ["UserModuleError", "ToolInputError", "QuantizationError"]
