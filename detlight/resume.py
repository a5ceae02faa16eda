"""Iteration-exact resume: a stateful train loader, RNG states in the checkpoint, preemption and ``auto_resume``.

Replaces: mmcv ``runner.resume`` / ``auto_resume`` (docs/mmcv-semantics.md §3.7) on top of Lightning's own resume.

Lightning restores weights, optimizer, loop counters and callback state (docs/lightning-notes.md A7), but the position inside
the data is only restored for a train loader that is ``_Stateful`` (has ``state_dict``/``load_state_dict``), and the
torch / numpy / python RNG states are not saved at all. :class:`StatefulDataLoader` closes both gaps:

* its ``state_dict()`` (saved by Lightning under ``loops.fit_loop.state_dict.combined_loader``) holds the number of
  batches yielded in the current epoch and the RNG states at save time, as plain lists / tensors, so the checkpoint
  stays loadable with ``weights_only=True``;
* after ``load_state_dict`` the next epoch iterator starts where the saved one stopped (``DetSampler.skip``, or by
  drawing and dropping batches for another sampler) and puts the RNG states back right before its first batch.

Lightning only loads the loader state if nothing reads ``trainer.estimated_stepping_batches`` before the checkpoint
is restored (Lightning #20550); detlight's callbacks compute the run length from ``num_training_batches`` instead.
Nor does it load it from a checkpoint written after an epoch's training finished (``on_train_epoch_end`` saves, a
preemption at an epoch's last batch): its fit loop then does not count as restarting. That state holds the RNG
states the next epoch starts from, so :func:`load_skipped_loader_state` hands it to the loader instead; call it
from ``train_dataloader`` (:class:`~detlight.data.datamodule.DetDataModule` does).

:class:`~detlight.data.datamodule.DetDataModule` gives its loaders a private ``torch.Generator``, so creating an
iterator (a validation pass, a new epoch) draws nothing from the global RNG and cannot shift the training stream.

Limits: with ``workers_per_gpu > 0`` the workers re-seed from ``worker_init_fn`` on the resumed run, so random
transforms in workers are not replayed bit for bit; under DDP the checkpoint carries rank 0's RNG state only; code
that draws from the global RNG between a checkpoint and the next batch (a model's random eval-time ops) is not
replayed. A checkpoint written at an epoch's last batch (``on_train_batch_end``) resumes in the next epoch, and
Lightning then skips the rest of the finished epoch (its validation, ``on_train_epoch_end``) and the next epoch's
``on_train_epoch_start``; detlight's lr/momentum updaters apply an epoch's values at its first batch as well.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import BatchSampler, DataLoader
from typing_extensions import override

from detlight.exceptions import CheckpointError, ConfigError

__all__ = [
    "Preemption",
    "StatefulDataLoader",
    "find_last_checkpoint",
    "get_rng_state",
    "load_skipped_loader_state",
    "resolve_ckpt_path",
    "set_rng_state",
]

log = logging.getLogger(__name__)

#: ``ckpt_path`` values that mean "the newest checkpoint under the run's directories, or none" (mmcv auto_resume).
AUTO_RESUME_VALUES = ("last", "auto")


# ---------------------------------------------------------------------------------------------------- RNG states
def get_rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states as tensors, lists and numbers (``weights_only``-loadable)."""
    np_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`; a key that is absent leaves that generator alone."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        s = state["numpy"]
        keys = torch.as_tensor(s["keys"]).numpy().astype(np.uint32)
        np.random.set_state((s["name"], keys, int(s["pos"]), int(s["has_gauss"]), float(s["cached_gaussian"])))
    if "python" in state:
        s = state["python"]
        random.setstate((int(s["version"]), tuple(int(v) for v in s["internal"]), s["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        saved = list(state["cuda"])
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)


# ---------------------------------------------------------------------------------------------------- the loader
class StatefulDataLoader(DataLoader):
    """A ``DataLoader`` whose position in the epoch and RNG states are saved in (and restored from) checkpoints.

    Replaces: mmcv's resume of ``runner.iter`` inside an epoch, which mmcv itself never did (it restarted the epoch's
    data). Use it as the train loader: Lightning sees ``state_dict``/``load_state_dict`` and stores the state at every
    checkpoint. Everything else behaves as a plain ``DataLoader``; ``len()`` is always the full epoch.

    The state is ``{"yielded", "batch_size", "num_batches", "rng"}``: batches handed out by the current epoch
    iterator, the batch size and epoch length it was saved with (a resume with other data settings is refused), and
    :func:`get_rng_state` at save time. A state saved at the end of an epoch (``yielded == num_batches``) starts the
    next epoch from its beginning.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._yielded = 0
        self._pending: dict[str, Any] | None = None

    @override
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: nothing runs until the first batch is requested, so an iterator that Lightning creates and
        # then drops (it does so on resume) neither consumes the restored state nor draws from the RNG.
        return self._generate()

    def _generate(self) -> Iterator[Any]:
        pending, self._pending = self._pending, None
        skip = int(pending["yielded"]) if pending is not None else 0
        at_boundary = pending is not None and skip >= len(self)
        if at_boundary:
            skip = 0
            set_rng_state(pending["rng"])  # type: ignore[index]
        fast_skip = skip and self._sampler_can_skip()
        if fast_skip:
            self.sampler.skip = skip * int(self.batch_size or 1)  # type: ignore[attr-defined]
        self._yielded = 0
        base = super().__iter__()  # draws the workers' base seed from torch's RNG, as a fresh epoch does
        if skip and not fast_skip:
            for _ in range(skip):
                next(base)
        self._yielded = skip
        if pending is not None and not at_boundary:
            set_rng_state(pending["rng"])
        for batch in base:
            self._yielded += 1
            yield batch

    def _sampler_can_skip(self) -> bool:
        return (hasattr(self.sampler, "skip") and type(self.batch_sampler) is BatchSampler
                and not self.batch_sampler.drop_last)

    def state_dict(self) -> dict[str, Any]:
        """Position in the current epoch and the RNG states (plain containers and tensors)."""
        return {"yielded": self._yielded, "batch_size": self.batch_size, "num_batches": len(self),
                "rng": get_rng_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the next epoch iterator from ``state`` (see the class docstring).

        Raises:
            ValueError: the state lacks ``yielded`` or was saved with another batch size or epoch length.
        """
        if "yielded" not in state:
            raise CheckpointError(f"The train loader state in the checkpoint lacks `yielded`; got keys "
                                  f"{sorted(state)}.")
        for key, here in (("batch_size", self.batch_size), ("num_batches", len(self))):
            if key in state and state[key] != here:
                raise CheckpointError(
                    f"Cannot resume mid-epoch: the checkpoint's train loader had {key}={state[key]}, this run has "
                    f"{key}={here}. Resume with the same data settings (samples_per_gpu, dataset, world size)."
                )
        self._pending = dict(state)
        self._yielded = int(state["yielded"])


def load_skipped_loader_state(trainer: pl.Trainer | None, loader: DataLoader) -> bool:
    """Give ``loader`` the checkpoint's train loader state where Lightning will not; call from ``train_dataloader``.

    Lightning loads ``loops.fit_loop.state_dict.combined_loader`` only while its fit loop is restarting, and a
    checkpoint written once an epoch's training had finished (processed) does not restart it. The state saved there
    says "epoch complete" and carries the RNG states the next epoch must start from; without it the resumed run
    draws that epoch's augmentation and dropout from the freshly seeded RNG. The state is used once.

    Returns:
        Whether a state was loaded.
    """
    fit_loop = getattr(trainer, "fit_loop", None)
    states = getattr(fit_loop, "_combined_loader_states_to_load", None)
    if not isinstance(loader, StatefulDataLoader) or fit_loop is None or fit_loop.restarting:
        return False  # a restarting fit loop loads the state itself
    if not isinstance(states, list) or len(states) != 1:
        return False  # nothing pending, or states of several loaders (which one is whose is unknown)
    loader.load_state_dict(states[0])
    fit_loop._combined_loader_states_to_load = []  # a dataloader reload later in the run must not load it again
    return True


# ---------------------------------------------------------------------------------------------------- auto resume
def find_last_checkpoint(dirs: Sequence[str | os.PathLike[str]]) -> str | None:
    """The most recently written ``*.ckpt`` file under ``dirs`` (searched recursively), or ``None``.

    mmcv's ``find_latest_checkpoint(work_dir)`` looked for ``latest.pth``; Lightning run directories are versioned
    (``version_N/checkpoints``), so the newest file of any earlier run is taken. Hidden files (the temporary files of
    an atomic save) are ignored and links are followed.
    """
    best: tuple[int, str] | None = None
    for root in dirs:
        root_path = Path(root)
        if not root_path.is_dir():
            continue
        for path in root_path.rglob("*.ckpt"):
            if path.name.startswith(".") or not path.is_file():
                continue
            real = os.path.realpath(path)
            stamp = os.stat(real).st_mtime_ns
            if best is None or stamp > best[0]:
                best = (stamp, real)
    return best[1] if best else None


def resolve_ckpt_path(ckpt_path: str | None, trainer: pl.Trainer) -> str | None:
    """``ckpt_path`` for ``fit``: ``"last"``/``"auto"`` become the newest checkpoint under the run's directories.

    The directories are ``default_root_dir``, the logger's ``save_dir`` and the ``dirpath`` of checkpoint
    callbacks. When none holds a checkpoint the run starts from scratch (``None``), as mmcv's ``auto_resume`` does.
    Any other value is returned unchanged.

    Raises:
        FileNotFoundError: ``ckpt_path`` is a path that does not exist.
    """
    if ckpt_path is None or ckpt_path in ("best", "hpc", "registry"):
        return ckpt_path
    if ckpt_path not in AUTO_RESUME_VALUES:
        if "://" not in ckpt_path and not os.path.isfile(ckpt_path):
            raise CheckpointError(f"Checkpoint to resume from not found: ckpt_path={ckpt_path}")
        return ckpt_path
    dirs: list[str] = [str(trainer.default_root_dir)]
    for logger in trainer.loggers:
        save_dir = getattr(logger, "save_dir", None)
        if save_dir:
            dirs.append(str(save_dir))
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        dirpath = getattr(callback, "dirpath", None)
        if isinstance(dirpath, (str, os.PathLike)):
            dirs.append(str(dirpath))
    found = find_last_checkpoint(dirs)
    if found is None:
        log.info("ckpt_path=%s: no checkpoint under %s, starting from scratch", ckpt_path, sorted(set(dirs)))
    else:
        log.info("Resuming from %s", found)
    return found


# ---------------------------------------------------------------------------------------------------- preemption
class Preemption(Callback):
    """On SIGTERM (and SLURM's warning signal) finish the current batch, write a checkpoint and exit with status 0.

    Replaces: nothing in mmcv (a killed mmcv job lost everything since its last ``CheckpointHook`` save).

    Lightning already turns SIGTERM into a flag that is checked after every training batch and then raises
    ``SIGTERMException`` (a ``SystemExit``) at that batch boundary; this callback writes ``<dirpath>/<filename>.ckpt``
    from ``on_exception`` for that exception only, so the state is consistent and a resume continues exactly.
    ``signals`` (default ``SIGUSR1``, what ``sbatch --signal=USR1@90`` sends before a time limit) are routed to the
    same flag, unless Lightning's own SLURM auto-requeue already handles them. Ordinary exceptions write nothing
    (their loader state would count the failed batch as done).

    Args:
        dirpath: Where to write. Default: the first checkpoint callback's directory, else ``default_root_dir``.
        filename: File name without the ``.ckpt`` extension.
        signals: Extra signal names treated like SIGTERM.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "preempted",
                 signals: Sequence[str] = ("SIGUSR1",)) -> None:
        if not filename:
            raise ConfigError("Preemption `filename` must not be empty")
        unknown = [name for name in signals if not isinstance(getattr(signal, name, None), signal.Signals)]
        if unknown:
            raise ConfigError(f"Unknown signal name(s) {unknown} in Preemption `signals`; use names like 'SIGUSR1'")
        self.dirpath = dirpath
        self.filename = filename
        self.signals = tuple(signals)
        self.saved_path: str | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def ckpt_path(self, trainer: pl.Trainer) -> str:
        """Path of the preemption checkpoint for ``trainer``."""
        directory = self.dirpath
        if directory is None:
            callback = trainer.checkpoint_callback
            directory = getattr(callback, "dirpath", None) or str(trainer.default_root_dir)
        return os.path.join(str(directory), f"{self.filename}.ckpt")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if sys.platform == "win32" or not _in_main_thread():
            return
        owned = _lightning_owns_requeue_signal(trainer)
        for name in self.signals:
            signum = getattr(signal, name)
            if signum in owned:
                continue
            self._previous[signum] = signal.signal(signum, lambda *_: _raise_flag(trainer))

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        path = self.ckpt_path(trainer)
        trainer.save_checkpoint(path)
        self.saved_path = path
        if trainer.is_global_zero:
            print(f"detlight: preempted at epoch {trainer.current_epoch}, iteration "
                  f"{trainer.fit_loop.epoch_loop.total_batch_idx + 1}; checkpoint written to {path}. Resume with "
                  "`--ckpt_path last` (or the path).", file=sys.stderr, flush=True)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def _raise_flag(trainer: pl.Trainer) -> None:
    log.info("Preemption signal received; stopping after the current batch")
    trainer._signal_connector.received_sigterm = True


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _lightning_owns_requeue_signal(trainer: pl.Trainer) -> set[signal.Signals]:
    from lightning.fabric.plugins.environments import SLURMEnvironment

    env = getattr(trainer.strategy, "cluster_environment", None)
    if isinstance(env, SLURMEnvironment) and env.auto_requeue:
        return {env.requeue_signal} if env.requeue_signal is not None else set()
    return set()
