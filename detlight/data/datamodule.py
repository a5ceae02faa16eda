"""The mmdet ``data=dict(...)`` section as a LightningDataModule.

Replaces: mmdet's ``build_dataset`` + ``build_dataloader`` (``samples_per_gpu``, ``workers_per_gpu``,
``persistent_workers``, the seeded ``worker_init_fn``) and the ``data.train/val/test`` dataset configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from detlight.data.base import BaseDataModule
from detlight.data.coco import CocoDataset, DatasetError, _load_json, _select_categories
from detlight.data.collate import collate
from detlight.data.loader import worker_init_fn
from detlight.data.synthetic import SyntheticCocoSpec, ensure_synthetic_coco
from detlight.data.transforms import PipelineConfig

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


class DetDataModule(BaseDataModule):
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
        repeat_times: Passes over the train set per epoch (mmdet's ``RepeatDataset(times=N)``), done by the sampler.

    Loaders, samplers and the resumable train loader come from :class:`~detlight.data.base.BaseDataModule`.

    Raises:
        ConfigError: ``samples_per_gpu``/``val_samples_per_gpu`` < 1 or ``workers_per_gpu`` < 0.

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
                 val_samples_per_gpu: int = 1, seed: int = 0, repeat_times: int = 1) -> None:
        super().__init__(samples_per_gpu=samples_per_gpu, val_samples_per_gpu=val_samples_per_gpu,
                         workers_per_gpu=workers_per_gpu, persistent_workers=persistent_workers, seed=seed,
                         repeat_times=repeat_times)
        self.splits: dict[str, CocoSplit | None] = {"train": train, "val": val, "test": test}
        if synthetic is None and train is None and val is None and test is None:
            synthetic = SyntheticCocoSpec()
        self.synthetic = synthetic
        self.pipeline = pipeline if pipeline is not None else PipelineConfig()
        self.datasets: dict[str, CocoDataset] = {}

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

    # ------------------------------------------------------------------ loaders (see BaseDataModule)
    collate_fn = staticmethod(collate)

    def has_split(self, name: str) -> bool:
        """Whether split ``name`` is configured, explicitly or through ``synthetic``."""
        return self.split(name) is not None  # type: ignore[arg-type]

    def dataset(self, name: str) -> CocoDataset:
        """The built dataset of split ``name``, set up on first use."""
        if name not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[name])
        if name not in self.datasets:
            raise DatasetError(f"No `data.{name}` split is configured (and no `data.synthetic` to fill it).")
        return self.datasets[name]
