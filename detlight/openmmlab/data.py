"""The config's own mmdet / mmdet3d datasets and pipelines, loaded with mmdet's semantics, as a LightningDataModule.

Replaces: ``build_dataset(cfg.data.train)`` / ``build_dataset(cfg.data.val, dict(test_mode=True))`` (mmdet3d's for a
3D config, so ``RepeatDataset`` / ``ConcatDataset`` / ``ClassBalancedDataset`` / ``CBGSDataset`` come from the
registry), mmdet's ``build_dataloader`` (``GroupSampler`` / ``DistributedGroupSampler`` aspect-ratio groups,
mmcv's ``collate`` with ``DataContainer``) and the scatter ``MMDataParallel`` did, which moves into
:meth:`OpenMMLabDataModule.transfer_batch_to_device` (``non_blocking`` copies, no host sync).

Differences from mmdet: with one process mmdet's ``GroupSampler`` shuffled with the global numpy RNG; detlight uses
``DistributedGroupSampler``'s permutations (seeded with ``seed + epoch``) for every world size, so an interrupted run
resumes on the same batch order (:mod:`detlight.data.loader_state`). A ``('val', n)`` workflow phase (losses on the
val set with the train pipeline) is not run for these datasets.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from detlight.data.base import BaseDataModule
from detlight.exceptions import ConfigError, DatasetError
from detlight.openmmlab.detector import mmcv_containers

__all__ = ["GroupSampler", "OpenMMLabDataModule", "check_dataset_files", "collate", "unwrap_batch"]

log = logging.getLogger(__name__)

#: key added to each image's meta: the sample's index in its dataset, so evaluation puts results in dataset order
INDEX_KEY = "detlight_idx"
_WRAPPER_CHILDREN = ("dataset", "datasets")


class GroupSampler(Sampler[int]):
    """mmdet's ``DistributedGroupSampler``: batches hold images of one aspect-ratio group (``dataset.flag``).

    Per epoch, with a ``torch.Generator`` seeded ``seed + epoch`` (the same on every rank): each group's indices are
    permuted and padded with their own first entries to a multiple of ``samples_per_gpu * world_size``; the groups
    are concatenated, cut into batches of ``samples_per_gpu``, the batches permuted, and rank ``r`` takes the
    ``r``-th contiguous share. ``skip`` drops that many of this rank's next indices once (mid-epoch resume).

    Example:
        >>> sampler = GroupSampler(np.array([0, 0, 1, 1, 1]), samples_per_gpu=2)
        >>> indices = list(sampler)
        >>> len(indices), [sorted(indices[i:i + 2]) in ([0, 1], [2, 3], [2, 4], [3, 4], [2, 2], [3, 3], [4, 4])
        ...                 for i in range(0, 6, 2)]
        (6, [True, True, True])
    """

    def __init__(self, flag: np.ndarray, samples_per_gpu: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.flag = np.asarray(flag, dtype=np.int64)
        self.samples_per_gpu = samples_per_gpu
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0
        self.group_sizes = np.bincount(self.flag) if self.flag.size else np.zeros(0, dtype=np.int64)
        chunk = samples_per_gpu * world_size
        self.num_samples = sum(math.ceil(int(size) / chunk) * samples_per_gpu for size in self.group_sizes)
        self.total_size = self.num_samples * world_size

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of ``epoch`` (Lightning calls this at every train-epoch start)."""
        self.epoch = epoch

    def indices(self) -> list[int]:
        """This rank's index list for the current epoch (``skip`` not applied)."""
        generator = torch.Generator().manual_seed(self.epoch + self.seed)
        chunk = self.samples_per_gpu * self.world_size
        order: list[int] = []
        for group, size in enumerate(self.group_sizes.tolist()):
            if size == 0:
                continue
            members = np.flatnonzero(self.flag == group)
            members = members[torch.randperm(size, generator=generator).numpy()].tolist()
            target = math.ceil(size / chunk) * chunk
            order += (members * math.ceil(target / size))[:target]
        num_batches = len(order) // self.samples_per_gpu
        batches = torch.randperm(num_batches, generator=generator).tolist()
        spg = self.samples_per_gpu
        order = [order[b * spg + j] for b in batches for j in range(spg)]
        start = self.num_samples * self.rank
        return order[start:start + self.num_samples]

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return iter(self.indices()[skip:])

    def __len__(self) -> int:
        return self.num_samples


