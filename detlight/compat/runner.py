"""The runner that mmcv-style hooks see: a read-mostly view of Lightning's state with mmcv's names and counters.

Replaces: the ``runner`` argument of ``mmcv.runner.Hook`` methods (``BaseRunner`` / ``EpochBasedRunner`` /
``IterBasedRunner`` state, docs/mmcv-semantics.md §3.1-3.3). :class:`detlight.callbacks.mmcv_hooks.MMCVHooks` owns one view
and moves its counters at the points where mmcv's runners move theirs, so a hook reads the values mmcv would have
shown it:

- ``epoch``: finished train epochs. It grows right after ``after_train_epoch``, so a val phase and ``after_run`` see
  the number of finished epochs (Lightning's ``current_epoch`` is one less there). Under an iteration-based run it is
  the number of times the train loader was exhausted *before* the current batch was fetched (mmcv's ``IterLoader``).
- ``iter``: finished train batches across epochs, incremented after the ``after_train_iter`` dispatch (not
  ``global_step``, which counts optimizer steps).
- ``inner_iter``: the batch index in the current phase; it is not reset at an epoch start (mmcv keeps the previous
  value until the first batch), and is reset per workflow phase under an iteration-based run.
- ``max_iters``: ``max_epochs x num_training_batches`` (epoch-based) or ``max_steps`` (iteration-based); never
  ``trainer.estimated_stepping_batches`` (its early data set-up breaks stateful-loader resume, Lightning #20550).

What else a hook gets, as mmcv gave it: ``model`` is a :class:`ModelWrapper` (mmcv always wrapped the model in
``MMDataParallel`` / ``MMDistributedDataParallel``), so ``runner.model.module`` is the bare detector and mmcv's
``is_module_wrapper`` says True; ``save_checkpoint`` writes an mmcv-layout ``.pth`` mmcv's ``load_checkpoint`` reads
*and* a Lightning ``.ckpt`` beside it that ``fit(ckpt_path=...)`` resumes; ``meta['hook_msgs']`` holds
``last_ckpt`` / ``best_score`` / ``best_ckpt`` (from detlight's checkpoint and evaluation callbacks, or from hooks);
attribute writes through ``data_loader`` reach the real loader, or fail with a :class:`~detlight.exceptions.HookError`
that says what to do instead. ``log_buffer`` is the module's :class:`~detlight.logbuffer.LogBuffer`: detlight's logger
callbacks average into ``output`` at their interval and the last one clears it, as mmcv's loggers did (the last
``LoggerHook`` has ``reset_flag``), so a hook sees ``output`` as it would have after mmcv's loggers, and a
``LoggerHook`` subclass given as a user hook averages and reads it itself.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from torch import nn

from detlight.exceptions import HookError
from detlight.upstream_internals import dump_trainer_checkpoint

if TYPE_CHECKING:
    from detlight.logbuffer import LogBuffer

__all__ = ["ModelWrapper", "RunnerView", "plain_meta"]

log = logging.getLogger("detlight")


class _LoaderView:
    """A data loader whose ``len`` is the number of batches Lightning will actually run (limits included).

    mmcv hooks call ``len(runner.data_loader)`` (``end_of_epoch``, warmup by epoch); every other attribute (``sampler``,
    ``dataset``, ``batch_size``) is the wrapped loader's.
    """

    def __init__(self, loader: Any, num_batches: int | float) -> None:
        object.__setattr__(self, "_loader", loader)
        object.__setattr__(self, "_num_batches", num_batches)

    def __len__(self) -> int:
        if self._num_batches == float("inf"):
            return len(self._loader)
        return int(self._num_batches)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __setattr__(self, name: str, value: Any) -> None:
        """Write through to the real loader (YOLOXModeSwitchHook resets ``_iterator`` this way)."""
        try:
            setattr(self._loader, name, value)
        except (ValueError, AttributeError) as err:
            raise HookError(
                f"A hook set runner.data_loader.{name}, which the {type(self._loader).__name__} refused ({err}). A "
                "DataLoader's batch_size, sampler and workers are fixed once it is built: change them in the "
                "datamodule, or set trainer.reload_dataloaders_every_n_epochs and build the new loader in "
                "train_dataloader(); a change to runner.data_loader.dataset itself (e.g. "
                "dataset.update_skip_type_keys) reaches the loader as is") from err


class ModelWrapper(nn.Module):
    """``runner.model``: the detector behind ``.module``, as mmcv's ``MMDataParallel`` held it.

    Attributes not found on the wrapper are read from the detector, so hooks that skip the ``is_module_wrapper``
    check work too. It holds no state of its own (checkpoints store the detector, without ``module.``).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)


