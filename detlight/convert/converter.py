"""The per-section converter behind :func:`detlight.convert.entry.convert_file`: one resolved mmcv config dict in,
one LightningCLI config dict and its :class:`~detlight.convert.report.ConversionReport` out.

Replaces: what mmdet's ``tools/train.py`` + ``train_detector`` did with the runtime keys of a config (runner, hooks,
optimizer, dist settings, model and data sections). The file-level entry points (``convert_file``,
``convert_to_yaml``, ``convert_py_configs``) stay in :mod:`detlight.convert.entry`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from detlight.compat.hook_table import CALLBACKS as _CB
from detlight.compat.hook_table import CUSTOM_HOOKS, PRIORITIES, lookup_standard_hook
from detlight.convert.config import ConfigError
from detlight.convert.report import ConversionReport
from detlight.convert.report import Status as Status
from detlight.convert.report import _present as _present
from detlight.convert.report import _string_values as _string_values
from detlight.convert.sections import convert_data, convert_model
from detlight.convert.targets import (
    CHECKPOINT,
    CHECKPOINT_ARGS,
    DROPPED_KEYS,
    EVALUATION,
    EVALUATION_ARGS,
    FP16_PLUGIN,
    HELPER_NOTE,
    INTERVAL_LOGGER,
    INTERVAL_LOGGER_ARGS,
    ITER_TIMER,
    LR_UPDATER,
    MMCV_HOOKS,
    MOMENTUM_UPDATER,
    TB_LOGGER,
    TEXT_LOGGER,
    TEXT_LOGGER_ARGS,
    WORKFLOW,
    _check_loss_scale,
)
from detlight.convert.targets import (
    EMA as EMA,
)
from detlight.convert.targets import (
    GRAD_SCALER_ARGS as GRAD_SCALER_ARGS,
)

__all__ = ["convert_config"]


def convert_config(cfg: Mapping[str, Any], source: str) -> tuple[dict[str, Any], ConversionReport]:
    """Convert a resolved mmcv config (from :func:`load_config`) into a LightningCLI config dict.

    Args:
        cfg: the resolved config.
        source: the config's path; its stem names the default work dir (``work_dirs/<stem>``, as mmdet's tools).

    Returns:
        The YAML-ready dict (``seed_everything``, ``trainer``, ``model``, ``data``, ``ckpt_path``) and the report.

    Raises:
        ConfigError: the config is inconsistent in a way mmcv also rejects (``runner`` with both ``max_epochs`` and
            ``max_iters``, ``total_epochs`` disagreeing with ``runner.max_epochs``).
    """
    return _Converter(_plain(cfg), source).run()


def _norm_types(value: Any) -> Iterator[str]:
    """Every ``norm_cfg.type`` in a model config (nested dicts and lists)."""
    if isinstance(value, Mapping):
        norm = value.get("norm_cfg")
        if isinstance(norm, Mapping) and isinstance(norm.get("type"), str):
            yield norm["type"]
        for item in value.values():
            yield from _norm_types(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _norm_types(item)


def _plain(value: Any) -> Any:
    """Tuples become lists and every container is copied, so the YAML has no tuples and no shared anchors."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _pick(src: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: src[k] for k in keys if k in src}