class _Indexed(Dataset):
    """The dataset with each sample's index written into its ``img_metas`` (``detlight_idx``), and the COCO
    ``image_id`` where the dataset's ``data_infos`` hold one (detlight's prediction writer reads it)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        infos = getattr(dataset, "data_infos", None)
        self._infos = infos if isinstance(infos, list) and len(infos) == len(dataset) else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        # mmdet's hooks reach the dataset through runner.data_loader.dataset: `update_skip_type_keys`
        # (YOLOXModeSwitchHook), `update_dynamic_scale` (SyncRandomSizeHook), `flag`, `CLASSES`, ...
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        sample = self.dataset[index]
        metas = sample.get("img_metas") if isinstance(sample, Mapping) else None
        info = self._infos[index] if self._infos is not None else None
        for meta in metas if isinstance(metas, list) else [metas]:
            data = getattr(meta, "data", meta)
            if isinstance(data, dict):
                data[INDEX_KEY] = index
                if isinstance(info, Mapping) and isinstance(info.get("id"), int):
                    data.setdefault("image_id", info["id"])
        return sample


def collate(samples: Sequence[Any]) -> Any:
    """mmcv's ``collate`` with ``samples_per_gpu`` = the batch's size (one chunk per ``DataContainer``)."""
    from mmcv.parallel import collate as mmcv_collate

    return mmcv_collate(list(samples), samples_per_gpu=len(samples))


def unwrap_batch(batch: Any, device: torch.device | None = None) -> Any:
    """What ``MMDataParallel.scatter`` gave the model: ``DataContainer`` s unwrapped, tensors on ``device``.

    ``cpu_only`` containers (image metas, mmdet masks, mmdet3d boxes) stay as they are; stacked ones become their
    tensor; the others their list, each tensor copied with ``non_blocking``. A test batch of one augmentation
    (mmdet nests each key in a per-augmentation list) is flattened to the train layout
    (``img``: tensor, ``img_metas``: list of dicts, see :mod:`detlight.models.contract`); several augmentations keep
    mmdet's nesting.
    """
    out = _unwrap(batch, device)
    if isinstance(out, dict):
        metas = out.get("img_metas")
        if isinstance(metas, list) and len(metas) == 1 and isinstance(metas[0], list):
            out = {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in out.items()}
    return out


def _unwrap(value: Any, device: torch.device | None) -> Any:
    if hasattr(value, "cpu_only") and hasattr(value, "stack") and hasattr(value, "data"):  # mmcv DataContainer
        data = value.data
        inner = data[0] if isinstance(data, list) and len(data) == 1 else data
        return inner if value.cpu_only else _unwrap(inner, device)
    if isinstance(value, torch.Tensor):
        return value if device is None else value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _unwrap(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v, device) for v in value]
    return value


def check_dataset_files(cfg: Any, key: str, unjoined_ok: bool = False) -> None:
    """Fail with the path and the config key when a split's ``ann_file`` (or ``img_prefix``) does not exist.

    Follows dataset wrappers (``dataset`` / ``datasets``) and joins ``data_root`` as mmdet does for relative paths.
    ``unjoined_ok``: the path as written also counts (mmdet3d's point-cloud datasets do not join ``data_root``).

    Raises:
        DatasetError: the first missing file or folder.
    """
    if isinstance(cfg, (list, tuple)):
        for i, item in enumerate(cfg):
            check_dataset_files(item, f"{key}.{i}", unjoined_ok)
        return
    if not isinstance(cfg, Mapping):
        return
    for child in _WRAPPER_CHILDREN:
        if child in cfg:
            check_dataset_files(cfg[child], f"{key}.{child}", unjoined_ok)
    root = cfg.get("data_root")
    for name, is_file in (("ann_file", True), ("img_prefix", False)):
        value = cfg.get(name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if not isinstance(item, str) or not item:
                continue
            path = os.path.join(root, item) if root and not os.path.isabs(item) else item
            found = os.path.isfile if is_file else os.path.isdir
            exists = found(path) or (unjoined_ok and found(item))
            if not exists:
                what = "annotation file" if is_file else "image folder"
                raise DatasetError(f"`{key}.{name}`: {what} not found: {path}. Point it at your data (or set "
                                   f"`{key}.data_root`)")


class OpenMMLabDataModule(BaseDataModule):
    """The config's ``data=dict(...)`` built by mmdet / mmdet3d, loaded as mmdet's ``build_dataloader`` does.

    Args:
        data: the config's ``data`` dict: ``samples_per_gpu``, ``workers_per_gpu``, ``persistent_workers``,
            ``train`` / ``val`` / ``test`` dataset configs, and optionally ``train_dataloader`` /
            ``val_dataloader`` / ``test_dataloader`` overrides (mmdet 2.x names).
        custom_imports: the config's ``custom_imports`` (imported before the datasets are built).
        scope: ``"mmdet"`` or ``"mmdet3d"``.
        seed: the config's ``seed``: sampler permutations and worker seeds.
        tuples: the paths (``data.train.pipeline.2.img_scale``) that are tuples in the ``.py`` config, recorded by
            ``detlight convert``; ``None`` guesses them (see :func:`~detlight.openmmlab.detector.mmcv_containers`).

    Raises:
        ConfigError: ``data`` lacks ``samples_per_gpu`` or a split has no ``type``.
        DatasetError: a split's ``ann_file`` / ``img_prefix`` is missing (path and config key named).
    """

    collate_fn = staticmethod(collate)
    #: the heads' ``num_classes`` are checked only by the config's own ``NumClassCheckHook`` (mmdet's
    #: ``default_runtime`` adds it; mmdet3d's does not, and its class-agnostic heads such as PointRCNN's
    #: ``num_classes=1`` bbox head would fail the check), not by ``DetectorModule.setup``
    num_class_check_by_hook = True

    def __init__(self, data: Mapping[str, Any], custom_imports: Mapping[str, Any] | Sequence[str] | None = None,
                 scope: str = "mmdet", seed: int = 0, tuples: Sequence[str] | None = None) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"`data` must be the config's data dict, got {type(data).__name__}")
        cfg = mmcv_containers({"data": dict(data)}, tuples)["data"]
        train_loader = dict(cfg.get("train_dataloader") or {})
        val_loader = dict(cfg.get("val_dataloader") or {})
        samples = train_loader.get("samples_per_gpu", cfg.get("samples_per_gpu", 2))
        workers = train_loader.get("workers_per_gpu", cfg.get("workers_per_gpu", 2))
        val_cfg = cfg.get("val") if isinstance(cfg.get("val"), Mapping) else {}
        val_samples = val_loader.get("samples_per_gpu", val_cfg.get("samples_per_gpu", 1))
        super().__init__(samples_per_gpu=samples, val_samples_per_gpu=val_samples, workers_per_gpu=workers,
                         persistent_workers=bool(train_loader.get("persistent_workers",
                                                                  cfg.get("persistent_workers", False))),
                         seed=int(seed if seed is not None else 0))
        self.data_cfg = cfg
        self.custom_imports = custom_imports
        self.scope = scope
        self.datasets: dict[str, Any] = {}

    # ------------------------------------------------------------------ datasets
    def has_split(self, name: str) -> bool:
        """Whether ``data.<name>`` is configured."""
        return isinstance(self.data_cfg.get(name), Mapping)

    def setup(self, stage: str | None = None) -> None:
        """Build the splits ``stage`` needs (``fit``: train + val; ``validate``: val; ``test`` / ``predict``: test)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for name in wanted.get(stage or "", ("train", "val", "test")):
            if self.has_split(name) and name not in self.datasets:
                self.datasets[name] = self._build(name)

    def _build(self, name: str) -> Any:
        from detlight.openmmlab.imports import import_custom_modules, registry_errors
        from detlight.openmmlab.provider import install_ops

        install_ops()
        import_custom_modules(self.custom_imports)
        split = dict(self.data_cfg[name])
        split.pop("samples_per_gpu", None)
        if "type" not in split:
            raise ConfigError(f"`data.{name}` needs a `type` (e.g. CocoDataset), got keys {sorted(split)}")
        check_dataset_files(split, f"data.{name}", unjoined_ok=self.scope == "mmdet3d")
        from mmcv import ConfigDict

        if self.scope == "mmdet3d":
            from mmdet3d.datasets import build_dataset

            from detlight.openmmlab.kitti_eval_cpu import install_kitti_eval_cpu

            install_kitti_eval_cpu()  # KittiDataset.evaluate without a CUDA GPU
        else:
            from mmdet.datasets import build_dataset
        with registry_errors(f"building `data.{name}` ({split['type']})", self.custom_imports):
            dataset = build_dataset(ConfigDict(split), None if name == "train" else {"test_mode": True})
        from detlight.openmmlab.legacy import apply_legacy_fixes

        apply_legacy_fixes()  # numpy >= 1.24 in mmdet's recall evaluation, CPU device defaults
        log.info("data.%s: %s with %d samples", name, type(dataset).__name__, len(dataset))
        return dataset

    def dataset(self, name: str) -> Any:
        """The built dataset of split ``name`` (mmdet's object: ``CLASSES``, ``flag``, ``evaluate``)."""
        if name not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[name])
        if name not in self.datasets:
            raise DatasetError(f"No `data.{name}` split is configured.")
        return self.datasets[name]

    @property
    def CLASSES(self) -> tuple[str, ...] | None:  # mmdet's attribute name
        """Class names of the first built dataset (``None`` before any is built)."""
        for name in ("train", "val", "test"):
            if name in self.datasets:
                classes = getattr(self.datasets[name], "CLASSES", None)
                return tuple(classes) if classes is not None else None
        return None

    # ------------------------------------------------------------------ loaders
    def make_sampler(self, dataset: Dataset, shuffle: bool, repeat: int = 1) -> Sampler[int]:  # type: ignore[override]
        """Train: :class:`GroupSampler` over the dataset's ``flag`` (when it has one); else detlight's sampler."""
        base = dataset.dataset if isinstance(dataset, _Indexed) else dataset
        flag = getattr(base, "flag", None)
        if shuffle and flag is not None:
            rank, world_size = self._dist_info()
            return GroupSampler(np.asarray(flag), self.samples_per_gpu, seed=self.seed, rank=rank,
                                world_size=world_size)
        return super().make_sampler(dataset, shuffle, repeat)

    def make_loader(self, dataset: Dataset, sampler: Sampler[int], batch_size: int, stateful: bool = False) -> Any:
        """detlight's loader (seeded workers, resumable) over the dataset with sample indices in the metas."""
        return super().make_loader(_Indexed(dataset), sampler, batch_size, stateful)

    def val_dataloader(self) -> Any:
        """Val loader in dataset order; the model's dataset evaluator is pointed at this dataset."""
        self._bind_evaluator("val")
        return super().val_dataloader()

    def test_dataloader(self) -> Any:
        """Test loader in dataset order; the model's dataset evaluator is pointed at this dataset."""
        self._bind_evaluator("test")
        return super().test_dataloader()

    def _bind_evaluator(self, name: str) -> None:
        trainer = self.trainer
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        evaluator: Any = getattr(module, "evaluator", None)
        if hasattr(evaluator, "bind_dataset") and self.has_split(name):
            evaluator.bind_dataset(self.dataset(name))

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """``MMDataParallel.scatter``: see :func:`unwrap_batch`."""
        return unwrap_batch(batch, device)
