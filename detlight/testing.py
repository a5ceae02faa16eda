"""Small, fast building blocks for testing callbacks, hooks and models with detlight.

Replaces: the throw-away toy detectors and runners that mmcv/mmdet tests build case by case; the counterpart of
Lightning's ``lightning.pytorch.demos.boring_classes`` (``BoringModel``, ``BoringDataModule``) for detlight's
detector contract (:mod:`detlight.models.contract`).

- :class:`BoringDetector`: a tiny mmdet-contract detector (``forward_train`` -> ``{"loss_cls", "acc"}``,
  ``simple_test`` -> one box per image, ``set_epoch``), deterministic and quick on CPU.
- :class:`BoringDataset` / :func:`boring_loader` / :class:`BoringDataModule`: a few synthetic images, already
  collated in detlight's batch layout, the same for the same ``seed``.
- :func:`boring_module`: a :class:`~detlight.module.DetectorModule` around a :class:`BoringDetector`.
- :func:`boring_trainer`: a quiet CPU ``Trainer`` (no logger, progress bar, model summary or checkpoints; a few
  batches per epoch; a temporary run directory unless one is given).

Example:
    >>> import tempfile
    >>> from detlight.testing import BoringDataModule, boring_module, boring_trainer
    >>> module = boring_module()
    >>> before = module.model.fc.weight.detach().clone()
    >>> with tempfile.TemporaryDirectory() as root:
    ...     trainer = boring_trainer(root, max_epochs=1)
    ...     trainer.fit(module, datamodule=BoringDataModule())
    >>> trainer.global_step, bool((module.model.fc.weight != before).any())
    (4, True)
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from os import PathLike
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics import Metric

from detlight.module import DetectorModule

__all__ = ["BoringDataModule", "BoringDataset", "BoringDetector", "boring_loader", "boring_module", "boring_trainer"]


class BoringDetector(nn.Module):
    """The smallest detector that follows detlight's mmdet contract.

    Features are ``BatchNorm1d(Linear(3, 2)(mean colour))``; the loss pulls them towards 1, so every step changes
    the weights and the BatchNorm running statistics (what checkpoint, EMA and buffer-sync callbacks look at).

    Args:
        num_classes: read by :class:`~detlight.callbacks.NumClassCheck`; predictions are always class 0.

    Attributes:
        epochs_seen: the epochs passed to :meth:`set_epoch` (mmdet's ``SetEpochInfoHook``), in call order.
    """

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.fc = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)
        self.epochs_seen: list[int] = []

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """``[N, 2]`` features of a ``[N, 3, H, W]`` image batch."""
        return self.norm(self.fc(img.mean(dim=(2, 3))))

    def forward_train(self, img: torch.Tensor, img_metas: list[dict[str, Any]], gt_bboxes: Any = None,
                      gt_labels: Any = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        """mmdet ``forward_train``: a loss (``loss_cls``) and a logged value that is not a loss (``acc``)."""
        features = self.features(img)
        return {"loss_cls": (features - 1.0).pow(2).mean(), "acc": features.detach()[:, 0].mean()}

    def simple_test(self, img: torch.Tensor, img_metas: list[dict[str, Any]],
                    rescale: bool = True) -> list[dict[str, torch.Tensor]]:
        """One detection per image: box ``[0, 0, 2, 2]``, class 0, a score that depends on the image."""
        scores = self.features(img).sigmoid()[:, 0]
        return [{"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "scores": s.reshape(1),
                 "labels": torch.zeros(1, dtype=torch.int64)} for s in scores]

    def set_epoch(self, epoch: int) -> None:
        """mmdet's ``model.set_epoch`` (called by :class:`~detlight.callbacks.SetEpochInfo`); recorded."""
        self.epochs_seen.append(epoch)


class BoringDataset(Dataset):
    """Pre-collated batches in detlight's layout; use with ``DataLoader(batch_size=None)`` (:func:`boring_loader`).

    Each image is ``[3, image_size, image_size]`` uniform noise with one ground-truth box ``[0, 0, 2, 2]`` of class 0.

    Args:
        num_batches: batches in the dataset.
        batch_size: images per batch.
        seed: the same seed gives the same images.
        classes: ``CLASSES``, as an mmdet dataset has them.
        nan_at: index of a batch whose first pixel is NaN (to test non-finite loss handling).
        image_size: image height and width.
    """

    def __init__(self, num_batches: int = 4, batch_size: int = 2, seed: int = 0, classes: tuple[str, ...] = ("a", "b"),
                 nan_at: int | None = None, image_size: int = 4) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.CLASSES = classes
        self.batches: list[dict[str, Any]] = []
        shape = (image_size, image_size, 3)
        for i in range(num_batches):
            img = torch.rand(batch_size, 3, image_size, image_size, generator=generator)
            if nan_at == i:
                img[0, 0, 0, 0] = float("nan")
            metas = [{"image_id": i * batch_size + j, "img_shape": shape, "ori_shape": shape,
                      "scale_factor": [1.0, 1.0, 1.0, 1.0], "flip": False} for j in range(batch_size)]
            self.batches.append({"img": img, "img_metas": metas,
                                 "gt_bboxes": [torch.tensor([[0.0, 0.0, 2.0, 2.0]])] * batch_size,
                                 "gt_labels": [torch.zeros(1, dtype=torch.int64)] * batch_size})

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.batches[index]


def boring_loader(num_batches: int = 4, sampler: Any = None, **kwargs: Any) -> DataLoader:
    """A ``DataLoader`` over a :class:`BoringDataset` (keyword arguments go to it), in order unless ``sampler``."""
    return DataLoader(BoringDataset(num_batches, **kwargs), batch_size=None, shuffle=False, sampler=sampler)


class BoringDataModule(pl.LightningDataModule):
    """A datamodule of :class:`BoringDataset` s: ``num_batches`` for training, ``val_batches`` for val/test/predict.

    Args:
        num_batches: training batches per epoch.
        val_batches: batches of the validation, test and predict loaders.
        batch_size: images per batch.
        seed: seed of the training images (evaluation images use ``seed + 1``).
        classes: ``CLASSES`` of the datamodule and of its datasets.
        image_size: image height and width.
    """

    def __init__(self, num_batches: int = 4, val_batches: int = 2, batch_size: int = 2, seed: int = 0,
                 classes: tuple[str, ...] = ("a", "b"), image_size: int = 4) -> None:
        super().__init__()
        self.num_batches, self.val_batches, self.batch_size = num_batches, val_batches, batch_size
        self.seed, self.image_size = seed, image_size
        self.CLASSES = classes
        self.samples_per_gpu = batch_size  # what `auto_scale_lr` reads from a datamodule

    def _loader(self, num_batches: int, seed: int) -> DataLoader:
        return boring_loader(num_batches, batch_size=self.batch_size, seed=seed, classes=self.CLASSES,
                             image_size=self.image_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.num_batches, self.seed)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_batches, self.seed + 1)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_batches, self.seed + 1)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.val_batches, self.seed + 1)


