"""Epoch-seeded, rank-sharded sampler with a resumable position.

Replaces: ``mmdet.datasets.samplers.DistributedSampler`` (and ``torch.utils.data.DistributedSampler``, whose
index layout it reproduces), used with ``Trainer(use_distributed_sampler=False)`` so that Lightning neither wraps nor
replaces it. Lightning still calls :meth:`DetSampler.set_epoch` at every train-epoch start, which is what mmcv's
``DistSamplerSeedHook`` did. ``repeat`` reproduces mmdet's ``RepeatDataset(times=N)`` wrapped around the train set.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import Sampler

from detlight.exceptions import CheckpointError

__all__ = ["DetSampler"]


class DetSampler(Sampler[int]):
    """Indices ``0..num_samples-1`` for one rank: permuted per epoch (same on every rank), padded, then strided.

    Epoch ``e`` uses ``torch.randperm(num_samples, generator=Generator().manual_seed(seed + e))``; without
    ``shuffle`` the order is ``0..n-1``. Like ``DistributedSampler``, the list is padded with its own first indices
    up to a multiple of ``world_size`` (or truncated when ``drop_last``), and rank ``r`` takes ``indices[r::world]``.

    With ``repeat=N`` the sampler draws over ``N * num_samples`` positions and yields ``position % num_samples``,
    which is exactly what mmdet's ``RepeatDataset(times=N)`` under its ``DistributedSampler`` gives: one epoch is
    ``N`` passes over the data, so epoch-based runs keep mmdet's number of iterations.

    For an iteration-exact mid-epoch resume, set :attr:`skip` (or restore it with :meth:`load_state_dict`): the next
    ``__iter__`` drops that many of this rank's indices and resets ``skip`` to 0. ``len()`` always reports the full
    per-rank epoch length.

    Args:
        num_samples: Dataset length.
        shuffle: Permute per epoch.
        seed: Base seed; must be the same on every rank.
        rank: This process's rank.
        world_size: Number of processes.
        drop_last: Drop the tail instead of padding when ``num_samples`` is not a multiple of ``world_size``.
        repeat: Passes over the dataset per epoch (mmdet's ``RepeatDataset.times``).

    Raises:
        ValueError: a negative size, ``world_size < 1``, ``rank`` outside ``[0, world_size)`` or ``repeat < 1``.

    Example:
        >>> list(DetSampler(5, shuffle=False, seed=0, rank=1, world_size=2))
        [1, 3, 0]
        >>> list(DetSampler(3, shuffle=False, repeat=2))
        [0, 1, 2, 0, 1, 2]
    """

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, repeat: int = 1) -> None:
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"Expected `repeat` (RepeatDataset times) to be an int >= 1, but got {repeat!r}.")
        if num_samples < 0:
            raise ValueError(f"Expected `num_samples` >= 0, but got {num_samples}.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"Expected 0 <= rank < world_size, but got rank={rank}, world_size={world_size}.")
        self.dataset_len = num_samples
        self.repeat = repeat
        num_samples *= repeat
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.skip = 0
        if drop_last and num_samples % world_size:
            self.per_rank = math.ceil((num_samples - world_size) / world_size)
        else:
            self.per_rank = math.ceil(num_samples / world_size)
        self.total_size = self.per_rank * world_size

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation for ``epoch`` (Lightning calls this at every train-epoch start)."""
        self.epoch = epoch

    def indices(self) -> list[int]:
        """This rank's full index list for the current epoch (``skip`` not applied)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        if self.total_size > len(order) and order:
            pad = self.total_size - len(order)
            order += (order * math.ceil(pad / len(order)))[:pad]
        else:
            order = order[: self.total_size]
        own = order[self.rank : self.total_size : self.world_size]
        return [i % self.dataset_len for i in own] if self.repeat > 1 else own

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return iter(self.indices()[skip:])

    def __len__(self) -> int:
        return self.per_rank

    def state_dict(self) -> dict[str, Any]:
        """Plain-python state: ``epoch``, ``skip``, ``seed``, ``shuffle`` (checkpoint-safe with ``weights_only``)."""
        return {"epoch": self.epoch, "skip": self.skip, "seed": self.seed, "shuffle": self.shuffle}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``epoch`` and ``skip``; a different ``seed``/``shuffle`` would silently change the order, so refuse.

        Raises:
            KeyError: ``epoch`` or ``skip`` is missing.
            ValueError: the saved seed or shuffle differs from this sampler's, or ``skip`` is out of range.
        """
        missing = [k for k in ("epoch", "skip") if k not in state]
        if missing:
            raise CheckpointError(f"DetSampler state lacks {missing}; got keys {sorted(state)}.")
        for key in ("seed", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise CheckpointError(f"DetSampler state was saved with {key}={state[key]!r}, but this sampler has "
                                      f"{key}={getattr(self, key)!r}; resume with the same `data.seed`/shuffle.")
        if not 0 <= int(state["skip"]) <= self.per_rank:
            raise CheckpointError(f"DetSampler state skip={state['skip']} is outside [0, {self.per_rank}].")
        self.epoch = int(state["epoch"])
        self.skip = int(state["skip"])

    def __repr__(self) -> str:
        return (f"DetSampler(num_samples={self.dataset_len}, shuffle={self.shuffle}, seed={self.seed}, "
                f"rank={self.rank}, world_size={self.world_size}, drop_last={self.drop_last}, repeat={self.repeat})")
