"""Checkpointing with mmcv's cadence, file names and (optionally) its ``.pth`` layout.

Replaces: mmcv ``CheckpointHook`` (docs/mmcv-semantics.md §2.4) and ``runner.save_checkpoint`` (§3.7).

Files are written through :mod:`detlight.checkpoint_io` (atomic, verified writes; a failed save raises one
``SaveError`` and keeps the previous file): :class:`MMCheckpoint` installs its
:class:`~detlight.checkpoint_io.AtomicCheckpointIO` when the strategy still uses the plain ``TorchCheckpointIO``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from typing_extensions import override

from detlight.callbacks.run_meta import checkpoint_meta
from detlight.checkpoint_io import AtomicCheckpointIO, atomic_torch_save, link_or_copy
from detlight.exceptions import ConfigError
from detlight.upstream_internals import callback_state_key, save_checkpoint_via

__all__ = [
    "AtomicCheckpointIO",
    "MMCheckpoint",
    "atomic_torch_save",
    "bare_model",
    "best_hook_msgs",
    "batches_done",
    "export_mmcv_checkpoint",
    "link_or_copy",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- mmcv layout
def bare_model(pl_module: pl.LightningModule) -> nn.Module:
    """The detector without wrappers: ``pl_module.model`` for :class:`~detlight.module.DetectorModule`, else the
    module itself (what mmcv's ``save_checkpoint`` stores after unwrapping ``MMDataParallel``)."""
    model = getattr(pl_module, "model", None)
    return model if isinstance(model, nn.Module) else pl_module


def batches_done(trainer: pl.Trainer) -> int:
    """Training batches started so far: mmcv's ``runner.iter`` after an epoch, ``runner.iter + 1`` inside one."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.ready)


def _dataset_classes(trainer: pl.Trainer) -> tuple[str, ...] | None:
    sources = [getattr(trainer, "datamodule", None)]
    with contextlib.suppress(Exception):  # the loader may not be set up (e.g. outside fit)
        sources.append(getattr(trainer.train_dataloader, "dataset", None))
    for source in sources:
        classes = getattr(source, "CLASSES", None)
        if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
            return tuple(classes)
    return None


def export_mmcv_checkpoint(
    path: str,
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    save_optimizer: bool = True,
    meta: Mapping[str, Any] | None = None,
    by_epoch: bool = True,
    hook_msgs: Mapping[str, Any] | None = None,
) -> None:
    """Write an mmcv-layout checkpoint: ``{"meta", "state_dict", "optimizer"}`` (docs/mmcv-semantics.md §3.7).

    ``state_dict`` holds the bare detector's tensors on the CPU (no ``model.`` prefix). ``meta`` holds what mmcv's
    runner writes (:func:`~detlight.callbacks.run_meta.checkpoint_meta`): ``seed``, ``exp_name``, ``config``,
    ``hook_msgs``, ``epoch``, ``iter`` (mmcv's values for an epoch- or iteration-based save, see ``by_epoch``),
    ``mmcv_version`` (the installed mmcv's, else detlight's version, see :mod:`detlight.callbacks.run_meta`), ``time`` and ``CLASSES`` (when the
    datamodule or training set has them), plus ``meta``. Only plain containers, strings, numbers and tensors are
    written, so the file loads with ``torch.load(..., weights_only=True)``. Call it on global rank 0 only.
    """
    state = {k: v.detach().cpu() for k, v in bare_model(pl_module).state_dict().items()}
    meta_out = checkpoint_meta(trainer, by_epoch, dict(hook_msgs or {}), dict(meta or {}))
    classes = _dataset_classes(trainer)
    if classes is not None:
        meta_out.setdefault("CLASSES", classes)
    checkpoint: dict[str, Any] = {"meta": meta_out, "state_dict": state}
    if save_optimizer and trainer.optimizers:
        states = [move_data_to_device(opt.state_dict(), "cpu") for opt in trainer.optimizers]
        # mmcv stores a dict of optimizers under their names; Lightning's are a list, so they are keyed by index.
        checkpoint["optimizer"] = states[0] if len(states) == 1 else {str(i): s for i, s in enumerate(states)}
    atomic_torch_save(checkpoint, path)


def every_n(progress: int, n: int) -> bool:
    """mmcv ``every_n_epochs`` / ``every_n_iters``: ``(progress + 1) % n == 0``, never for ``n <= 0``."""
    return n > 0 and (progress + 1) % n == 0


# ---------------------------------------------------------------------------------------------------- the callback
class MMCheckpoint(ModelCheckpoint):
    """mmcv ``CheckpointHook`` as a Lightning ``ModelCheckpoint``: mmcv cadence and names, resumable ``.ckpt`` files.

    Saves ``epoch_{E+1}.ckpt`` after every ``interval``-th epoch (``by_epoch``) or ``iter_{I+1}.ckpt`` after every
    ``interval``-th training batch, and, with ``save_last``, after the final epoch / batch as well. ``interval=-1``
    therefore saves only the final one. When training stops anywhere else (``max_steps``, ``max_time``, early
    stopping, ``trainer.should_stop``), the state at the stop is saved too, as ``iter_{I}.ckpt`` (or
    ``epoch_{E+1}.ckpt`` when the stop falls on an epoch boundary), so the newest file is always the state training
    ended in. ``latest.ckpt`` (mmcv's name) and ``last.ckpt`` (Lightning's) link to the newest file (also to a
    ``Preemption`` checkpoint), so ``fit(ckpt_path="last")`` resumes from it (mmcv ``auto_resume``).
    ``max_keep_ckpts > 0`` deletes older files exactly as mmcv does: walking back from
    ``current - max_keep_ckpts * interval`` in steps of ``interval`` and stopping at the first missing file. With
    ``export_mmcv`` each save also writes ``epoch_{E+1}.pth`` / ``iter_{I+1}.pth`` in mmcv's layout
    (:func:`export_mmcv_checkpoint`) and a ``latest.pth`` link.

    Files go to the run directory, so a re-run never overwrites an earlier run's files: ``<log_dir>/checkpoints``
    when the Trainer has a logger (Lightning's layout, ``<save_dir>/<name>/version_N/checkpoints``), else
    ``default_root_dir`` (mmcv's flat ``work_dir``). They are ordinary files (mode ``0666`` minus the umask).

    mmcv-layout ``.pth`` files carry mmcv's ``meta`` (see :func:`export_mmcv_checkpoint`) with
    ``hook_msgs = {last_ckpt, best_score, best_ckpt}``: ``last_ckpt`` is the previous save (mmcv sets it after
    writing), ``best_score`` / ``best_ckpt`` come from an :class:`~detlight.callbacks.evaluation.Evaluation` callback
    with ``save_best``.

    Order difference: mmcv writes ``epoch_N.pth`` in ``after_train_epoch`` *before* that epoch's ``EvalHook``
    (priority 50 < 70). Lightning runs the epoch-end validation before ``on_train_epoch_end``, so here
    ``epoch_N.ckpt`` is written *after* that epoch's evaluation (and after a ``best_*`` checkpoint of the same epoch).
    The weights are the same; the ``.ckpt`` additionally carries the evaluation callback's best score, and
    ``hook_msgs.best_score`` of ``epoch_N.pth`` already includes epoch N's evaluation (mmcv's holds the best up to
    epoch N-1). Iteration checkpoints are written in ``on_train_batch_end``, before a validation triggered at that
    batch, as in mmcv.

    Args:
        interval: save period in epochs (``by_epoch``) or training batches; ``<= 0`` disables periodic saving.
        by_epoch: count ``interval`` in epochs (``EpochBasedRunner``) or in training batches.
        save_optimizer: keep optimizer/scheduler/loop state. ``False`` writes weights-only files (Lightning's
            ``save_weights_only``): loadable with ``load_from`` but not resumable with ``fit(ckpt_path=...)``.
        out_dir: directory for the files. Default: the run directory (see above); another directory gets the base
            name of the run directory appended, as mmcv appends ``basename(work_dir)``.
        max_keep_ckpts: number of periodic checkpoints to keep (mmcv's deletion rule); ``<= 0`` keeps all.
        save_last: also save after the final epoch / batch (mmcv's meaning), and the state at an early stop.
        export_mmcv: also write mmcv-layout ``.pth`` files and ``latest.pth``.
        create_symlink: maintain ``latest.ckpt`` / ``last.ckpt`` (and ``latest.pth``): a symlink, or a copy where
            symlinks fail.
        meta: extra entries for the ``meta`` dict of exported ``.pth`` files (mmcv ``checkpoint_config.meta``).
        atomic_io: replace the strategy's default ``TorchCheckpointIO`` with :class:`AtomicCheckpointIO`.

    Example:
        >>> cb = MMCheckpoint(interval=1, max_keep_ckpts=3, export_mmcv=True)
        >>> cb.filename_for(trainer_epoch=0)
        'epoch_1'
    """

    CHECKPOINT_NAME_LAST = "latest"
    #: the mmcv stages this callback acts in (for the preamble's hook table; mmcv's CheckpointHook's)
    MMCV_STAGES = ("before_run", "after_train_iter", "after_train_epoch", "after_run")

    def __init__(
        self,
        interval: int = -1,
        by_epoch: bool = True,
        save_optimizer: bool = True,
        out_dir: str | None = None,
        max_keep_ckpts: int = -1,
        save_last: bool = True,
        export_mmcv: bool = False,
        create_symlink: bool = True,
        meta: dict[str, Any] | None = None,
        atomic_io: bool = True,
    ) -> None:
        if not isinstance(interval, int) or isinstance(interval, bool):
            raise ConfigError(f"`interval` must be an int (-1 = only the last), got {interval!r}")
        if not isinstance(max_keep_ckpts, int) or isinstance(max_keep_ckpts, bool):
            raise ConfigError(f"`max_keep_ckpts` must be an int (-1 = keep all), got {max_keep_ckpts!r}")
        super().__init__(
            dirpath=None, monitor=None, save_last=False, save_top_k=-1, save_weights_only=not save_optimizer,
            every_n_train_steps=0, every_n_epochs=0, enable_version_counter=False,
        )
        self.interval = interval
        self.by_epoch = by_epoch
        self.save_optimizer = save_optimizer
        self.out_dir = out_dir
        self.max_keep_ckpts = max_keep_ckpts
        self.save_last_mm = save_last
        self.export_mmcv = export_mmcv
        self.create_symlink = create_symlink
        self.meta: dict[str, Any] = dict(meta or {})
        self.atomic_io = atomic_io
        #: mmcv ``runner.meta['hook_msgs']['last_ckpt']``: the previous save, recorded in the next ``.pth``
        self.last_ckpt: str | None = None
        #: training batches done at the last save (``-1``: none yet in this run)
        self._saved_at = -1

    # ------------------------------------------------------------------ identity / paths
    @property
    @override
    def state_key(self) -> str:
        return callback_state_key(self, interval=self.interval, by_epoch=self.by_epoch, out_dir=self.out_dir)

    def filename_for(self, trainer_epoch: int | None = None, batch_idx: int | None = None) -> str:
        """mmcv's 1-based name (no extension) for the 0-based epoch or the 0-based global batch index."""
        if self.by_epoch:
            if trainer_epoch is None:
                raise ValueError("by_epoch=True needs `trainer_epoch`")
            return f"epoch_{trainer_epoch + 1}"
        if batch_idx is None:
            raise ValueError("by_epoch=False needs `batch_idx`")
        return f"iter_{batch_idx + 1}"

    def resolve_dir(self, trainer: pl.Trainer) -> str:
        """The run directory (``<log_dir>/checkpoints`` with a logger, else ``default_root_dir``); another ``out_dir``
        gets the run directory's base name appended (mmcv ``before_run``)."""
        if trainer.loggers:
            run = os.path.join(os.path.abspath(str(trainer.log_dir or trainer.default_root_dir)), "checkpoints")
            name = os.path.basename(os.path.dirname(run))
        else:
            run = os.path.abspath(str(trainer.default_root_dir))
            name = os.path.basename(run)
        if self.out_dir is None:
            return run
        out_dir = os.path.abspath(self.out_dir)
        return out_dir if out_dir in (run, os.path.dirname(run)) else os.path.join(out_dir, name)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Not super().setup(): it warns whenever the directory is not empty, which a work_dir never is.
        self.dirpath = trainer.strategy.broadcast(self.resolve_dir(trainer))
        self._fs = get_filesystem(self.dirpath)
        if self.atomic_io and type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    @override
    def _find_last_checkpoints(self, trainer: pl.Trainer) -> set[str]:
        latest = os.path.join(str(self.dirpath or self.resolve_dir(trainer)), "latest.ckpt")
        return {os.path.realpath(latest)} if os.path.exists(latest) else set()

    # ------------------------------------------------------------------ triggers
    def _skip(self, trainer: pl.Trainer) -> bool:
        fast_dev_run = getattr(trainer, "fast_dev_run", False)  # set in Trainer.__init__, not declared on the class
        return bool(fast_dev_run) or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.by_epoch or self._skip(trainer):
            return
        it = trainer.fit_loop.epoch_loop.total_batch_idx
        if every_n(it, self.interval) or (self.save_last_mm and _is_last_iter(trainer, batch_idx)):
            self._save(trainer, pl_module, it + 1)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.by_epoch or self._skip(trainer):
            return
        epoch = trainer.current_epoch
        is_last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch + 1 == trainer.max_epochs
        if every_n(epoch, self.interval) or (self.save_last_mm and is_last):
            self._save(trainer, pl_module, epoch + 1)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Nothing: mmcv's checkpoint cadence does not depend on validation."""

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_at = -1

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the state training stopped in, unless the last save already holds it (see the class docstring)."""
        done = batches_done(trainer)
        if not self.save_last_mm or self._skip(trainer) or done == 0 or done == self._saved_at:
            return
        loop = trainer.fit_loop.epoch_loop
        if self.by_epoch and loop.batch_progress.is_last_batch:
            self._save(trainer, pl_module, trainer.current_epoch + 1)
        else:
            self._save(trainer, pl_module, done, stem_prefix="iter")

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """After a preemption checkpoint (``Preemption`` wrote one for this exception), point the links at it."""
        if not (trainer.is_global_zero and self.create_symlink and self.dirpath):
            return
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            saved = getattr(callback, "saved_path", None)
            if isinstance(saved, str) and saved.endswith(".ckpt") and os.path.isfile(saved):
                for name in ("latest.ckpt", "last.ckpt"):
                    link_or_copy(saved, os.path.join(str(self.dirpath), name))
                self.last_model_path = saved
                return

    # ------------------------------------------------------------------ saving
    def _save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, number: int,
              stem_prefix: str | None = None) -> None:
        assert self.dirpath is not None  # set in setup
        stem = f"{stem_prefix or ('epoch' if self.by_epoch else 'iter')}_{number}"
        ckpt_path = os.path.join(str(self.dirpath), f"{stem}.ckpt")
        log.info("Saving checkpoint at %d %s", number, "epochs" if self.by_epoch else "iterations")
        save_checkpoint_via(self, trainer, ckpt_path)  # all ranks: the strategy decides who writes
        self.last_model_path = ckpt_path
        self._saved_at = batches_done(trainer)
        if not trainer.is_global_zero:
            return
        if self.create_symlink:
            link_or_copy(ckpt_path, os.path.join(str(self.dirpath), "latest.ckpt"))
            link_or_copy(ckpt_path, os.path.join(str(self.dirpath), "last.ckpt"))
        if self.export_mmcv:
            pth_path = os.path.join(str(self.dirpath), f"{stem}.pth")
            hook_msgs = {**best_hook_msgs(trainer), **({"last_ckpt": self.last_ckpt} if self.last_ckpt else {})}
            export_mmcv_checkpoint(pth_path, trainer, pl_module, save_optimizer=self.save_optimizer, meta=self.meta,
                                   by_epoch=self.by_epoch, hook_msgs=hook_msgs)
            if self.create_symlink:
                link_or_copy(pth_path, os.path.join(str(self.dirpath), "latest.pth"))
            self.last_ckpt = pth_path
        else:
            self.last_ckpt = ckpt_path
        self._remove_old(number)

    def _remove_old(self, current: int) -> None:
        if self.max_keep_ckpts <= 0:
            return
        prefix = "epoch" if self.by_epoch else "iter"
        # mmcv's range: with interval=-1 it counts upwards from a value > 0 to 0 and so deletes nothing.
        steps = range(current - self.max_keep_ckpts * self.interval, 0, -self.interval)
        for ext in (".ckpt", ".pth"):
            for step in steps:
                path = os.path.join(str(self.dirpath), f"{prefix}_{step}{ext}")
                if not os.path.isfile(path):
                    break
                os.remove(path)

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["last_ckpt"] = self.last_ckpt
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning's, without its "The dirpath has changed" warning: a resumed run writes into its own run
        directory (``version_N``) by design, so the folder differs on every resume."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
            super().load_state_dict(state_dict)
        self.last_ckpt = state_dict.get("last_ckpt", self.last_ckpt)


def _is_last_iter(trainer: pl.Trainer, batch_idx: int) -> bool:
    """mmcv ``is_last_iter``: the final batch of the run (``max_steps`` counts optimizer steps, as in Lightning)."""
    if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    max_epochs = trainer.max_epochs
    return (
        max_epochs is not None and max_epochs > 0 and trainer.current_epoch + 1 == max_epochs
        and batch_idx + 1 == trainer.num_training_batches
    )


def best_hook_msgs(trainer: pl.Trainer) -> dict[str, Any]:
    """``{best_score, best_ckpt}`` of the first callback that keeps a best checkpoint (mmcv's ``hook_msgs``)."""
    for callback in getattr(trainer, "callbacks", []):
        score, path = getattr(callback, "best_score", None), getattr(callback, "best_ckpt_path", None)
        if isinstance(score, (int, float)) and isinstance(path, str):
            return {"best_score": float(score), "best_ckpt": path[: -len(".ckpt")] + ".pth"
                    if path.endswith(".ckpt") and getattr(callback, "export_mmcv", False) else path}
    return {}
