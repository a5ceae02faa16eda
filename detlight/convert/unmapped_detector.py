"""The ``model.model`` a converted config gets for an mmdet detector type detlight cannot build.

Replaces: mmdet's registry error (``KeyError: 'CascadeRCNN is not in the models registry'``) at ``build_detector``:
the converter (:mod:`detlight.convert.model_map`) writes this class with its message, and building it stops the run
with that message, instead of jsonargparse's ``required: fit.model.model``.
"""

from __future__ import annotations

from torch import nn

from detlight.exceptions import ConfigError

__all__ = ["UnmappedDetector"]


class UnmappedDetector(nn.Module):
    """Stands in a converted YAML for a detector type detlight cannot build; building it stops the run.

    Args:
        mmdet_type: the mmdet ``model.type``.
        message: the conversion's message (the type, the nearest supported family, what to do).

    Raises:
        ConfigError: always, with ``message``.
    """

    def __init__(self, mmdet_type: str, message: str) -> None:
        super().__init__()
        raise ConfigError(message)
