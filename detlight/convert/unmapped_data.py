"""The ``data`` a converted config gets for an mmdet dataset type detlight cannot read.

Replaces: mmdet's registry error (``KeyError: 'VOCDataset is not in the dataset registry'``) at ``build_dataset``:
the converter (:mod:`detlight.convert.sections`) writes this class with its message, and building it stops the
run with that message (the dataset type, what detlight reads, what to do), instead of jsonargparse's
``required: data``. The converted YAML keeps the config's batch settings and split paths in a commented ``data:``
block at its end, as the start of the user's own datamodule section.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule

from detlight.exceptions import DatasetError

__all__ = ["UnmappedDataModule"]


class UnmappedDataModule(LightningDataModule):
    """Stands in a converted YAML for a dataset type detlight cannot read; building it stops the run.

    Args:
        dataset_type: the mmdet dataset ``type`` (``VOCDataset``, ``LVISV1Dataset``, ...).
        message: the conversion's message.

    Raises:
        DatasetError: always, with ``message``.
    """

    def __init__(self, dataset_type: str, message: str) -> None:
        super().__init__()
        raise DatasetError(message)
