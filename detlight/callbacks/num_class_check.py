"""Check that the heads' ``num_classes`` match the dataset's ``CLASSES``.

Replaces: mmdet ``NumClassCheckHook`` (docs/mmcv-semantics.md §2.9).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch import nn
from typing_extensions import override

from detlight.callbacks.checkpoint import bare_model
from detlight.exceptions import ConfigError

__all__ = ["DEFAULT_NUM_CLASS_EXCLUDE", "NumClassCheck", "check_num_classes"]

log = logging.getLogger(__name__)


#: mmdet skips these (their ``num_classes`` is not the dataset's: RPN is class-agnostic, VGG is ImageNet's)
DEFAULT_NUM_CLASS_EXCLUDE: tuple[str, ...] = ("RPNHead", "VGG", "FusedSemanticHead", "GARPNHead")


class NumClassCheck(Callback):
    """mmdet ``NumClassCheckHook``: every submodule's ``num_classes`` must equal ``len(dataset.CLASSES)``.

    Checked at the start of each train epoch (training set) and validation epoch (validation sets). A dataset
    without ``CLASSES`` only gets a warning, as in mmdet.

    Args:
        exclude: class names of modules whose ``num_classes`` is not the dataset's; subclasses are excluded too, as
            mmdet's ``isinstance`` check does.
    """

    def __init__(self, exclude: Sequence[str] = DEFAULT_NUM_CLASS_EXCLUDE) -> None:
        self.exclude = tuple(exclude)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(bare_model(pl_module), [getattr(trainer.train_dataloader, "dataset", None)])

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaders = trainer.val_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        self._check(bare_model(pl_module), [getattr(dl, "dataset", None) for dl in loaders])

    def _check(self, model: nn.Module, datasets: Sequence[Any]) -> None:
        for dataset in datasets:
            if dataset is not None:
                check_num_classes(model, dataset, self.exclude)


def _excluded(module: nn.Module, exclude: Sequence[str]) -> bool:
    """mmdet's ``isinstance`` test, by class name: the module's class or one of its bases is named in ``exclude``
    (``SSDVGG`` is a ``VGG``, ``StageCascadeRPNHead`` an ``RPNHead``)."""
    return any(cls.__name__ in exclude for cls in type(module).__mro__)


def check_num_classes(model: nn.Module, dataset: Any, exclude: Sequence[str] = DEFAULT_NUM_CLASS_EXCLUDE) -> None:
    """Raise ``ValueError`` naming the first module whose ``num_classes`` differs from ``len(dataset.CLASSES)``."""
    name = type(dataset).__name__
    classes = getattr(dataset, "CLASSES", None)
    if classes is None:
        log.warning("Please set `CLASSES` in the %s and check if it is consistent with the `num_classes` of head",
                    name)
        return
    if isinstance(classes, str):
        raise ConfigError(f"`CLASSES` in {name} should be a tuple of str, got the string {classes!r}. Add a comma "
                          f"if there is one class: CLASSES = ({classes!r},)")
    for path, module in model.named_modules():
        num = getattr(module, "num_classes", None)
        if isinstance(num, int) and not _excluded(module, exclude) and num != len(classes):
            raise ConfigError(
                f"The `num_classes` ({num}) of {type(module).__name__} `{path or 'model'}` does not match the length "
                f"of `CLASSES` ({len(classes)}) in {name}: {tuple(classes)}. Set num_classes: {len(classes)}."
            )
