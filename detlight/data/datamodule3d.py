"""The mmdet3d ``data=dict(...)`` section for LiDAR detection as a LightningDataModule.

Replaces: mmdet3d's ``build_dataset`` for ``KittiDataset`` (with the KITTI 3-class train/test pipelines) and
``build_dataloader``. Batches are lists per key (:func:`detlight.data.collate3d.collate_3d`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from detlight.data.base import BaseDataModule
from detlight.data.collate3d import collate_3d
from detlight.data.kitti import KITTI_CLASSES, Augment3D, KittiDataset
from detlight.data.synthetic_lidar import SyntheticLidarSpec, ensure_synthetic_kitti
from detlight.exceptions import ConfigError

__all__ = ["Det3DDataModule"]


class Det3DDataModule(BaseDataModule):
    """KITTI-format LiDAR datasets and loaders, configured with mmdet3d's names.

    Give either ``data_root`` (a KITTI object-benchmark layout, see :mod:`detlight.data.kitti`) or ``synthetic``
    (generated once into ``$DETLIGHT_CACHE`` / ``~/.cache/detlight``, or ``cache_dir``); with neither, the default
    :class:`~detlight.data.synthetic_lidar.SyntheticLidarSpec` is used. As in mmdet, ``samples_per_gpu`` and
    ``workers_per_gpu`` are per process, and loaders use :class:`~detlight.data.sampler.DetSampler` with the
    trainer's rank, so build the Trainer with ``use_distributed_sampler=False``. The loaders, and the resumable train
    loader that makes a mid-epoch resume exact, are :class:`~detlight.data.base.BaseDataModule`'s, as in 2D.
    Val/test run without augmentation;
    under DDP their last round may hold padded duplicates, which
    :class:`~detlight.metrics.center_distance.CenterDistanceMAP` drops by ``sample_idx``.

    Args:
        data_root: root of a KITTI-format dataset.
        synthetic: synthetic dataset to generate and use instead.
        cache_dir: where the synthetic dataset is cached.
        classes: class names; a label is the index in this list.
        point_cloud_range: ``[x0, y0, z0, x1, y1, z1]`` kept after augmentation (must match the model's).
        train_split: ``ImageSets`` list used for training.
        val_split: ``ImageSets`` list used for validation.
        test_split: ``ImageSets`` list used for test/predict (default: ``val_split``).
        augment: training augmentation (``None``: none).
        samples_per_gpu: train batch size per process.
        val_samples_per_gpu: val/test batch size per process.
        workers_per_gpu: DataLoader workers per process and loader.
        persistent_workers: keep workers alive between epochs (with ``workers_per_gpu > 0``).
        seed: seed of the sampler permutations and the worker RNGs.
        repeat_times: Passes over the train set per epoch (mmdet's ``RepeatDataset(times=N)``), done by the sampler.
    """

    def __init__(self, data_root: str | None = None, synthetic: SyntheticLidarSpec | None = None,
                 cache_dir: str | None = None, classes: Sequence[str] = KITTI_CLASSES,
                 point_cloud_range: Sequence[float] = (0.0, -20.48, -3.0, 40.96, 20.48, 1.0),
                 train_split: str = "train", val_split: str = "val", test_split: str | None = None,
                 augment: Augment3D | None = Augment3D(), samples_per_gpu: int = 4, val_samples_per_gpu: int = 4,
                 workers_per_gpu: int = 0, persistent_workers: bool = False, seed: int = 0,
                 repeat_times: int = 1) -> None:
        super().__init__(samples_per_gpu=samples_per_gpu, val_samples_per_gpu=val_samples_per_gpu,
                         workers_per_gpu=workers_per_gpu, persistent_workers=persistent_workers, seed=seed,
                         repeat_times=repeat_times)
        if data_root is not None and synthetic is not None:
            raise ConfigError("Give `data.data_root` (a KITTI-format folder) or `data.synthetic`, not both.")
        if len(point_cloud_range) != 6 or not all(point_cloud_range[i] < point_cloud_range[i + 3] for i in range(3)):
            raise ConfigError(f"`data.point_cloud_range` must be [x0, y0, z0, x1, y1, z1] with x0 < x1, y0 < y1, "
                              f"z0 < z1, got {list(point_cloud_range)}")
        if not classes:
            raise ConfigError("`data.classes` must name at least one class")
        self.data_root = data_root
        self.synthetic = synthetic if synthetic is not None or data_root is not None else SyntheticLidarSpec()
        self.cache_dir = cache_dir
        self.classes = list(classes)
        self.point_cloud_range = [float(v) for v in point_cloud_range]
        self.split_names = {"train": train_split, "val": val_split, "test": test_split or val_split}
        self.augment = augment
        self.datasets: dict[str, KittiDataset] = {}

    # ------------------------------------------------------------------ datasets
    def prepare_data(self) -> None:
        """Generate the synthetic set if configured (once per node under DDP; cached afterwards)."""
        if self.synthetic is not None:
            ensure_synthetic_kitti(self.synthetic, self.cache_dir)

    @property
    def root(self) -> Path:
        """The dataset root in use (generates the synthetic set when it is missing)."""
        if self.data_root is not None:
            return Path(self.data_root)
        if self.synthetic is None:  # unreachable through __init__; guards attribute edits
            raise ConfigError("Det3DDataModule has neither `data_root` nor `synthetic` set")
        return ensure_synthetic_kitti(self.synthetic, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets ``stage`` needs (``fit``: train + val; ``validate``: val; ``test``/``predict``: test)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for name in wanted.get(stage or "", ("train", "val", "test")):
            if name not in self.datasets:
                self.datasets[name] = KittiDataset(self.root, self.split_names[name], self.classes,
                                                   self.point_cloud_range,
                                                   augment=self.augment if name == "train" else None)

    @property
    def CLASSES(self) -> tuple[str, ...]:  # mmdet's attribute name
        """Class names in label order."""
        return tuple(self.classes)

    @property
    def num_classes(self) -> int:
        """Number of classes (the detector's ``num_classes`` must equal it)."""
        return len(self.classes)

    # ------------------------------------------------------------------ loaders (see BaseDataModule)
    collate_fn = staticmethod(collate_3d)

    def dataset(self, name: str) -> KittiDataset:
        """The built dataset of split ``name``, set up on first use."""
        if name not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[name])
        return self.datasets[name]
