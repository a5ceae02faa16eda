"""Iteration-exact resume of the train data: a stateful train loader and the RNG states it carries.

Replaces: mmcv's resume of ``runner.iter`` inside an epoch, which mmcv never did (it restarted the epoch's data),
on top of Lightning's own resume.

Lightning restores weights, optimizer, loop counters and callback state (docs/lightning-notes.md A7), but the position inside
the data is only restored for a train loader that is ``_Stateful`` (has ``state_dict``/``load_state_dict``), and the
torch / numpy / python RNG states are not saved at all. :class:`StatefulDataLoader` closes both gaps:

* its ``state_dict()`` (saved by Lightning under ``loops.fit_loop.state_dict.combined_loader``) holds the number of
  batches yielded in the current epoch and the RNG states at save time, as plain lists / tensors, so the checkpoint
  stays loadable with ``weights_only=True``;
* after ``load_state_dict`` the next epoch iterator starts where the saved one stopped and puts the RNG states back
  right before its first batch. Without workers it skips through the sampler (``DetSampler.skip``, nothing is
  loaded); with ``workers_per_gpu > 0`` the workers load and drop the skipped batches, so each worker's random
  transforms (seeded per epoch by ``worker_init_fn``) run through the same draws as in the uninterrupted run.

Lightning only loads the loader state if nothing reads ``trainer.estimated_stepping_batches`` before the checkpoint
is restored (Lightning #20550); detlight's callbacks compute the run length from ``num_training_batches`` instead.
Nor does it load it from a checkpoint written after an epoch's training finished (``on_train_epoch_end`` saves, a
preemption at an epoch's last batch): its fit loop then does not count as restarting. That state holds the RNG
states the next epoch starts from, so :func:`load_skipped_loader_state` hands it to the loader instead; call it
from ``train_dataloader`` (:class:`~detlight.data.base.BaseDataModule` does).

detlight's datamodules give their loaders a private ``torch.Generator``, so creating an iterator (a validation pass,
a new epoch) draws nothing from the global RNG and cannot shift the training stream.

Limits: with ``persistent_workers=True`` the workers' RNGs carry over from earlier epochs, which a resumed run has
not seen, so random transforms in workers are not replayed bit for bit; under DDP the checkpoint carries rank 0's RNG
state only; code that draws from the global RNG between a checkpoint and the next batch (a model's random eval-time
ops) is not replayed. A checkpoint written at an epoch's last batch (``on_train_batch_end``) resumes in the next
epoch, and Lightning then skips the rest of the finished epoch (its validation, ``on_train_epoch_end``) and the next
epoch's ``on_train_epoch_start``; detlight's lr/momentum updaters apply an epoch's values at its first batch as well.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader
from typing_extensions import override

from detlight.data.loader import DetDataLoader
from detlight.exceptions import CheckpointError
from detlight.upstream_internals import clear_pending_loader_states, pending_loader_states

__all__ = ["StatefulDataLoader", "get_rng_state", "load_skipped_loader_state", "set_rng_state",
           "train_batches_per_epoch"]


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
class StatefulDataLoader(DetDataLoader):
    """A ``DataLoader`` whose position in the epoch and RNG states are saved in (and restored from) checkpoints.

    Replaces: mmcv's resume of ``runner.iter`` inside an epoch, which mmcv itself never did (it restarted the epoch's
    data). A :class:`~detlight.data.loader.DetDataLoader`, so worker errors read clearly. Use it as the train loader: Lightning sees ``state_dict``/``load_state_dict`` and stores the state at every
    checkpoint. Everything else behaves as a plain ``DataLoader``; ``len()`` is always the full epoch.

    The state is ``{"yielded", "batch_size", "num_batches", "epoch_batches", "rng"}``: batches handed out by the
    current epoch iterator, the batch size and epoch length it was saved with (a resume with other data settings is
    refused), the batches the Trainer takes per epoch (``limit_train_batches`` applied, see :attr:`epoch_batches`) and
    :func:`get_rng_state` at save time. A state saved at the end of an epoch (``yielded == epoch_batches``) starts the
    next epoch from its beginning.

    Attributes:
        epoch_batches: batches the Trainer takes from each epoch iterator (``trainer.limit_train_batches`` applied),
            ``None`` for the whole loader. :func:`load_skipped_loader_state` sets it; with ``limit_train_batches`` an
            epoch ends before the loader is exhausted, and only this tells a state saved at an epoch's end from one
            saved inside the epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._yielded = 0
        self._pending: dict[str, Any] | None = None
        self.epoch_batches: int | None = None

    def _epoch_length(self) -> int:
        return len(self) if self.epoch_batches is None else min(len(self), self.epoch_batches)

    @override
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: nothing runs until the first batch is requested, so an iterator that Lightning creates and
        # then drops (it does so on resume) neither consumes the restored state nor draws from the RNG.
        return self._generate()

    def _generate(self) -> Iterator[Any]:
        pending, self._pending = self._pending, None
        skip = int(pending["yielded"]) if pending is not None else 0
        # the epoch length of the run that saved the state (older checkpoints lack it: this run's)
        saved_length = int(pending.get("epoch_batches", self._epoch_length())) if pending is not None else 0
        at_boundary = pending is not None and skip >= min(saved_length, len(self))
        if at_boundary:
            skip = 0
            set_rng_state(pending["rng"])  # type: ignore[index]
        # Without workers, skip in the sampler; with workers, let them load and drop the batches so their RNGs
        # advance exactly as in the uninterrupted epoch.
        fast_skip = skip and self.num_workers == 0 and self._sampler_can_skip()
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
                "epoch_batches": self._epoch_length(), "rng": get_rng_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the next epoch iterator from ``state`` (see the class docstring).

        Raises:
            CheckpointError: the state lacks ``yielded`` or was saved with another batch size or epoch length.
        """
        if "yielded" not in state:
            raise CheckpointError(f"The train loader state in the checkpoint lacks `yielded`; got keys {sorted(state)}.")
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

    It also tells the loader how many batches the Trainer takes per epoch (:attr:`StatefulDataLoader.epoch_batches`),
    so that with ``limit_train_batches`` a state saved at an epoch's end starts the next epoch whole.

    Returns:
        Whether a state was loaded.
    """
    if isinstance(loader, StatefulDataLoader) and trainer is not None:
        loader.epoch_batches = train_batches_per_epoch(trainer, len(loader))
    fit_loop = getattr(trainer, "fit_loop", None)
    states = pending_loader_states(fit_loop) if fit_loop is not None else None
    if not isinstance(loader, StatefulDataLoader) or fit_loop is None or fit_loop.restarting:
        return False  # a restarting fit loop loads the state itself
    if not isinstance(states, list) or len(states) != 1:
        return False  # nothing pending, or states of several loaders (which one is whose is unknown)
    loader.load_state_dict(states[0])
    clear_pending_loader_states(fit_loop)  # a dataloader reload later in the run must not load it again
    return True


def train_batches_per_epoch(trainer: pl.Trainer, length: int) -> int:
    """Training batches the Trainer takes from a loader of ``length`` batches per epoch (``limit_train_batches``:
    an int is a count, a float a fraction of ``length``, as Lightning reads it)."""
    limit = getattr(trainer, "limit_train_batches", None)
    if limit is None or isinstance(limit, bool) or not isinstance(limit, (int, float)):
        return length
    if isinstance(limit, int):
        return min(length, limit)
    return min(length, int(length * float(limit)))
