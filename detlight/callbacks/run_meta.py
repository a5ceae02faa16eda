"""The run's ``meta`` dict and its position counters, shared by the json log and every checkpoint a run writes.

Replaces: mmdet ``tools/train.py``'s ``meta`` (``seed``, ``exp_name``, ``config``, ``env_info``) that the runner
carries as ``runner.meta``, the ``hook_msgs`` that ``CheckpointHook`` / ``EvalHook`` keep in it, and the
``epoch`` / ``iter`` / ``mmcv_version`` / ``time`` entries ``runner.save_checkpoint`` adds (docs/mmcv-semantics.md §3.6-3.7).

``mmcv_version``: the installed mmcv's version when a real mmcv is installed (what mmcv's own
``runner.save_checkpoint`` writes); without mmcv, detlight's own version as a plain version string (``0.1.0``), as
mmcv readers (``mmcv.runner.load_checkpoint``, mmdet's ``publish_model``) only carry the key along. Whose files they
are is under ``detlight_version``: a reader that needs to tell the files apart checks for it.
"""

from __future__ import annotations

import os
import time
from typing import Any

import lightning.pytorch as pl

__all__ = ["checkpoint_meta", "exp_name", "mmcv_epoch_iter", "run_meta", "run_dir"]


def run_dir(trainer: pl.Trainer) -> str:
    """The run directory: the logger's ``log_dir`` (``<save_dir>/<name>/version_N``), else ``default_root_dir``.

    What ``trainer.log_dir`` gives, without its broadcast: callable on rank 0 alone (checkpoint export).
    """
    for logger in trainer.loggers[:1]:
        path = getattr(logger, "log_dir", None) or logger.save_dir
        if path:
            return str(path)
    return str(trainer.default_root_dir)


def exp_name(log_dir: str) -> str:
    """mmcv's ``exp_name``: ``<name>/<version>`` of the run directory (the config's base name in mmdet's tools).

    Example:
        >>> exp_name("/work_dirs/quickstart/version_3")
        'quickstart/version_3'
    """
    path = os.path.normpath(os.path.abspath(log_dir))
    parent, base = os.path.split(path)
    if base.startswith("version_") and os.path.basename(parent):
        return f"{os.path.basename(parent)}/{base}"
    return base


def run_meta(log_dir: str, with_config: bool = True) -> dict[str, Any]:
    """mmdet's run ``meta``: ``seed`` (``PL_GLOBAL_SEED``), ``exp_name``, ``config`` (the saved ``config.yaml``)."""
    meta: dict[str, Any] = {}
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is not None:
        meta["seed"] = int(seed) if seed.lstrip("-").isdigit() else seed
    meta["exp_name"] = exp_name(log_dir)
    config = os.path.join(log_dir, "config.yaml")
    if with_config and os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            meta["config"] = f.read()
    return meta


def mmcv_epoch_iter(trainer: pl.Trainer, by_epoch: bool) -> tuple[int, int]:
    """``(meta['epoch'], meta['iter'])`` as mmcv's ``save_checkpoint`` writes them at this point of the run.

    Epoch-based saves happen after an epoch (``after_train_epoch``, the runner's ``iter`` already counts every batch):
    ``(current_epoch + 1, batches done)``. Iteration-based saves happen inside ``after_train_iter``, before
    ``runner.iter`` is incremented, so ``iter`` is the 0-based index of the batch just trained; ``runner.epoch`` is the
    ``IterLoader``'s pass count as copied at the start of that iteration, which lags one batch behind a pass boundary
    (the pass that starts at batch ``k * len(loader)`` is counted only from the next batch on).
    """
    loop = trainer.fit_loop.epoch_loop
    done = int(loop.batch_progress.total.ready)
    if by_epoch:
        return trainer.current_epoch + 1, done
    epoch = trainer.current_epoch
    if epoch > 0 and loop.batch_idx == 0:
        epoch -= 1
    return epoch + 1, max(0, done - 1)


def checkpoint_meta(trainer: pl.Trainer, by_epoch: bool, hook_msgs: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``meta`` of an mmcv-layout checkpoint: run meta, ``hook_msgs``, ``epoch``, ``iter``, versions, ``time``."""
    from detlight._version import __version__

    meta = run_meta(run_dir(trainer))
    meta.update(extra or {})
    # hook_msgs given in `extra` (an mmcv runner's own meta) are kept; `hook_msgs` adds to / overrides them
    meta["hook_msgs"] = {**dict(meta.get("hook_msgs") or {}), **dict(hook_msgs or {})}
    epoch, it = mmcv_epoch_iter(trainer, by_epoch)
    meta.update(epoch=epoch, iter=it, mmcv_version=installed_mmcv_version() or __version__,
                detlight_version=__version__, time=time.asctime())
    return meta


def installed_mmcv_version() -> str | None:
    """The version of a real mmcv (``mmcv`` or ``mmcv-full``) when one is installed; ``None`` without (detlight's
    shim does not count)."""
    import sys
    from importlib import metadata

    from detlight.compat.hook_registry import real_mmcv_available

    loaded = sys.modules.get("mmcv")
    if loaded is not None and not getattr(loaded, "__detlight_shim__", False):
        version = getattr(loaded, "__version__", None)
        if isinstance(version, str):
            return version
    if not real_mmcv_available():
        return None
    for dist in ("mmcv", "mmcv-full"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None
