"""``ckpt_path: last``: mmcv's ``auto_resume``, resuming from the newest readable checkpoint of the run.

Replaces: mmcv ``runner.resume`` / ``auto_resume`` (docs/mmcv-semantics.md §3.7) on top of Lightning's own resume.

The pieces of an iteration-exact resume live where they belong; their old names here keep working:
:class:`~detlight.callbacks.preemption.Preemption` (YAML ``class_path: detlight.resume.Preemption`` included),
:class:`~detlight.data.loader_state.StatefulDataLoader`, :func:`~detlight.data.loader_state.get_rng_state`,
:func:`~detlight.data.loader_state.set_rng_state` and :func:`~detlight.data.loader_state.load_skipped_loader_state`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl

from detlight.callbacks.preemption import Preemption
from detlight.checkpoint_io import checkpoint_problem
from detlight.data.loader_state import StatefulDataLoader, get_rng_state, load_skipped_loader_state, set_rng_state
from detlight.exceptions import CheckpointError

__all__ = [
    "Preemption",
    "StatefulDataLoader",
    "find_checkpoints",
    "find_last_checkpoint",
    "get_rng_state",
    "load_skipped_loader_state",
    "resolve_ckpt_path",
    "run_checkpoint_dirs",
    "set_rng_state",
]

log = logging.getLogger(__name__)

#: ``ckpt_path`` values that mean "the newest checkpoint under the run's directories, or none" (mmcv auto_resume).
AUTO_RESUME_VALUES = ("last", "auto")


def find_checkpoints(dirs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Every ``*.ckpt`` file under ``dirs`` (searched recursively), newest first, links resolved and deduplicated.

    Hidden files (the temporary files of an atomic save) are ignored.
    """
    found: dict[str, int] = {}
    for root in dirs:
        root_path = Path(root)
        if not root_path.is_dir():
            continue
        for path in root_path.rglob("*.ckpt"):
            if path.name.startswith(".") or not path.is_file():
                continue
            real = os.path.realpath(path)
            found[real] = os.stat(real).st_mtime_ns
    return sorted(found, key=lambda p: (found[p], p), reverse=True)


def find_last_checkpoint(dirs: Sequence[str | os.PathLike[str]]) -> str | None:
    """The most recently written ``*.ckpt`` file under ``dirs`` (searched recursively), or ``None``.

    mmcv's ``find_latest_checkpoint(work_dir)`` looked for ``latest.pth``; Lightning run directories are versioned
    (``version_N/checkpoints``), so the newest file of any earlier run is taken. Hidden files (the temporary files of
    an atomic save) are ignored and links are followed. Whether the file is readable is not checked here
    (:func:`resolve_ckpt_path` does).
    """
    found = find_checkpoints(dirs)
    return found[0] if found else None


def run_checkpoint_dirs(trainer: pl.Trainer) -> list[str]:
    """Where a run's checkpoints can be: ``default_root_dir``, the loggers' ``save_dir`` and the checkpoint
    callbacks' ``dirpath``."""
    dirs: list[str] = [str(trainer.default_root_dir)]
    for logger in trainer.loggers:
        save_dir = getattr(logger, "save_dir", None)
        if save_dir:
            dirs.append(str(save_dir))
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        dirpath = getattr(callback, "dirpath", None)
        if isinstance(dirpath, (str, os.PathLike)):
            dirs.append(str(dirpath))
    return dirs


def resolve_ckpt_path(ckpt_path: str | None, trainer: pl.Trainer, stage: str = "fit") -> str | None:
    """``ckpt_path`` for ``stage``: ``"last"``/``"auto"`` become the newest readable checkpoint of the run.

    The directories searched are ``default_root_dir``, the logger's ``save_dir`` and the ``dirpath`` of checkpoint
    callbacks. A newer file that is not a complete checkpoint (a truncated leftover) is skipped with a warning that
    names it. When none holds a checkpoint, ``fit`` starts from scratch (``None``), as mmcv's ``auto_resume`` does;
    ``validate`` / ``test`` / ``predict`` refuse, as they would evaluate untrained weights. Any other value is
    returned unchanged once it is known to exist and read as a complete checkpoint.

    Raises:
        CheckpointError: ``ckpt_path`` is a path that does not exist, or is truncated or corrupt; every checkpoint found for ``last`` is; or
            ``last`` found nothing for a stage other than ``fit``.
    """
    if ckpt_path is None or ckpt_path in ("best", "hpc", "registry"):
        return ckpt_path
    if ckpt_path not in AUTO_RESUME_VALUES:
        if "://" not in ckpt_path:
            if os.path.isdir(ckpt_path):
                from detlight.errors import check_checkpoint_file

                check_checkpoint_file(ckpt_path)  # names the folder's newest checkpoint
            if not os.path.isfile(ckpt_path):
                raise CheckpointError(f"Checkpoint to resume from not found: ckpt_path={ckpt_path}")
            problem = checkpoint_problem(ckpt_path)
            if problem is not None:
                raise CheckpointError(f"Checkpoint {ckpt_path} (ckpt_path) cannot be read: {problem}.")
        return ckpt_path
    dirs = run_checkpoint_dirs(trainer)
    candidates = find_checkpoints(dirs)
    skipped: list[str] = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            break
        skipped.append(f"{path} ({problem})")
    else:
        path = None
    if skipped:
        kept = f"using {path}, the newest readable one" if path else "no readable checkpoint is left"
        message = f"detlight: ckpt_path={ckpt_path}: skipping unreadable checkpoint(s) {'; '.join(skipped)}; {kept}."
        log.debug(message)  # printed once, below: a warning would print it a second time through logging
        print(message, file=sys.stderr, flush=True)
    if path is None and skipped:
        raise CheckpointError(f"ckpt_path={ckpt_path}: every checkpoint under {sorted(set(dirs))} is unreadable: "
                              f"{'; '.join(skipped)}. Delete them to start from scratch, or pass a path.")
    if path is None and stage != "fit":
        raise CheckpointError(f"ckpt_path={ckpt_path}: no checkpoint under {sorted(set(dirs))} to {stage}; train "
                              "first, or pass the checkpoint's path (--ckpt_path PATH).")
    if path is None:
        log.info("ckpt_path=%s: no checkpoint under %s, starting from scratch", ckpt_path, sorted(set(dirs)))
    else:
        log.info("%s from %s", "Resuming" if stage == "fit" else "Loading weights", path)
    return path
