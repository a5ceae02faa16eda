"""mmcv ``.pth`` checkpoints in and out of a run that trains OpenMMLab's own detector.

Replaces: ``runner.resume(cfg.resume_from)`` (weights, optimizer state, ``meta['epoch']`` / ``meta['iter']``) for a
``.pth`` written by mmdet's own runner, which Lightning's ``ckpt_path`` cannot read, and ``save_checkpoint`` for a
finished detlight run: :func:`export_pth` turns a detlight ``.ckpt`` into the ``{meta, state_dict, optimizer}`` file
mmdet's ``init_detector`` / ``load_checkpoint`` read. (``load_from`` needs nothing here: the detector's keys are
mmdet's, so :func:`detlight.module.load_weights` loads an mmdet ``.pth`` as is.)

Limits: the resumed run starts the epoch after ``meta['epoch']`` (mmcv's epoch-based resume); an iteration-based
``.pth`` resumes its iteration count but not the position inside the data. The optimizer state is matched to the
parameters in order (mmcv's optimizer has one parameter group per parameter, detlight's groups them), so the model
must be the one that wrote the file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from detlight.checkpoint_io import atomic_torch_save
from detlight.exceptions import CheckpointError
from detlight.upstream_internals import set_loop_counters

__all__ = ["MMCVResume", "export_pth", "load_pth", "optimizer_state_by_order"]

log = logging.getLogger(__name__)


def load_pth(path: str, key: str = "resume_from") -> dict[str, Any]:
    """Read an mmcv ``.pth`` safely (``weights_only``); refuse URLs and missing files, naming ``key``.

    Raises:
        CheckpointError: a URL, a missing file, or a file without ``state_dict``.
    """
    if "://" in path:
        raise CheckpointError(f"`{key}` is {path!r}: detlight does not download checkpoints, the file must be local")
    if not os.path.isfile(path):
        raise CheckpointError(f"`{key}` checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"Cannot read `{key}` checkpoint {path} with weights_only=True ({type(err).__name__})"
                              ) from None
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(f"`{key}` checkpoint {path} holds no `state_dict` (not an mmcv .pth)")
    return dict(ckpt)


def optimizer_state_by_order(saved: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``saved`` (an optimizer ``state_dict`` of any grouping) re-keyed for ``optimizer``'s groups, by parameter order.

    The per-parameter states (momentum buffers, Adam moments) are kept; the group settings are ``optimizer``'s own
    (the LR / momentum updaters set them at the next iteration anyway).

    Raises:
        CheckpointError: the parameter counts differ.
    """
    saved_ids = [i for group in saved.get("param_groups", []) for i in group["params"]]
    own = optimizer.state_dict()
    own_ids = [i for group in own["param_groups"] for i in group["params"]]
    if len(saved_ids) != len(own_ids):
        raise CheckpointError(f"The checkpoint's optimizer holds {len(saved_ids)} parameters, this model's "
                              f"{len(own_ids)}: it was written by another model")
    state = saved.get("state", {})
    mapped = {new: state[old] for old, new in zip(saved_ids, own_ids) if old in state}
    return {"state": mapped, "param_groups": own["param_groups"]}


class MMCVResume(Callback):
    """mmcv's ``resume_from`` for an mmcv ``.pth``: weights, optimizer state and the epoch / iteration counters.

    Args:
        path: the ``.pth`` file (local).
        resume_optimizer: also restore the optimizer state (mmcv's default).
    """

    def __init__(self, path: str, resume_optimizer: bool = True) -> None:
        self.path = path
        self.resume_optimizer = resume_optimizer

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ckpt = load_pth(self.path)
        model = getattr(pl_module, "model", pl_module)
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ckpt["state_dict"].items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            log.warning("resume_from %s: %d missing key(s) %s, %d unexpected key(s) %s", self.path, len(missing),
                        missing[:5], len(unexpected), unexpected[:5])
        saved_opt = ckpt.get("optimizer")
        if self.resume_optimizer and isinstance(saved_opt, Mapping) and trainer.optimizers:
            if "state" not in saved_opt and len(saved_opt) == 1:  # mmcv's dict of named optimizers
                saved_opt = next(iter(saved_opt.values()))
            optimizer = trainer.optimizers[0]
            optimizer.load_state_dict(optimizer_state_by_order(saved_opt, optimizer))
        meta = ckpt.get("meta") or {}
        epoch, iteration = int(meta.get("epoch", 0)), int(meta.get("iter", 0))
        set_loop_counters(trainer, epoch, iteration)
        log.info("resumed from %s: epoch %d, iter %d", self.path, epoch, iteration)


def export_pth(ckpt: str, out: str, classes: Sequence[str] | None = None, save_optimizer: bool = True) -> str:
    """Write a detlight / Lightning ``.ckpt`` of a :class:`~detlight.module.DetectorModule` as an mmcv ``.pth``.

    The ``state_dict`` is the detector's (``model.`` prefix removed: mmdet's own keys for a detector built by
    :func:`~detlight.openmmlab.detector.openmmlab_detector`), ``meta`` holds ``epoch``, ``iter``, ``time`` and
    ``CLASSES`` (from ``classes``, else from the checkpoint's datamodule hyper-parameters when recorded), and
    ``optimizer`` the first optimizer's state. mmdet's ``init_detector(config, out)`` loads the result.

    Returns:
        ``out``.

    Raises:
        CheckpointError: ``ckpt`` is missing or holds no ``state_dict``.
    """
    if not os.path.isfile(ckpt):
        raise CheckpointError(f"checkpoint not found: {ckpt}")
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = data.get("state_dict") if isinstance(data, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{ckpt} holds no state_dict")
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    meta: dict[str, Any] = {"epoch": int(data.get("epoch", 0)) + 1 if "epoch" in data else 0,
                            "iter": int(data.get("global_step", 0)), "time": time.asctime()}
    if classes is not None:
        meta["CLASSES"] = list(classes)
    out_ckpt: dict[str, Any] = {"meta": meta, "state_dict": weights}
    optimizers = data.get("optimizer_states") or []
    if save_optimizer and optimizers:
        out_ckpt["optimizer"] = optimizers[0]
    atomic_torch_save(out_ckpt, out)
    return out
