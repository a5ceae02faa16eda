"""detlight's own exceptions: one root, a few kinds.

Replaces: mmcv's habit of raising bare ``ValueError`` / ``KeyError`` / ``TypeError`` for every bad input.

The CLI (:func:`detlight.errors.run_main`) prints an exception derived from :class:`DetLightError` as one line,
``detlight: error: <message>``, because its message is complete on its own: it names the key, file or value at fault
and what would be accepted. Every other exception (a ``KeyError`` inside a user's model, a bug in detlight) keeps its
traceback. Each kind also derives from the builtin type code written against mmcv would catch
(``ConfigError`` is a ``ValueError``, ``WorkDirError`` a ``PermissionError``, ...), so ``except ValueError`` keeps
working.

This module imports nothing heavy: raising a detlight error never pulls in torch or Lightning.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataLoaderWorkerError",
    "DatasetError",
    "DetLightError",
    "HookError",
    "LaunchConfigError",
    "ModelContractError",
    "NonFiniteLossError",
    "PathError",
    "SaveError",
    "UsageError",
    "WorkDirError",
]


class DetLightError(Exception):
    """Root of detlight's errors: the message is complete on its own and is printed without a traceback."""


class UsageError(DetLightError, ValueError):
    """A command line or config value the parser rejected (the message is already shortened)."""


class ConfigError(DetLightError, ValueError, TypeError):
    """A config file could not be read safely, or its content is inconsistent (the message names file and key)."""


class DatasetError(DetLightError, ValueError):
    """A dataset file is missing, malformed or inconsistent; the message names the file and the problem."""


class DataLoaderWorkerError(DetLightError, RuntimeError):
    """A DataLoader worker process died (killed by the out-of-memory killer or a signal); the message says what to
    change."""


class CheckpointError(DetLightError, ValueError):
    """A checkpoint file is unreadable, unsafe to unpickle, or does not match the model."""


class SaveError(DetLightError, OSError):
    """A checkpoint or log could not be written (disk full, size limit, permissions); the previous file is intact."""


class WorkDirError(DetLightError, PermissionError):
    """The run directory (``trainer.default_root_dir``, mmcv's ``work_dir``) cannot be written."""


class PathError(DetLightError, OSError):
    """A file or folder named by a config key or an environment variable (``DETLIGHT_CACHE``) cannot be read or
    written; the message names the path, what set it and the fix."""


class LaunchConfigError(DetLightError, ValueError):
    """The Trainer's ``devices`` / ``num_nodes`` or the rendezvous variables do not fit how processes were started."""


class ModelContractError(DetLightError, TypeError):
    """A detector's inputs or outputs do not follow the contract detlight adapts (the message names the model)."""


class HookError(DetLightError, RuntimeError):
    """A user's mmcv-style hook is malformed (no stage method, unknown priority) or failed inside a stage."""


class NonFiniteLossError(DetLightError, RuntimeError):
    """A loss (or the weights about to be checkpointed) is NaN or infinite; the message says where."""