def boring_module(num_classes: int = 2, lr: float = 0.1, evaluator: Metric | None = None, seed: int = 0,
                  **kwargs: Any) -> DetectorModule:
    """A :class:`~detlight.module.DetectorModule` around a :class:`BoringDetector` (weights from ``seed``), trained
    with SGD (``lr``, momentum 0.9). Other keyword arguments go to ``DetectorModule``."""
    torch.manual_seed(seed)
    return DetectorModule(BoringDetector(num_classes), optimizer={"type": "SGD", "lr": lr, "momentum": 0.9},
                          evaluator=evaluator, **kwargs)


def boring_trainer(root: str | PathLike[str] | None = None, callbacks: Sequence[pl.Callback] = (), max_epochs: int | None = 1,
                   limit_batches: int | float | None = 4, **kwargs: Any) -> pl.Trainer:
    """A quiet CPU ``Trainer`` for tests; any ``Trainer`` argument in ``kwargs`` wins over these defaults.

    Args:
        root: the run directory (``default_root_dir``); a new temporary directory when None.
        callbacks: the callbacks under test.
        max_epochs: epochs to train (None: the Trainer's default, e.g. when ``max_steps`` decides).
        limit_batches: ``limit_{train,val,test,predict}_batches``; None uses every batch.
        **kwargs: other ``Trainer`` arguments, e.g. ``enable_checkpointing=True`` or ``logger=CSVLogger(...)``.
    """
    args: dict[str, Any] = dict(
        default_root_dir=str(root) if root is not None else tempfile.mkdtemp(prefix="detlight-test-"),
        max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0, use_distributed_sampler=False,
    )
    if limit_batches is not None:
        for stage in ("train", "val", "test", "predict"):
            args[f"limit_{stage}_batches"] = limit_batches
    args.update(kwargs)
    return pl.Trainer(callbacks=list(callbacks), **args)
