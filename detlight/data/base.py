"""What the 2D and 3D datamodules share: mmdet's loader settings, per-rank samplers and the resumable train loader.

Replaces: mmdet's ``build_dataloader`` (``samples_per_gpu``, ``workers_per_gpu``, ``persistent_workers``, the seeded
``worker_init_fn``, ``DistributedGroupSampler``-style per-rank sampling).

A subclass builds datasets (``setup``, :meth:`BaseDataModule.dataset`) and names its collate function
(:attr:`BaseDataModule.collate_fn`); the loaders come from here, so 2D and 3D training resume mid-epoch through the
same :class:`~detlight.data.loader_state.StatefulDataLoader` path and report worker errors the same way.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from detlight.data.loader import DetDataLoader, explain_worker_death, worker_init_fn
from detlight.data.loader_state import StatefulDataLoader, load_skipped_loader_state
from detlight.data.sampler import DetSampler
from detlight.exceptions import ConfigError

__all__ = ["BaseDataModule"]


class BaseDataModule(pl.LightningDataModule):
    """Loader settings and loaders shared by :class:`~detlight.data.datamodule.DetDataModule` and
    :class:`~detlight.data.datamodule3d.Det3DDataModule`.

    As in mmdet under DDP, ``samples_per_gpu`` and ``workers_per_gpu`` are **per process**. Loaders use
    :class:`~detlight.data.sampler.DetSampler` with the trainer's rank and world size (build the Trainer with
    ``use_distributed_sampler=False``) and a private ``torch.Generator``, so creating an iterator draws nothing from the
    global RNG. The train loader is a :class:`~detlight.data.loader_state.StatefulDataLoader`: checkpoints record the
    position in the epoch and the RNG states, and a resume continues with the next batch.

    Args:
        samples_per_gpu: Train batch size per process.
        val_samples_per_gpu: Val/test batch size per process.
        workers_per_gpu: DataLoader workers per process (and per loader).
        persistent_workers: Keep workers alive between epochs (only used when ``workers_per_gpu > 0``).
        seed: Seed of the sampler permutations and of the worker RNGs.
        repeat_times: Passes over the train set per epoch (mmdet's ``RepeatDataset(times=N)``), done by the sampler.

    Raises:
        ConfigError: a batch size < 1 or ``workers_per_gpu`` < 0.
    """

    @staticmethod
    def collate_fn(samples: Any) -> Any:
        """``collate_fn`` of every loader (the subclass sets its own)."""
        raise NotImplementedError

    def __init__(self, samples_per_gpu: int, val_samples_per_gpu: int, workers_per_gpu: int,
                 persistent_workers: bool, seed: int, repeat_times: int = 1) -> None:
        super().__init__()
        for key, value, low in (("samples_per_gpu", samples_per_gpu, 1), ("val_samples_per_gpu", val_samples_per_gpu, 1),
                                ("workers_per_gpu", workers_per_gpu, 0), ("repeat_times", repeat_times, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"Expected `data.{key}` to be an int >= {low}, but got {value!r}.")
        self.samples_per_gpu = samples_per_gpu
        self.val_samples_per_gpu = val_samples_per_gpu
        self.workers_per_gpu = workers_per_gpu
        self.persistent_workers = persistent_workers
        self.seed = seed
        self.repeat_times = repeat_times
        self.train_sampler: DetSampler | None = None

    # ------------------------------------------------------------------ datasets (subclass)
    def dataset(self, name: str) -> Dataset:
        """The built dataset of split ``name`` (``train``, ``val`` or ``test``), set up on first use."""
        raise NotImplementedError

    def has_split(self, name: str) -> bool:
        """Whether split ``name`` is configured (a missing val split skips validation)."""
        return True

    # ------------------------------------------------------------------ loaders
    def _dist_info(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def make_sampler(self, dataset: Dataset, shuffle: bool, repeat: int = 1) -> DetSampler:
        """A :class:`DetSampler` over ``dataset`` for this process's rank, ``repeat`` passes per epoch."""
        rank, world_size = self._dist_info()
        return DetSampler(len(dataset), shuffle=shuffle, seed=self.seed, rank=rank,  # type: ignore[arg-type]
                          world_size=world_size, repeat=repeat)

    def make_loader(self, dataset: Dataset, sampler: Sampler[int], batch_size: int,
                    stateful: bool = False) -> DataLoader:
        """The loader for one split; ``stateful`` gives a :class:`StatefulDataLoader` (train)."""
        workers = self.workers_per_gpu
        rank = self._dist_info()[0]
        loader_cls = StatefulDataLoader if stateful else DetDataLoader
        return loader_cls(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=type(self).collate_fn,
            pin_memory=False, drop_last=False, persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=partial(worker_init_fn, num_workers=workers, rank=rank, seed=self.seed),
            # A private generator: creating an iterator then draws its (unused: worker_init_fn re-seeds) base seed
            # from it, not from the global torch RNG, so a validation pass does not shift the training randomness.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled train loader, ``samples_per_gpu`` per batch; its sampler is kept as ``train_sampler``."""
        dataset = self.dataset("train")
        self.train_sampler = self.make_sampler(dataset, shuffle=True, repeat=self.repeat_times)
        loader = self.make_loader(dataset, self.train_sampler, self.samples_per_gpu, stateful=True)
        load_skipped_loader_state(self.trainer, loader)
        return loader

    def val_dataloader(self) -> DataLoader | list[Any]:
        """Val loader in dataset order (an empty list when there is no val data, so validation is skipped).

        Under DDP the last ranks may see padded duplicates (as with mmdet's sampler); metrics deduplicate them.
        """
        if not self.has_split("val"):
            return []
        dataset = self.dataset("val")
        if len(dataset) == 0:  # type: ignore[arg-type]
            return []
        return self.make_loader(dataset, self.make_sampler(dataset, shuffle=False), self.val_samples_per_gpu)

    def test_dataloader(self) -> DataLoader:
        """Test loader in dataset order."""
        dataset = self.dataset("test")
        return self.make_loader(dataset, self.make_sampler(dataset, shuffle=False), self.val_samples_per_gpu)

    def predict_dataloader(self) -> DataLoader:
        """Same as :meth:`test_dataloader`."""
        return self.test_dataloader()

    def on_exception(self, exception: BaseException) -> None:
        """Name the cause when a worker was killed outside a batch fetch (torch raises from its SIGCHLD handler)."""
        line = explain_worker_death(exception, self.workers_per_gpu, self.samples_per_gpu)
        if line is not None:
            print(f"detlight: {line}", file=sys.stderr, flush=True)