class _Converter:
    """Holds the source config, the output being built and the report; one method per mmcv key."""

    def __init__(self, cfg: dict[str, Any], source: str) -> None:
        self.cfg, self.source = cfg, source
        self.report = ConversionReport(source)
        work_dir = cfg.get("work_dir") or f"work_dirs/{Path(source).stem}"
        self.trainer: dict[str, Any] = {"default_root_dir": work_dir}
        self.model: dict[str, Any] = {}
        self.out: dict[str, Any] = {"seed_everything": 0, "trainer": self.trainer, "model": self.model}
        self.callbacks: list[tuple[int, dict[str, Any]]] = []
        self.by_epoch = True

    def run(self) -> tuple[dict[str, Any], ConversionReport]:
        self._runner()
        handlers = {
            "workflow": self._workflow, "optimizer": self._optimizer, "optimizer_config": self._optimizer_config,
            "fp16": self._fp16, "lr_config": self._lr_config, "momentum_config": self._momentum_config,
            "checkpoint_config": self._checkpoint, "log_config": self._log_config, "evaluation": self._evaluation,
            "custom_hooks": self._custom_hooks, "load_from": self._load_from, "resume_from": self._resume,
            "auto_resume": self._resume, "work_dir": self._work_dir, "seed": self._seed,
            "cudnn_benchmark": self._benchmark, "auto_scale_lr": self._auto_scale_lr, "model": self._model,
            "data": self._data, "dist_params": self._strategy, "find_unused_parameters": self._strategy,
            "device": self._device,
        }
        for key, value in self.cfg.items():
            if key in handlers:
                handlers[key](key, value)
            elif key in DROPPED_KEYS:
                self.report.add(key, "dropped", note=self._dropped_note(key, value))
            elif not self.report.covers(key):
                self.report.add(key, "dropped", note=HELPER_NOTE)
        if not self.by_epoch and "val_check_interval" not in self.trainer:
            max_iters = (self.cfg.get("runner") or {}).get("max_iters")
            self.trainer["val_check_interval"] = max_iters
            self.report.add("evaluation", "approximated", "trainer.val_check_interval",
                            f"not set: mmcv's default EvalHook(interval=1) would evaluate after every iteration; "
                            f"detlight validates once, after iteration {max_iters}")
        self._sync_bn()
        self.trainer.setdefault("use_distributed_sampler", False)
        self.trainer.setdefault("num_sanity_val_steps", 0)
        self.trainer.setdefault("logger", False)
        self._callback(PRIORITIES["LOWEST"], _CB + "preemption.Preemption")  # SIGTERM: checkpoint, exit 0
        if self.callbacks:
            self.trainer["callbacks"] = [cb for _, cb in sorted(self.callbacks, key=lambda pc: pc[0])]
        from detlight.convert.model_map import apply_model_map  # mmdet model types -> torchvision / detlight models

        apply_model_map(self.cfg, self.out, self.report)
        self.out.setdefault("ckpt_path", None)
        return self.out, self.report

    def _callback(self, priority: int, class_path: str, init_args: Mapping[str, Any] | None = None) -> None:
        entry: dict[str, Any] = {"class_path": class_path}
        if init_args:
            entry["init_args"] = dict(init_args)
        self.callbacks.append((priority, entry))

    def _dropped_note(self, key: str, value: Any) -> str:
        if key == "custom_imports" and isinstance(value, Mapping):
            return f"imports {list(value.get('imports', []))} were not run: " + DROPPED_KEYS[key]
        return DROPPED_KEYS[key]

    def _unused(self, key: str, src: Mapping[str, Any], used: Sequence[str], why: str) -> None:
        for sub in src:
            if sub not in used and sub != "type":
                self.report.add(f"{key}.{sub}", "dropped", note=why)

    # ------------------------------------------------------------------------------------------- loop length
    def _runner(self) -> None:
        runner, total = self.cfg.get("runner"), self.cfg.get("total_epochs")
        if runner is None:
            if total is None:
                self.report.add("runner", "dropped", note="absent (and no total_epochs): Lightning's default "
                                "max_epochs=1000 applies; set trainer.max_epochs")
                return
            runner = {"type": "EpochBasedRunner", "max_epochs": total}
        kind = runner.get("type", "EpochBasedRunner")
        if ("max_epochs" in runner) == ("max_iters" in runner):
            raise ConfigError(f"{self.source}: `runner` must set exactly one of max_epochs and max_iters (as mmcv "
                              f"requires), but got {runner}.")
        if total is not None and "max_epochs" in runner and runner["max_epochs"] != total:
            raise ConfigError(f"{self.source}: total_epochs={total} disagrees with runner.max_epochs="
                              f"{runner['max_epochs']}; mmdet requires them equal. Remove total_epochs.")
        if kind == "IterBasedRunner" or "max_iters" in runner:
            self.by_epoch = False
            self.trainer.update(max_steps=runner["max_iters"], max_epochs=-1, check_val_every_n_epoch=None)
            self.report.add("runner", "approximated", "trainer.max_steps",
                            f"IterBasedRunner(max_iters={runner['max_iters']}); max_steps counts optimizer steps, "
                            "which equal iterations only without gradient accumulation")
        else:
            self.trainer["max_epochs"] = runner["max_epochs"]
            self.report.add("runner", "mapped", "trainer.max_epochs", f"EpochBasedRunner({runner['max_epochs']})")
        if kind not in ("EpochBasedRunner", "IterBasedRunner"):
            self.report.add("runner.type", "dropped", note=f"custom runner `{kind}` has no counterpart; only the "
                            "length was kept")
        if total is not None:
            self.report.add("total_epochs", "mapped", "trainer.max_epochs", "legacy spelling of runner.max_epochs")

    def _workflow(self, key: str, value: Any) -> None:
        phases = [tuple(p) for p in value or []]
        if all(mode == "train" for mode, _ in phases):
            self.report.add(key, "mapped", "(Lightning fit loop)", f"{phases}: training only")
            return
        runner = self.cfg.get("runner") or {"type": "EpochBasedRunner", "max_epochs": self.cfg.get("total_epochs")}
        self._callback(PRIORITIES["HIGHEST"], WORKFLOW, {"workflow": [list(p) for p in phases], "runner": runner})
        self.report.add(key, "approximated", WORKFLOW, f"{phases}: the ('val', n) phase is Lightning's validation "
                        "loop computing the detector's losses; it uses the val loader's pipeline (mmdet's tools used "
                        "the train pipeline) and also feeds the evaluator")

    # ------------------------------------------------------------------------------------------ optimization
    def _optimizer(self, key: str, value: Any) -> None:
        optimizer = dict(value)
        constructor = optimizer.pop("constructor", None)
        self.model["optimizer"] = optimizer
        self.report.add(key, "mapped", "model.optimizer", "incl. paramwise_cfg" if "paramwise_cfg" in optimizer else "")
        if constructor not in (None, "DefaultOptimizerConstructor"):
            self.report.add(f"{key}.constructor", "dropped",
                            note=f"custom optimizer constructor `{constructor}`: paramwise_cfg is applied by "
                            "detlight's default constructor; subclass DetectorModule.configure_optimizers instead")

    def _optimizer_config(self, key: str, value: Any) -> None:
        if value is None:
            self.report.add(key, "approximated", "(Lightning automatic optimization)",
                            "None meant no optimizer hook in mmcv (nothing stepped); detlight always steps")
            return
        kind = value.get("type", "OptimizerHook")
        self.report.add(key, "mapped", "(Lightning automatic optimization)", f"{kind}: zero_grad/backward/step")
        if value.get("grad_clip"):
            clip = {"max_norm": value["grad_clip"]["max_norm"], "norm_type": value["grad_clip"].get("norm_type", 2)}
            self.model["grad_clip"] = clip
            self.report.add(f"{key}.grad_clip", "mapped", "model.grad_clip", "clip_grad_norm_ + grad_norm logged")
        elif "grad_clip" in value:
            self.report.add(f"{key}.grad_clip", "mapped", "(no clipping)")
        if "cumulative_iters" in value:
            k = value["cumulative_iters"]
            self.trainer["accumulate_grad_batches"] = k
            note = ("Lightning's windows restart every epoch and always divide by k; mmcv's windows are global and "
                    "use the remainder as divisor at the end of the run")
            if "max_steps" in self.trainer:
                self.trainer["max_steps"] = -(-self.trainer["max_steps"] // k)
                note += f"; max_steps = ceil(max_iters / {k}) optimizer steps"
            self.report.add(f"{key}.cumulative_iters", "approximated", "trainer.accumulate_grad_batches", note)
        if kind in ("Fp16OptimizerHook", "GradientCumulativeFp16OptimizerHook"):
            self._fp16(key, _pick(value, ("loss_scale",)), report_key=False)
        done = ("grad_clip", "cumulative_iters", "loss_scale")
        self._unused(key, value, done, "no detlight setting (Lightning's DDP reducer does the bucketing; use "
                     "DDPStrategy(find_unused_parameters=True) to find params outside the graph)")

    def _fp16(self, key: str, value: Any, report_key: bool = True) -> None:
        scale = (value or {}).get("loss_scale", 512.0)
        if isinstance(scale, Mapping):
            scale = dict(scale)
        _check_loss_scale(scale, self.source)  # refuse what mmcv refuses (an int, an unknown string) now
        self.trainer.pop("precision", None)  # the plugin sets 16-mixed; Lightning refuses both
        self.trainer["plugins"] = [{"class_path": FP16_PLUGIN, "init_args": {"loss_scale": scale}}]
        kinds: dict[type, str] = {str: "dynamic GradScaler", dict: "GradScaler(**kwargs)"}
        kind = kinds.get(type(scale), "static scale, skipped overflow steps")
        note = (f"loss_scale={scale!r}: {kind}, as Fp16OptimizerHook; Lightning autocasts the whole step where mmcv "
                "autocast only @auto_fp16 methods. On a machine without CUDA pass `--trainer.plugins=[]`")
        self.report.add(key if report_key else f"{key}.loss_scale", "mapped", "trainer.plugins", note)

    def _lr_config(self, key: str, value: Any) -> None:
        if value is None:
            self.report.add(key, "mapped", "(none)", "no LR hook: the optimizer lr stays constant")
            return
        args = dict(value)
        if not self.by_epoch:
            args.setdefault("by_epoch", False)  # IterBasedRunner's register_training_hooks default
        from detlight.optim.lr import build_lr_policy

        if self._schedule_refused(key, args, build_lr_policy):
            return
        self._callback(PRIORITIES["VERY_HIGH"], LR_UPDATER, args)
        self.report.add(key, "mapped", LR_UPDATER, f"policy={args.get('policy')!r}")

    def _momentum_config(self, key: str, value: Any) -> None:
        if value is None:
            self.report.add(key, "mapped", "(none)", "no momentum hook")
            return
        from detlight.optim.momentum import build_momentum_policy

        if self._schedule_refused(key, dict(value), build_momentum_policy):
            return
        self._callback(PRIORITIES["HIGH"], MOMENTUM_UPDATER, dict(value))
        self.report.add(key, "mapped", MOMENTUM_UPDATER, f"policy={value.get('policy')!r}")

    def _schedule_refused(self, key: str, args: Mapping[str, Any], build: Any) -> bool:
        """Report ``key`` dropped (with the reason) when detlight's policy would refuse it at ``fit`` time."""
        try:
            build(**args)
        except (ValueError, TypeError) as err:
            what, cls = ("lr", LR_UPDATER) if key == "lr_config" else ("momentum", MOMENTUM_UPDATER)
            self.report.add(key, "dropped", note=f"policy {args.get('policy')!r} cannot run in detlight: {err}; the "
                            f"{what} stays at the optimizer's value unless you add a {cls} that detlight accepts")
            return True
        return False

    def _auto_scale_lr(self, key: str, value: Any) -> None:
        self.model["auto_scale_lr"] = value
        self.report.add(key, "mapped", "model.auto_scale_lr")

    # ------------------------------------------------------------------------------------------ hooks
    def _checkpoint(self, key: str, value: Any) -> None:
        if value is None:
            self.trainer["enable_checkpointing"] = False
            self.report.add(key, "mapped", "trainer.enable_checkpointing", "no checkpoints")
            return
        args = {"interval": -1, "by_epoch": self.by_epoch, **_pick(value, CHECKPOINT_ARGS)}
        self._callback(PRIORITIES["NORMAL"], CHECKPOINT, args)
        self.report.add(key, "mapped", CHECKPOINT, "epoch_N.ckpt / iter_N.ckpt + latest.ckpt in mmcv's cadence; add "
                        "export_mmcv: true for mmcv-layout .pth files too")
        self._unused(key, value, CHECKPOINT_ARGS, "no detlight setting (file client, filename template, buffer sync)")

    def _log_config(self, key: str, value: Any) -> None:
        if value is None:
            self.report.add(key, "mapped", "(none)", "no logger hooks")
            return
        interval = value.get("interval", 10)
        self.trainer["log_every_n_steps"] = interval
        self._callback(PRIORITIES["LOW"], ITER_TIMER)
        self.report.add(f"{key}.interval", "mapped", "trainer.log_every_n_steps", f"{interval} (also the interval of "
                        "the logger callbacks)")
        for i, hook in enumerate(value.get("hooks", [])):
            self._logger_hook(f"{key}.hooks.{i}", dict(hook), interval)

    def _logger_hook(self, key: str, hook: dict[str, Any], interval: int) -> None:
        kind = hook.pop("type", "?")
        args = {"interval": interval, **({} if self.by_epoch else {"by_epoch": False}), **hook}
        if kind == "TextLoggerHook":
            self._callback(PRIORITIES["VERY_LOW"], TEXT_LOGGER, _pick(args, TEXT_LOGGER_ARGS))
            self.report.add(key, "mapped", TEXT_LOGGER, "<work_dir>/<timestamp>.log and .log.json")
            self._unused(key, hook, TEXT_LOGGER_ARGS, "no detlight setting (out_dir copy, file client)")
        elif kind == "TensorboardLoggerHook":
            save_dir = hook.get("log_dir") or self.trainer["default_root_dir"]
            # version null: each run gets its own <work_dir>/version_N folder (a re-run never overwrites one)
            self.trainer["logger"] = {"class_path": TB_LOGGER, "init_args": {"save_dir": save_dir, "name": "",
                                                                             "version": None}}
            self._callback(PRIORITIES["VERY_LOW"], INTERVAL_LOGGER, _pick(args, INTERVAL_LOGGER_ARGS))
            self.report.add(key, "approximated", f"trainer.logger + {INTERVAL_LOGGER}", "mmcv tags, step iter+1; "
                            "event files go to the run directory <work_dir>/version_N (mmcv: <work_dir>/tf_logs) so that "
                            "text logs, config.yaml and checkpoints share one folder, new for every run")
        else:
            lightning = {"WandbLoggerHook": "WandbLogger", "MlflowLoggerHook": "MLFlowLogger",
                         "NeptuneLoggerHook": "NeptuneLogger"}.get(kind)
            hint = f"; use trainer.logger: lightning.pytorch.loggers.{lightning}" if lightning else ""
            self.report.add(key, "dropped", note=f"logger hook `{kind}` has no detlight counterpart{hint}")

    def _evaluation(self, key: str, value: Any) -> None:
        args = {"interval": 1, **_pick(value, EVALUATION_ARGS), "by_epoch": self.by_epoch}
        interval = args["interval"]
        if self.by_epoch:
            self.trainer["check_val_every_n_epoch"] = interval
        else:
            self.trainer["val_check_interval"] = interval
        self._callback(PRIORITIES["LOW"], EVALUATION, args)
        self.report.add(key, "mapped", f"{EVALUATION} + trainer." + ("check_val_every_n_epoch" if self.by_epoch
                                                                      else "val_check_interval"), f"every {interval}")
        for sub in value:
            if sub in ("metric", "pipeline"):
                model = self.cfg.get("model") if isinstance(self.cfg.get("model"), Mapping) else None
                three_d = "point_cloud_range" in self.cfg or any(
                    str(k).startswith(("pts_", "voxel", "img_")) for k in model or ())  # mmdet3d model keys
                self.report.add(f"{key}.{sub}", "approximated", "model.evaluator",
                                "DetectorModule's evaluator decides the metric: set `model.evaluator` (detlight's "
                                "3D metric is detlight.metrics.CenterDistanceMAP)" if three_d else
                                "DetectorModule's evaluator decides the metric (default: COCO bbox mAP)")
            elif sub not in EVALUATION_ARGS:
                self.report.add(f"{key}.{sub}", "dropped", note="no detlight setting")

    def _custom_hooks(self, key: str, value: Any) -> None:
        adapted: list[dict[str, Any]] = []
        for i, hook in enumerate(value or []):
            hook = dict(hook)
            kind, sub = hook.get("type", "?"), f"{key}.{i}"
            priority = hook.pop("priority", "NORMAL")
            rank = priority if isinstance(priority, int) else PRIORITIES.get(str(priority).upper(), 50)
            if kind in CUSTOM_HOOKS:
                class_path, args, fixed = CUSTOM_HOOKS[kind]
                self._callback(rank, class_path, {**_pick(hook, args), **fixed})
                self.report.add(sub, "mapped", class_path, kind)
                self._unused(sub, hook, args, "no detlight setting")
                continue
            standard = lookup_standard_hook(kind)
            if standard is not None:
                self.report.add(sub, "dropped", standard.target, standard.message(kind))
            else:
                adapted.append({**hook, "priority": priority})
                self.report.add(sub, "approximated", MMCV_HOOKS,
                                f"`{kind}` runs through the mmcv-hook adapter (after the optimizer step when its "
                                "priority is < 40); its class must be registered with detlight.compat."
                                "register_hook, or give its import path as `class_path`")
        if adapted:
            self._callback(PRIORITIES["NORMAL"], MMCV_HOOKS, {"hooks": adapted, "by_epoch": self.by_epoch})
        if not value:
            self.report.add(key, "mapped", "(none)")

    # ------------------------------------------------------------------------------------------ run setup
    def _load_from(self, key: str, value: Any) -> None:
        self.model["load_from"] = value
        self.report.add(key, "mapped", "model.load_from", "weights only, non-strict, `module.` prefix stripped")

    def _resume(self, key: str, value: Any) -> None:
        resume, auto = self.cfg.get("resume_from"), self.cfg.get("auto_resume")
        if key == "auto_resume" and resume is not None:
            self.report.add(key, "dropped", note="resume_from is set and wins over auto_resume, as in mmdet")
        elif key == "auto_resume":
            self.out["ckpt_path"] = "last" if auto else self.out.get("ckpt_path")
            self.report.add(key, "approximated", "ckpt_path", "`last`: Lightning's last checkpoint in the run "
                            "directory, not mmcv's latest.pth / highest epoch_N.pth" if auto else "off")
        else:
            self.out["ckpt_path"] = value
            self.report.add(key, "approximated" if value else "mapped", "ckpt_path",
                            "Lightning resumes from its own .ckpt files; an mmcv .pth restores weights, optimizer "
                            "and counters only if detlight's checkpoint callback can read it" if value else "")

    def _work_dir(self, key: str, value: Any) -> None:
        self.report.add(key, "mapped", "trainer.default_root_dir", str(self.trainer["default_root_dir"]))

    def _seed(self, key: str, value: Any) -> None:
        self.out["seed_everything"] = value if value is not None else 0
        self.report.add(key, "mapped", "seed_everything", "worker seeding follows mmdet's worker_init_fn")

    def _benchmark(self, key: str, value: Any) -> None:
        self.trainer["benchmark"] = bool(value)
        self.report.add(key, "mapped", "trainer.benchmark")

    def _strategy(self, key: str, value: Any) -> None:
        from detlight.dist_config import DDP_STRATEGY_PATH, DistSettings

        try:
            dist = DistSettings.from_mmcv(self.cfg)
        except ValueError as err:
            raise ConfigError(f"{self.source}: {err}") from None
        backend_name = dist.backend or "nccl"
        if key == "dist_params":
            note = ("nccl is Lightning's default backend on CUDA (gloo on CPU), so no strategy is needed"
                    if backend_name == "nccl" else f"backend={backend_name}")
            self.report.add(key, "mapped", "trainer.strategy" if backend_name != "nccl" else "(Lightning default)", note)
            if dist.port is not None:
                self.report.add(f"{key}.port", "approximated", "MASTER_PORT", "set the MASTER_PORT env variable")
        else:
            self.report.add(key, "mapped", "trainer.strategy.init_args.find_unused_parameters"
                            if dist.find_unused_parameters else "(Lightning default)", str(dist.find_unused_parameters))
        init = dist.strategy_init_args()
        if init and "strategy" not in self.trainer:
            # DetDDPStrategy keeps MMDistributedDataParallel's broadcast_buffers=False.
            self.trainer["strategy"] = {"class_path": DDP_STRATEGY_PATH, "init_args": init}

    def _sync_bn(self) -> None:
        from detlight.dist_config import SYNC_BN_TYPES

        found = sorted({t for t in _norm_types(self.cfg.get("model")) if t in SYNC_BN_TYPES})
        if found:
            self.trainer["sync_batchnorm"] = True
            self.report.add("model.norm_cfg", "mapped", "trainer.sync_batchnorm",
                            f"{', '.join(found)} in the model's norm_cfg: every BatchNorm syncs across processes")

    def _device(self, key: str, value: Any) -> None:
        accelerator = {"cuda": "gpu", "cpu": "cpu", "mlu": None, "npu": None}.get(str(value))
        if accelerator is None:
            self.report.add(key, "dropped", note=f"device `{value}` has no Lightning accelerator")
            return
        self.trainer["accelerator"] = accelerator
        self.report.add(key, "mapped", "trainer.accelerator", accelerator)

    # ------------------------------------------------------------------------------------------ model and data
    def _model(self, key: str, value: Any) -> None:
        model = convert_model(copy.deepcopy(value), self.report)
        if model is not None:
            self.model["model"] = model

    def _data(self, key: str, value: Any) -> None:
        data = convert_data(copy.deepcopy(value), self.report, seed=self.cfg.get("seed"))
        if data is not None:
            self.out["data"] = data
