"""The checkpoint helpers of ``mmcv.runner`` that hook files import, for detlight's dependency-free mmcv shim.

Replaces: ``mmcv.runner.checkpoint`` (1.7) for users without mmcv: ``load_state_dict``, ``load_checkpoint``,
``_load_checkpoint``, ``save_checkpoint``, ``weights_to_cpu``, ``get_state_dict`` and ``CheckpointLoader``, written
to mmcv's documented behaviour (see :mod:`detlight.compat.mmcv_shim` for how the shim is installed). They read and
write mmcv's ``.pth`` layout (``{"meta", "state_dict", "optimizer"}``), which is also what detlight's
``epoch_N.pth`` / ``runner.save_checkpoint`` files hold, and read detlight's Lightning ``.ckpt`` (its
``state_dict`` keys lose the module's ``model.`` prefix when the target model has no such attribute).

Limits: local files only (mmcv's ``http://``, ``torchvision://``, ``open-mmlab://``, ``s3://`` / petrel schemes raise a
``ValueError`` naming the scheme); ``file_client_args`` is accepted and ignored; no ``revise_keys`` beyond regular
expressions on the key (as mmcv).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from detlight.compat.mmcv_shim_utils import get_dist_info, is_module_wrapper

__all__ = ["CheckpointLoader", "_load_checkpoint", "get_state_dict", "load_checkpoint", "load_state_dict",
           "save_checkpoint", "weights_to_cpu"]

#: mmcv's ``load_checkpoint`` default: drop a ``module.`` prefix (a DataParallel / DDP checkpoint).
DEFAULT_REVISE_KEYS: tuple[tuple[str, str], ...] = ((r"^module\.", ""),)


def _unwrap(module: nn.Module) -> nn.Module:
    inner = getattr(module, "module", None)
    while is_module_wrapper(module) and isinstance(inner, nn.Module):
        module, inner = inner, getattr(inner, "module", None)
    return module


def _report(message: str, logger: Any) -> None:
    if isinstance(logger, logging.Logger):
        logger.warning(message)
    elif isinstance(logger, str) and logger != "silent":
        logging.getLogger(logger).warning(message)
    elif logger is None:
        print(message)


def load_state_dict(module: nn.Module, state_dict: dict[str, Any], strict: bool = False, logger: Any = None) -> None:
    """Copy ``state_dict`` into ``module`` (its wrapped module, when a wrapper) as mmcv 1.7 does.

    Keys the module lacks, keys the dict lacks (``num_batches_tracked`` buffers aside) and shape mismatches are
    collected into one message (mmcv's wording: ``unexpected key in source state_dict``, ``missing keys in source
    state_dict``, ``size mismatch for ...``); matching entries are copied in every case.

    Args:
        module: the model.
        state_dict: name -> tensor.
        strict: raise instead of warning when the message is not empty.
        logger: a ``logging.Logger`` or logger name to warn through; ``None`` prints; ``"silent"`` says nothing.

    Raises:
        RuntimeError: ``strict`` and some key is missing, unexpected or of another shape (rank 0's message).
    """
    target = _unwrap(module)
    own = target.state_dict()
    wrong_shape = {key for key, value in state_dict.items()
                   if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape}
    mismatched = [f"size mismatch for {key}: copying a param with shape {tuple(state_dict[key].shape)} from "
                  f"checkpoint, the shape in current model is {tuple(own[key].shape)}." for key in sorted(wrong_shape)]
    result = target.load_state_dict({k: v for k, v in state_dict.items() if k not in wrong_shape}, strict=False)
    # a key of the wrong shape is present, not missing (torch's own loader reports it the same way)
    missing = [key for key in result.missing_keys if key not in wrong_shape and "num_batches_tracked" not in key]
    lines: list[str] = []
    if result.unexpected_keys:
        lines.append(f"unexpected key in source state_dict: {', '.join(result.unexpected_keys)}\n")
    if missing:
        lines.append(f"missing keys in source state_dict: {', '.join(missing)}\n")
    lines += mismatched
    rank, _ = get_dist_info()
    if lines and rank == 0:
        message = "\n".join(["The model and loaded state dict do not match exactly\n", *lines])
        if strict:
            raise RuntimeError(message)
        _report(message, logger)


def _load_checkpoint(filename: str | os.PathLike[str], map_location: Any = None, logger: Any = None) -> Any:
    """Read a checkpoint file (local paths only; see the module's limits).

    Raises:
        ValueError: a remote scheme (``http://``, ``open-mmlab://``, ...), which the shim does not fetch.
        FileNotFoundError: no file at ``filename`` (mmcv's ``IOError`` subclass).
    """
    name = os.fspath(filename)
    scheme = re.match(r"^([a-z][a-z0-9+.-]*)://", name)
    if scheme:
        raise ValueError(f"detlight's mmcv shim loads local checkpoint files only, not `{scheme.group(1)}://` "
                         f"({name}): download it first, or install mmcv 1.x")
    if name.startswith("~"):
        name = os.path.expanduser(name)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"{name} is not a checkpoint file")
    return torch.load(name, map_location=map_location, weights_only=False)


def load_checkpoint(model: nn.Module, filename: str | os.PathLike[str], map_location: Any = None,
                    strict: bool = False, logger: Any = None,
                    revise_keys: Sequence[tuple[str, str]] = DEFAULT_REVISE_KEYS) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model`` and return the checkpoint (mmcv 1.7's ``load_checkpoint``).

    The weights are ``checkpoint["state_dict"]`` (or the checkpoint itself when it has none), each key rewritten by
    ``revise_keys`` (``re.sub(pattern, replacement, key)`` in turn; by default a leading ``module.`` is dropped).
    A detlight Lightning ``.ckpt`` (``pytorch-lightning_version`` in it, keys ``model.*``) loads into the bare model.

    Raises:
        RuntimeError: the file holds no dict; or ``strict`` and the keys do not match (see :func:`load_state_dict`).
    """
    checkpoint = _load_checkpoint(filename, map_location, logger)
    if not isinstance(checkpoint, dict):
        raise RuntimeError(f"No state_dict found in checkpoint file {os.fspath(filename)}")
    state_dict = checkpoint.get("state_dict", checkpoint)
    metadata = getattr(state_dict, "_metadata", OrderedDict())
    patterns = list(revise_keys)
    if "pytorch-lightning_version" in checkpoint and not hasattr(_unwrap(model), "model"):
        patterns.append((r"^model\.", ""))  # a DetectorModule's weights, loaded into the detector itself
    for pattern, replacement in patterns:
        state_dict = OrderedDict((re.sub(pattern, replacement, key), value) for key, value in state_dict.items())
    state_dict._metadata = metadata  # type: ignore[attr-defined]
    load_state_dict(model, state_dict, strict, logger)
    return checkpoint


def weights_to_cpu(state_dict: dict[str, Any]) -> OrderedDict[str, Any]:
    """The same mapping with every tensor copied to the CPU (keeps ``_metadata``, which ``load_state_dict`` reads)."""
    out: OrderedDict[str, Any] = OrderedDict(
        (key, value.cpu() if isinstance(value, torch.Tensor) else value) for key, value in state_dict.items())
    out._metadata = getattr(state_dict, "_metadata", OrderedDict())  # type: ignore[attr-defined]
    return out


def get_state_dict(module: nn.Module, destination: OrderedDict[str, Any] | None = None, prefix: str = "",
                   keep_vars: bool = False) -> OrderedDict[str, Any]:
    """``module.state_dict()`` of the unwrapped model: no ``module.`` of a DataParallel / DDP wrapper in the keys."""
    raw = _unwrap(module).state_dict(prefix=prefix, keep_vars=keep_vars)
    state: OrderedDict[str, Any] = OrderedDict(raw)
    state._metadata = getattr(raw, "_metadata", OrderedDict())  # type: ignore[attr-defined]
    if destination is None:
        return state
    destination.update(state)
    return destination


def save_checkpoint(model: nn.Module, filename: str | os.PathLike[str], optimizer: Any = None,
                    meta: dict[str, Any] | None = None, file_client_args: dict[str, Any] | None = None) -> None:
    """Write mmcv's ``.pth`` layout: ``{"meta": {..., "mmcv_version", "time"[, "CLASSES"]}, "state_dict",
    ["optimizer"]}`` (the weights on the CPU; a dict of optimizers gives a dict of states).

    Raises:
        TypeError: ``meta`` is neither a dict nor ``None`` (mmcv's check).
    """
    from detlight import __version__

    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict or None, but got {type(meta)}")
    # no mmcv is installed when the shim serves this: detlight's version, as detlight's own checkpoints
    meta = {**meta, "mmcv_version": __version__, "detlight_version": __version__, "time": time.asctime()}
    bare = _unwrap(model)
    classes = getattr(bare, "CLASSES", None)
    if classes is not None:
        meta["CLASSES"] = classes
    checkpoint: dict[str, Any] = {"meta": meta, "state_dict": weights_to_cpu(get_state_dict(bare))}
    if isinstance(optimizer, torch.optim.Optimizer):
        checkpoint["optimizer"] = optimizer.state_dict()
    elif isinstance(optimizer, dict):
        checkpoint["optimizer"] = {name: optim.state_dict() for name, optim in optimizer.items()}
    path = os.fspath(filename)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()


class CheckpointLoader:
    """mmcv's ``CheckpointLoader`` for local files: ``CheckpointLoader.load_checkpoint(filename, map_location)``."""

    @classmethod
    def load_checkpoint(cls, filename: str | os.PathLike[str], map_location: Any = None, logger: Any = None) -> Any:
        """See :func:`_load_checkpoint`."""
        return _load_checkpoint(filename, map_location, logger)
