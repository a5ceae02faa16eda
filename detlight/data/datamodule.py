"""The mmdet ``data=dict(...)`` section as a LightningDataModule.

Replaces: mmdet's ``build_dataset`` + ``build_dataloader`` (``samples_per_gpu``, ``workers_per_gpu``,
``persistent_workers``, the seeded ``worker_init_fn``) and the ``data.train/val/test`` dataset configs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from detlight.data.coco import CocoDataset, DatasetError, _load_json, _select_categories
from detlight.data.collate import collate
from detlight.data.sampler import DetSampler
from detlight.data.synthetic import SyntheticCocoSpec, ensure_synthetic_coco
from detlight.data.transforms import PipelineConfig
from detlight.exceptions import ConfigError
from detlight.resume import StatefulDataLoader, load_skipped_loader_state

__all__ = ["CocoSplit", "DetDataModule", "worker_init_fn"]

SplitName = Literal["train", "val", "test"]


@dataclass
class CocoSplit:
    """One COCO-format split (mmdet's ``data.train`` / ``data.val`` / ``data.test`` with ``type='CocoDataset'``).

    Args:
        ann_file: COCO detection json.
        img_prefix: Folder the json's ``file_name`` entries are relative to.
        classes: Category names to keep (mmdet's ``classes``); ``None`` keeps all.
        filter_empty_gt: Drop images without boxes from the train split (val/test keep every image).
    """

    ann_file: str
    img_prefix: str
    classes: list[str] | None = None
    filter_empty_gt: bool = True


def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    """mmdet's ``worker_init_fn``: seed numpy, ``random`` and torch with ``num_workers * rank + worker_id + seed``."""
    worker_seed = num_workers * rank + worker_id + seed
    np.random.seed(worker_seed % 2**32)
    random.seed(worker_seed)
    torch.manual_seed(worker_seed)


class DetDataModule(pl.LightningDataModule):
    """Datasets and loaders for detection training, configured with mmdet's names.

    Replaces: the ``data=dict(samples_per_gpu, workers_per_gpu, persistent_workers, train, val, test)`` config and
    mmdet's ``build_dataloader``. As in mmdet under DDP, ``samples_per_gpu`` and ``workers_per_gpu`` are **per
    process**: the global batch is ``world_size * samples_per_gpu``. Loaders use :class:`DetSampler` with the
    trainer's rank and world size, so build the Trainer with ``use_distributed_sampler=False``.

    A split left as ``None`` is taken from ``synthetic`` (train -> its train set, val/test -> its val set); when
    ``train``, ``val`` and ``test`` are all ``None`` the default :class:`SyntheticCocoSpec` is used. Validation and
    test datasets run in test mode (every image kept, no flip).

    Args:
        train: Training split.
        val: Validation split.
        test: Test split (also used by ``predict``).
        synthetic: Synthetic dataset that fills the splits left ``None``.
        pipeline: Transform settings shared by all splits (train adds the random flip).
        samples_per_gpu: Train batch size per process.
        workers_per_gpu: DataLoader workers per process (and per loader).
        persistent_workers: Keep workers alive between epochs (only used when ``workers_per_gpu > 0``).
        val_samples_per_gpu: Val/test batch size per process.
        seed: Seed of the sampler permutations and of the worker RNGs.

    Raises:
        ValueError: ``samples_per_gpu``/``val_samples_per_gpu`` < 1 or ``workers_per_gpu`` < 0.

    Example:
        >>> import tempfile
        >>> dm = DetDataModule(synthetic=SyntheticCocoSpec(root=tempfile.mkdtemp(), num_train=4, num_val=2),
        ...                    samples_per_gpu=2, workers_per_gpu=0)
        >>> dm.prepare_data(); dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))
        >>> tuple(batch["img"].shape), dm.num_classes
        ((2, 3, 128, 128), 4)
    """

    def __init__(self, train: CocoSplit | None = None, val: CocoSplit | None = None, test: CocoSplit | None = None,
                 synthetic: SyntheticCocoSpec | None = None, pipeline: PipelineConfig | None = None,
                 samples_per_gpu: int = 2, workers_per_gpu: int = 2, persistent_workers: bool = False,
                 val_samples_per_gpu: int = 1, seed: int = 0) -> None:
        super().__init__()
        for key, value, low in (("samples_per_gpu", samples_per_gpu, 1), ("val_samples_per_gpu", val_samples_per_gpu, 1),
                                ("workers_per_gpu", workers_per_gpu, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"Expected `data.{key}` to be an int >= {low}, but got {value!r}.")
        self.splits: dict[str, CocoSplit | None] = {"train": train, "val": val, "test": test}
        if synthetic is None and train is None and val is None and test is None:
            synthetic = SyntheticCocoSpec()
        self.synthetic = synthetic
        self.pipeline = pipeline if pipeline is not None else PipelineConfig()
        self.samples_per_gpu = samples_per_gpu
        self.workers_per_gpu = workers_per_gpu
        self.persistent_workers = persistent_workers
        self.val_samples_per_gpu = val_samples_per_gpu
        self.seed = seed
        self.datasets: dict[str, CocoDataset] = {}
        self.train_sampler: DetSampler | None = None

    # ------------------------------------------------------------------ datasets
    def prepare_data(self) -> None:
        """Generate the synthetic set if a split needs it (runs once per node in DDP)."""
        if self.synthetic is not None and any(s is None for s in self.splits.values()):
            ensure_synthetic_coco(self.synthetic)

    def split(self, name: SplitName) -> CocoSplit | None:
        """The split config used for ``name``: the explicit one, else the synthetic one, else ``None``."""
        explicit = self.splits[name]
        if explicit is not None or self.synthetic is None:
            return explicit
        paths = ensure_synthetic_coco(self.synthetic)  # cheap when cached; setup may run without prepare_data
        if name == "train":
            return CocoSplit(str(paths.train_ann), str(paths.train_img_prefix))
        return CocoSplit(str(paths.val_ann), str(paths.val_img_prefix))

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets ``stage`` needs (``fit``: train + val; ``validate``: val; ``test``/``predict``: test)."""
        wanted: dict[str | None, tuple[SplitName, ...]] = {
            "fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",),
        }
        for name in wanted.get(stage, ("train", "val", "test")):
            if name in self.datasets:
                continue
            cfg = self.split(name)
            if cfg is not None:
                self.datasets[name] = self._build_dataset(name, cfg)
        self._check_same_classes()

    def _build_dataset(self, name: SplitName, cfg: CocoSplit) -> CocoDataset:
        train = name == "train"
        return CocoDataset(cfg.ann_file, cfg.img_prefix, pipeline=self.pipeline.build(train=train),
                           test_mode=not train, filter_empty_gt=cfg.filter_empty_gt, classes=cfg.classes)

    def _check_same_classes(self) -> None:
        built = {name: ds.CLASSES for name, ds in self.datasets.items()}
        if len(set(built.values())) > 1:
            raise DatasetError(
                f"The data splits disagree on their classes: {built}. A detector has one label space; set "
                "`classes` on each split (data.train.classes, ...) so they match."
            )

    @property
    def CLASSES(self) -> tuple[str, ...]:  # mmdet's attribute name
        """Class names in label order, from the first built dataset, else read from a split's annotation file."""
        for name in ("train", "val", "test"):
            if name in self.datasets:
                return self.datasets[name].CLASSES
        if self.synthetic is not None and self.splits["train"] is None:
            return self.synthetic.classes
        for name in ("train", "val", "test"):
            cfg = self.splits[name]
            if cfg is not None:
                ann_file = Path(cfg.ann_file)
                return _select_categories(_load_json(ann_file)["categories"], cfg.classes, ann_file)[1]
        raise DatasetError("DetDataModule has no split configured; set `data.train` or `data.synthetic`.")

    @property
    def num_classes(self) -> int:
        """Number of classes (what the detector head's ``num_classes`` must equal)."""
        return len(self.CLASSES)

    # ------------------------------------------------------------------ loaders
    def _dist_info(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _dataset(self, name: SplitName) -> CocoDataset:
        if name not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[name])
        if name not in self.datasets:
            raise DatasetError(f"No `data.{name}` split is configured (and no `data.synthetic` to fill it).")
        return self.datasets[name]

    def make_sampler(self, dataset: Dataset, shuffle: bool) -> DetSampler:
        """A :class:`DetSampler` over ``dataset`` for this process's rank."""
        rank, world_size = self._dist_info()
        return DetSampler(len(dataset), shuffle=shuffle, seed=self.seed, rank=rank,  # type: ignore[arg-type]
                          world_size=world_size)

    def make_loader(self, dataset: Dataset, sampler: Sampler[int], batch_size: int,
                    stateful: bool = False) -> DataLoader:
        """The DataLoader for one split; ``stateful`` gives a :class:`~detlight.resume.StatefulDataLoader` (train)."""
        workers = self.workers_per_gpu
        rank = self._dist_info()[0]
        loader_cls = StatefulDataLoader if stateful else DataLoader
        return loader_cls(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
            pin_memory=False, drop_last=False, persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=partial(worker_init_fn, num_workers=workers, rank=rank, seed=self.seed),
            # A private generator: creating an iterator then draws its (unused: worker_init_fn re-seeds) base seed
            # from it, not from the global torch RNG, so a validation pass does not shift the training randomness.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled train loader, ``samples_per_gpu`` images per batch; its sampler is kept as ``train_sampler``."""
        dataset = self._dataset("train")
        self.train_sampler = self.make_sampler(dataset, shuffle=True)
        # Stateful: checkpoints record the position in the epoch and the RNG states (iteration-exact resume).
        loader = self.make_loader(dataset, self.train_sampler, self.samples_per_gpu, stateful=True)
        load_skipped_loader_state(self.trainer, loader)
        return loader

    def val_dataloader(self) -> DataLoader | list[Any]:
        """Val loader in dataset order (an empty list when no val split is configured, so validation is skipped).

        Under DDP the last ranks may see padded duplicates (as with mmdet's sampler); deduplicate by ``image_id``.
        """
        if self.split("val") is None:
            return []
        dataset = self._dataset("val")
        return self.make_loader(dataset, self.make_sampler(dataset, shuffle=False), self.val_samples_per_gpu)

    def test_dataloader(self) -> DataLoader:
        """Test loader in dataset order."""
        dataset = self._dataset("test")
        return self.make_loader(dataset, self.make_sampler(dataset, shuffle=False), self.val_samples_per_gpu)

    def predict_dataloader(self) -> DataLoader:
        """Same as :meth:`test_dataloader`."""
        return self.test_dataloader()
