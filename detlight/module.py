"""The LightningModule that stands where mmcv's runner and mmdet's ``train_detector`` stood.

Replaces: ``EpochBasedRunner.run_iter`` (``model.train_step`` -> ``log_buffer.update`` -> ``runner.outputs``),
``OptimizerHook`` (backward / clip / step, through Lightning's automatic optimization plus
:meth:`DetectorModule.configure_gradient_clipping`), ``build_optimizer`` and ``EvalHook``'s evaluation pass.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import Metric

from detlight.exceptions import CheckpointError, ConfigError, ModelContractError
from detlight.logbuffer import LogBuffer
from detlight.models.contract import DetectorAdapter
from detlight.upstream_internals import attached_trainer

__all__ = ["DetectorModule"]

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER: dict[str, Any] = {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}


class DetectorModule(pl.LightningModule):
    """Trains any detector that follows the mmdet or the torchvision contract (see :mod:`detlight.models.contract`).

    Replaces: mmcv's runner loop around ``model.train_step``. Each training step calls the detector, parses its
    losses as mmdet's ``_parse_losses`` does, feeds :attr:`log_buffer` (device tensors, no host sync) and returns
    ``{"loss", "log_vars", "num_samples"}``, which is also kept as :attr:`last_outputs` (mmcv ``runner.outputs``).
    Lightning then does zero_grad -> backward -> clip -> step. Validation runs inference and feeds :attr:`evaluator`;
    its results are logged as ``val/<key>`` (``val/bbox_mAP``, ...).

    Args:
        model: the detector (``class_path`` in YAML).
        optimizer: mmcv ``optimizer`` dict: ``type`` (a ``torch.optim`` name or an import path), its kwargs, and
            optionally ``paramwise_cfg``.
        grad_clip: mmcv ``optimizer_config.grad_clip``: ``{max_norm, norm_type}``. When set, the gradient norm is
            clipped before each optimizer step and ``grad_norm`` is logged, as mmcv's ``OptimizerHook`` does.
        evaluator: a torchmetrics ``Metric`` with ``update(predictions, batch)``; defaults to COCO box mAP.
        auto_scale_lr: mmdet ``auto_scale_lr``: ``{enable, base_batch_size}``; the lr is multiplied by
            ``world_size * samples_per_gpu / base_batch_size`` before the optimizer is built.
        load_from: mmcv ``load_from``: weights only, non-strict, ``module.`` prefixes stripped, read with
            ``weights_only=True``. Applied once at the start of ``fit``/``validate``/``test``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: dict[str, Any] | None = None,
        grad_clip: dict[str, float] | None = None,
        evaluator: Metric | None = None,
        auto_scale_lr: dict[str, Any] | None = None,
        load_from: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"Expected `model.model` to be a torch.nn.Module, but got {type(model).__name__}")
        self.model = model
        self.adapter = DetectorAdapter(model)
        self.optimizer_cfg: dict[str, Any] = dict(optimizer if optimizer is not None else DEFAULT_OPTIMIZER)
        if "type" not in self.optimizer_cfg:
            raise ConfigError("`model.optimizer` needs a `type` key, e.g. {type: SGD, lr: 0.02, momentum: 0.9}")
        self.grad_clip = _check_grad_clip(grad_clip)
        if evaluator is None:
            from detlight.metrics.coco import CocoMeanAP

            # Mask detectors are evaluated on boxes and masks (mmdet's metric=['bbox', 'segm']).
            evaluator = CocoMeanAP(iou_types=("bbox", "segm") if "masks" in self.adapter.needs else ("bbox",))
        self.evaluator = evaluator
        self.auto_scale_lr = dict(auto_scale_lr) if auto_scale_lr else None
        self.load_from = load_from
        self._weights_loaded = False
        self.log_buffer = LogBuffer()
        self.last_outputs: dict[str, Any] | None = None
        self._inputs_checked = False
        #: Set by :class:`detlight.callbacks.workflow.Workflow` for a ``('val', n)`` workflow phase: validation then also runs
        #: the detector's losses (mmcv ``val_step``) into :attr:`val_log_buffer` / :attr:`last_val_outputs`, logged
        #: as ``val/<loss key>`` at the end of the validation epoch.
        self.val_losses = False
        #: Set by the Workflow of an iteration-based run: the phase's losses come from the first ``n`` val batches
        #: only (an evaluation due at the same iteration runs the whole loader). ``None``: every batch.
        self.val_phase_batches: int | None = None
        self.val_log_buffer = LogBuffer()
        self.last_val_outputs: dict[str, Any] | None = None
        #: evaluator results of the last validation epoch, as python floats (mmcv's ``eval_res``)
        self.eval_results: OrderedDict[str, float] = OrderedDict()
        #: Cleared by :class:`detlight.callbacks.Evaluation` for a validation run that only the ``('val', n)``
        #: workflow phase asked for: the evaluator then neither updates nor reports (mmcv ran no EvalHook there).
        self.evaluate = True

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        """Check the head against the dataset classes (mmdet ``NumClassCheckHook``) and apply ``load_from``."""
        self._check_num_classes()
        if self.load_from and not self._weights_loaded:
            load_weights(self.model, self.load_from)
            self._weights_loaded = True

    def _check_num_classes(self) -> None:
        datamodule = getattr(attached_trainer(self), "datamodule", None)
        if datamodule is None or getattr(datamodule, "CLASSES", None) is None:
            return
        if getattr(datamodule, "num_class_check_by_hook", False):
            return  # OpenMMLab configs: their own NumClassCheckHook (custom_hooks) checks, as in train_detector
        head = self.adapter.num_classes()
        if head is not None:  # a declared torchvision family: its head is read, background accounted for
            self._check_family_classes(head, len(datamodule.CLASSES))
            return
        from detlight.callbacks.num_class_check import check_num_classes

        check_num_classes(self.model, datamodule)

    def _check_family_classes(self, head: int, dataset: int) -> None:
        if head == dataset:
            return
        offset = self.adapter.label_offset
        built = head + offset
        if offset:
            how = (f"its classifier has {built} outputs, index 0 being background, so it needs num_classes="
                   f"{dataset + 1} when built directly by torchvision (a builder as class_path), or use "
                   f"`class_path: detlight.models.torchvision_detector` with `num_classes: {dataset}` (the dataset's "
                   "count; the background class is added for you).")
        else:
            how = f"its classifier has {built} outputs; set `num_classes: {dataset}`."
        raise ModelContractError(
            f"{self.adapter.model_name} predicts {head} classes but the dataset has {dataset}: {how}")

    def configure_callbacks(self) -> list[pl.Callback]:
        """``predict`` runs get a :class:`~detlight.callbacks.PredictionWriter` unless one is configured already.

        So ``detlight predict`` always leaves COCO results json (2D) or KITTI label files (3D) in the run directory;
        configure your own ``PredictionWriter`` (``output``, ``score_thr``) or another ``BasePredictionWriter`` in
        ``trainer.callbacks`` to replace it.
        """
        from lightning.pytorch.callbacks import BasePredictionWriter

        if attached_trainer(self) is None or self.trainer.state.fn != "predict":
            return []
        if any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):  # type: ignore[attr-defined]
            return []
        from detlight.callbacks.prediction_writer import PredictionWriter

        return [PredictionWriter()]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Build the optimizer from the mmcv dict (param-wise multipliers and ``auto_scale_lr`` included)."""
        from detlight.optim.builder import build_optimizer, scale_lr

        cfg = dict(self.optimizer_cfg)
        if self.auto_scale_lr and self.auto_scale_lr.get("enable", False):
            datamodule = getattr(self.trainer, "datamodule", None)
            samples_per_gpu = getattr(datamodule, "samples_per_gpu", None)
            if samples_per_gpu is None:
                raise ConfigError("`model.auto_scale_lr` needs a datamodule with `samples_per_gpu`")
            cfg, _ = scale_lr(cfg, self.auto_scale_lr, self.trainer.world_size, samples_per_gpu)  # logs the factor
        return build_optimizer(self.model, cfg)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        """``model.train()``, as mmcv's runner calls it at the start of every train epoch.

        Lightning 2.x never calls it: a model keeps the modes it was built with, and validation restores those. A
        model whose ``train()`` does more than set the flag (mmdet's ``ResNet`` with ``norm_eval=True`` puts its
        BatchNorm layers back in eval mode there, and re-freezes ``frozen_stages``) would otherwise train with
        BatchNorm statistics that the config froze. Runs after the callbacks' ``on_train_epoch_start`` (mmcv:
        before ``before_train_epoch``), see docs/mmcv-semantics.md §4.2.
        """
        self.model.train()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        trainer = attached_trainer(self)
        optimizer = self.trainer.optimizers[0] if trainer is not None and self.trainer.optimizers else None
        if not self._inputs_checked:  # before the first forward: a model made for other data is named as such
            datamodule = getattr(trainer, "datamodule", None)
            self.adapter.check_inputs(batch, f"`{type(datamodule).__name__}`" if datamodule is not None
                                      else "the train loader")
            self._inputs_checked = True
        outputs = self.adapter.losses(batch, optimizer)
        self.log_buffer.update(outputs["log_vars"], outputs["num_samples"])
        self.last_outputs = outputs
        return outputs

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """mmcv ``OptimizerHook`` clipping: ``clip_grad_norm_(**grad_clip)`` and ``grad_norm`` into the log buffer.

        Runs after AMP unscaling and DDP gradient reduction. Without ``grad_clip`` the Trainer's own
        ``gradient_clip_val`` / ``gradient_clip_algorithm`` apply unchanged.
        """
        if self.grad_clip is None:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"]
                  if p.requires_grad and p.grad is not None]
        if not params:
            return
        norm = torch.nn.utils.clip_grad_norm_(params, **self.grad_clip)
        num_samples = self.last_outputs["num_samples"] if self.last_outputs else 1
        self.log_buffer.update({"grad_norm": norm}, num_samples)

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.val_losses and (self.val_phase_batches is None or batch_idx < self.val_phase_batches):
            outputs = self.adapter.val_losses(batch)
            self.val_log_buffer.update(outputs["log_vars"], outputs["num_samples"])
            self.last_val_outputs = outputs
        if self.evaluate:
            self.evaluator.update(self.adapter.predict(batch), batch)

    def on_validation_epoch_end(self) -> None:
        # val_history is filled only by a val phase's batches (`val_losses` may be off again after its n batches)
        if not self.trainer.sanity_checking and self.val_log_buffer.val_history:
            # Callbacks' epoch-end hooks (mmcv-style after_val_epoch) ran first and saw the whole buffer.
            losses = self.val_log_buffer.averages()
            self.log_dict({f"val/{k}": v for k, v in losses.items() if k not in ("time", "data_time")}, sync_dist=True,
                          logger=self._log_to_loggers())
        self.val_log_buffer.clear()
        if self.evaluate:
            self._log_eval("val")
        else:
            self.eval_results = OrderedDict()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluator.update(self.adapter.predict(batch), batch)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        return [dict(det, img_meta=meta) for det, meta in zip(self.adapter.predict(batch), batch["img_metas"])]

    def _log_eval(self, stage: str) -> None:
        if self.trainer.sanity_checking:
            self.evaluator.reset()
            return
        results = self.evaluator.compute()
        self.evaluator.reset()
        values = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in results.items()}
        host = torch.stack(list(values.values())).tolist() if values else []
        self.eval_results = OrderedDict(zip(values, host))
        # The evaluator already reduced across ranks, so every rank holds the same values; sync_dist only averages
        # identical numbers (exact), once per evaluation, and keeps Lightning from warning under DDP.
        # When an IntervalLogger writes eval results to the loggers at mmcv's step, self.log only feeds
        # ModelCheckpoint / EarlyStopping / the progress bar, so each TensorBoard tag keeps a single series.
        self.log_dict({f"{stage}/{k}": v for k, v in self.eval_results.items()}, sync_dist=True,
                      logger=self._log_to_loggers())

    def _log_to_loggers(self) -> bool:
        # Interval loggers write eval results themselves during fit only; validate/test keep Lightning's path, so
        # trainer.validate() / test() still return the metrics.
        if self.trainer.state.fn != "fit":
            return True
        # Trainer.callbacks is assigned by Lightning's callback connector, not declared on the class
        callbacks = self.trainer.callbacks  # type: ignore[attr-defined]
        return not any(getattr(cb, "log_eval_results", False) for cb in callbacks)


def _check_grad_clip(grad_clip: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if grad_clip is None:
        return None
    allowed = {"max_norm", "norm_type", "error_if_nonfinite", "foreach"}
    unknown = set(grad_clip) - allowed
    if unknown:
        raise ConfigError(f"Unknown key(s) {sorted(unknown)} in `model.grad_clip`; accepted: {sorted(allowed)}")
    if "max_norm" not in grad_clip:
        raise ConfigError("`model.grad_clip` needs `max_norm`, e.g. {max_norm: 35, norm_type: 2}")
    if float(grad_clip["max_norm"]) <= 0:
        raise ConfigError(f"`model.grad_clip.max_norm` must be > 0, got {grad_clip['max_norm']}")
    return dict(grad_clip)


def load_weights(model: nn.Module, path: str, revise_keys: tuple[tuple[str, str], ...] = ((r"^module\.", ""),)) -> None:
    """mmcv ``load_checkpoint(..., strict=False)`` for ``load_from``: weights only, safe unpickling.

    Reads mmcv ``.pth`` files (``state_dict`` + ``meta``), detlight/Lightning ``.ckpt`` files (the ``model.`` prefix of
    :class:`DetectorModule` is stripped) and bare state dicts.
    """
    if "://" in path and not os.path.isfile(path):
        raise CheckpointError(f"`load_from` is {path!r}: detlight does not download checkpoints, the file must be "
                              "local; download it once and set `load_from` to its path")
    if not os.path.isfile(path):
        raise CheckpointError(f"`load_from` checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for corrupt or unsafe files
        raise CheckpointError(
            f"Cannot read `load_from` checkpoint {path} with weights_only=True ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). detlight only loads plain tensors and containers; "
            "re-save the weights with torch.save(model.state_dict(), path)."
        ) from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"`load_from` checkpoint {path} holds no state_dict")
    if any(k.startswith("model.") for k in state) and not any(k in model.state_dict() for k in state):
        revise_keys = revise_keys + ((r"^model\.", ""),)
    revised = OrderedDict()
    for key, value in state.items():
        for pattern, repl in revise_keys:
            key = re.sub(pattern, repl, key)
        revised[key] = value
    missing, unexpected = model.load_state_dict(revised, strict=False)
    if missing or unexpected:
        log.warning("load_from %s: %d missing key(s) %s, %d unexpected key(s) %s", path, len(missing),
                    missing[:5], len(unexpected), unexpected[:5])
    else:
        log.info("load_from %s: all %d tensors loaded", path, len(revised))