def _register_wrapper_with_mmcv() -> None:
    """Let a real mmcv's ``is_module_wrapper`` recognise :class:`ModelWrapper` (once; nothing without mmcv)."""
    parallel = sys.modules.get("mmcv.parallel")
    registry = getattr(parallel, "MODULE_WRAPPERS", None)
    if registry is None or getattr(parallel, "__detlight_shim__", False):
        return
    if ModelWrapper not in registry.module_dict.values():
        registry.register_module(name="DetLightModelWrapper", module=ModelWrapper)


def plain_meta(value: Any, where: str = "runner.meta") -> Any:
    """Copy ``value`` as checkpoint-safe plain types (tensors and numpy scalars become python numbers / lists).

    Raises:
        HookError: ``value`` holds an object that cannot be saved with ``weights_only=True`` (the key is named).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {k: plain_meta(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_meta(v, f"{where}[{i}]") for i, v in enumerate(value))
    tolist = getattr(value, "tolist", None)  # torch.Tensor, numpy arrays and scalars
    if callable(tolist):
        return tolist()
    raise HookError(f"`{where}` holds a {type(value).__name__}; runner.meta is saved in checkpoints (loaded with "
                    "weights_only=True) and may only hold dicts, lists, str, numbers, bools, None and tensors")


def _first(loaders: Any) -> Any:
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    return loaders


class RunnerView:
    """Stands in for an mmcv runner inside mmcv-style hooks (see the module docstring for the counters).

    Replaces: ``mmcv.runner.EpochBasedRunner`` / ``IterBasedRunner`` as seen from a hook. Everything a hook reads is
    taken from the Trainer and the LightningModule at call time: ``model`` is a :class:`ModelWrapper` around the bare
    detector (``pl_module.model``), ``optimizer`` is ``trainer.optimizers[0]``, ``log_buffer`` / ``outputs`` are the
    module's (its validation buffer and outputs while ``mode == 'val'``, when it has them), ``work_dir`` is
    ``trainer.log_dir`` or ``default_root_dir``. ``meta`` is a plain dict that
    :class:`~detlight.callbacks.mmcv_hooks.MMCVHooks` stores in Lightning checkpoints. The private spellings mmcv's
    own ``Hook`` helpers use (``_max_epochs``, ``_max_iters``, ``_epoch``, ...) are attributes of the view too.

    Args:
        meta: initial ``runner.meta``.
        timestamp: ``runner.timestamp`` (mmcv names ``{timestamp}.log`` after it).
    """

    def __init__(self, meta: dict[str, Any] | None = None, timestamp: str = "") -> None:
        self.trainer: pl.Trainer | None = None
        self.pl_module: pl.LightningModule | None = None
        self.meta: dict[str, Any] = dict(meta) if meta else {}
        self.meta.setdefault("hook_msgs", {})
        self._wrapper: ModelWrapper | None = None
        #: set by MMCVHooks while it dispatches ``after_train_epoch`` from the epoch's last batch
        self.closing_epoch = False
        #: Lightning checkpoints to write at the end of the epoch: (path, weights_only, latest link or None)
        self.pending_ckpts: list[tuple[str, bool, str | None]] = []
        self.timestamp = timestamp
        self.mode: str | None = None
        self.by_epoch = True
        self.data_batch: Any = None
        self._epoch = 0
        self._iter = 0
        self._inner_iter = 0
        self._max_epochs: int | None = None
        self._max_iters: int | None = None
        self._hooks: list[Any] = []

    def bind(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Attach the view to the running Trainer and module."""
        self.trainer, self.pl_module = trainer, pl_module

    def _require_trainer(self) -> pl.Trainer:
        if self.trainer is None:
            raise HookError("RunnerView is not bound to a Trainer yet: runner attributes exist only during fit")
        return self.trainer

    # ------------------------------------------------------------------ counters
    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def iter(self) -> int:
        return self._iter

    @property
    def inner_iter(self) -> int:
        return self._inner_iter

    @property
    def max_epochs(self) -> int | None:
        return self._max_epochs

    @property
    def max_iters(self) -> int | None:
        return self._max_iters

    @property
    def hooks(self) -> list[Any]:
        """The registered hooks in call order (mmcv's ``runner.hooks``; LoggerHook's ``before_run`` reads it)."""
        return self._hooks

    # ------------------------------------------------------------------ objects
    @property
    def model(self) -> ModelWrapper | None:
        """The detector wrapped as mmcv wrapped it: ``runner.model.module`` is ``pl_module.model``."""
        module = self.pl_module
        if module is None:
            return None
        bare = getattr(module, "model", module)
        if self._wrapper is None or self._wrapper.module is not bare:
            _register_wrapper_with_mmcv()
            self._wrapper = ModelWrapper(bare)
        return self._wrapper

    @property
    def model_name(self) -> str:
        model = self.model
        return type(model.module).__name__ if model is not None else ""

    @property
    def optimizer(self) -> Any:
        trainer = self._require_trainer()
        return trainer.optimizers[0] if trainer.optimizers else None

    @property
    def log_buffer(self) -> LogBuffer | None:
        module = self.pl_module
        if module is None:
            return None
        if self.mode == "val" and getattr(module, "val_log_buffer", None) is not None:
            return module.val_log_buffer  # type: ignore[return-value]
        return getattr(module, "log_buffer", None)

    @property
    def outputs(self) -> dict[str, Any] | None:
        module = self.pl_module
        if module is None:
            return None
        if self.mode == "val" and hasattr(module, "last_val_outputs"):
            return module.last_val_outputs  # type: ignore[return-value]
        return getattr(module, "last_outputs", None)

    @property
    def work_dir(self) -> str:
        trainer = self._require_trainer()
        return os.fspath(trainer.log_dir or trainer.default_root_dir)

    @property
    def rank(self) -> int:
        return self._require_trainer().global_rank

    @property
    def world_size(self) -> int:
        return self._require_trainer().world_size

    @property
    def logger(self) -> logging.Logger:
        return log

    @property
    def data_loader(self) -> Any:
        """The loader of the current phase, with ``len`` = batches Lightning runs in it (``None`` before a phase)."""
        trainer = self._require_trainer()
        if self.mode == "val":
            loader = _first(trainer.val_dataloaders)
            counts = trainer.num_val_batches
            num = counts[0] if counts else float("inf")
        else:
            loader = _first(trainer.train_dataloader)
            num = trainer.num_training_batches
        return None if loader is None else _LoaderView(loader, num)

    @data_loader.setter
    def data_loader(self, value: Any) -> None:
        raise HookError("A hook assigned runner.data_loader; Lightning owns the loaders. Change the loader's dataset "
                        "in place (runner.data_loader.dataset....), or set trainer.reload_dataloaders_every_n_epochs "
                        "and return the new loader from the datamodule's train_dataloader()")

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, out_dir: str, filename_tmpl: str | None = None, save_optimizer: bool = True,
                        meta: dict[str, Any] | None = None, create_symlink: bool = True) -> str:
        """mmcv ``runner.save_checkpoint``: ``{out_dir}/epoch_{epoch+1}.pth`` (``iter_{iter+1}.pth``) plus a ``.ckpt``.

        The ``.pth`` has mmcv's layout (``meta`` with ``epoch``, ``iter``, ``hook_msgs``; ``state_dict`` of the bare
        detector; ``optimizer``) and loads with mmcv's ``load_checkpoint``; the ``.ckpt`` beside it is a full
        Lightning checkpoint (loops, callbacks, this view's ``meta``) that ``fit(ckpt_path=...)`` resumes. With
        ``create_symlink`` ``latest.pth`` / ``latest.ckpt`` point at them. Call it on rank 0 (mmcv's hooks do, through
        ``@master_only``); it runs no collective.

        Returns:
            The ``.pth`` path.

        Raises:
            HookError: ``meta`` is not a dict, or the view is not bound to a running Trainer.
        """
        from detlight.callbacks.checkpoint import export_mmcv_checkpoint, link_or_copy

        trainer, module = self._require_trainer(), self.pl_module
        if meta is not None and not isinstance(meta, dict):
            raise HookError(f"runner.save_checkpoint: meta should be a dict or None, but got {type(meta).__name__}")
        assert module is not None
        merged = dict(meta or {})
        merged.update(self.meta)
        number = self.epoch + 1 if self.by_epoch else self.iter + 1
        template = filename_tmpl or ("epoch_{}.pth" if self.by_epoch else "iter_{}.pth")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, template.format(number))
        export_mmcv_checkpoint(path, trainer, module, save_optimizer=save_optimizer,
                               meta=plain_meta(merged, "runner.save_checkpoint meta"))
        ckpt = os.path.splitext(path)[0] + ".ckpt"
        latest = os.path.join(out_dir, "latest.ckpt") if create_symlink else None
        if create_symlink:
            link_or_copy(path, os.path.join(out_dir, "latest.pth"))
        if self.closing_epoch:
            # Written from on_train_epoch_end, so it resumes at the next epoch as MMCheckpoint's epoch files do.
            self.pending_ckpts.append((ckpt, not save_optimizer, latest))
        else:
            self.write_lightning_checkpoint(ckpt, not save_optimizer, latest)
        return path

    def write_lightning_checkpoint(self, path: str, weights_only: bool, latest: str | None) -> None:
        """Write the Trainer's checkpoint to ``path`` on this rank (no collective), and point ``latest`` at it."""
        from detlight.callbacks.checkpoint import atomic_torch_save, link_or_copy

        trainer = self._require_trainer()
        # Lightning's own checkpoint content, without trainer.save_checkpoint's barrier (hooks save on rank 0 only).
        atomic_torch_save(dump_trainer_checkpoint(trainer, weights_only=weights_only), path)
        if latest is not None:
            link_or_copy(path, latest)

    # ------------------------------------------------------------------ optimizer state
    def current_lr(self) -> list[float]:
        """Learning rate of each param group (mmcv ``runner.current_lr()``)."""
        optimizer = self.optimizer
        if optimizer is None:
            raise RuntimeError("lr is not applicable because optimizer does not exist.")
        return [group["lr"] for group in optimizer.param_groups]

    def current_momentum(self) -> list[float]:
        """Momentum (SGD) or ``betas[0]`` (Adam family) of each param group, 0 when neither exists."""
        optimizer = self.optimizer
        if optimizer is None:
            raise RuntimeError("momentum is not applicable because optimizer does not exist.")
        momentums = []
        for group in optimizer.param_groups:
            if "momentum" in group:
                momentums.append(group["momentum"])
            elif "betas" in group:
                momentums.append(group["betas"][0])
            else:
                momentums.append(0)
        return momentums

    def __repr__(self) -> str:
        return (f"RunnerView(mode={self.mode!r}, epoch={self._epoch}, iter={self._iter}, "
                f"inner_iter={self._inner_iter}, max_epochs={self._max_epochs}, max_iters={self._max_iters})")
