"""``detlight convert`` / ``detlight fit --config x.py`` for a config that trains OpenMMLab's own code.

Replaces: what ``tools/train.py`` did with the ``model``, ``data``, ``evaluation.metric``, ``custom_imports`` and
``train_cfg`` / ``test_cfg`` keys of a config: build mmdet's (mmdet3d's) detector and datasets from them. The converted
YAML carries those sections as the config's own dicts (``model.model`` ->
:func:`~detlight.openmmlab.detector.openmmlab_detector`, ``data`` ->
:class:`~detlight.openmmlab.data.OpenMMLabDataModule`, ``model.evaluator`` ->
:class:`~detlight.openmmlab.evaluator.DatasetEvaluator`), each reported as ``exact``; the runtime keys (optimizer,
schedules, hooks, checkpoints, logging) convert as for any config. Whether a config is bridged is
:func:`detlight.openmmlab.switch.resolve_bridge`'s decision.

Limits: ``resume_from`` with an mmcv ``.pth`` goes through :class:`~detlight.openmmlab.checkpoint.MMCVResume`
(weights, optimizer state, epoch / iteration counters), not Lightning's ``ckpt_path``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from detlight.openmmlab.switch import config_scope, resolve_bridge

__all__ = ["BRIDGED_KEYS", "DATA_MODULE", "DETECTOR", "EVALUATOR", "RESUME", "bridge_config", "convert_config_bridged"]

DETECTOR = "detlight.openmmlab.openmmlab_detector"
DATA_MODULE = "detlight.openmmlab.OpenMMLabDataModule"
EVALUATOR = "detlight.openmmlab.DatasetEvaluator"
RESUME = "detlight.openmmlab.MMCVResume"
MMCV_HOOKS = "detlight.callbacks.mmcv_hooks.MMCVHooks"
WORKFLOW = "detlight.callbacks.workflow.Workflow"
#: top-level keys whose conversion the bridge replaces
BRIDGED_KEYS = ("model", "data", "train_cfg", "test_cfg", "custom_imports", "openmmlab")
#: ``evaluation`` keys that are Evaluation's (the rest go to the dataset's ``evaluate``)
_SCHEDULE_KEYS = ("interval", "by_epoch", "start", "save_best", "rule", "greater_keys", "less_keys", "out_dir",
                  "dynamic_intervals", "gpu_collect", "tmpdir", "broadcast_bn_buffer", "efficient_test", "pipeline")
_SYNC_BN = ("SyncBN", "MMSyncBN", "NaiveSyncBN")
#: mmdet's hooks that need mmdet's model or dataset: without the bridge they have no counterpart (or, for
#: SetEpochInfoHook, detlight's look-alike callback); bridged, mmdet's own classes run through MMCVHooks
MMDET_HOOKS = ("YOLOXModeSwitchHook", "SyncNormHook", "SyncRandomSizeHook", "SetEpochInfoHook")
_SET_EPOCH_CALLBACK = "detlight.callbacks.set_epoch_info.SetEpochInfo"


def convert_config_bridged(cfg: Mapping[str, Any], source: str,
                           convert: Callable[[Mapping[str, Any], str], tuple[dict[str, Any], Any]]) -> tuple[dict[str, Any], Any]:
    """``convert(cfg, source)``, with the model / data sections bridged to OpenMMLab's code when the switch says so.

    When bridged, ``convert`` (detlight's converter) sees the config without its model and data sections, so the
    torchvision look-alike is neither built nor reported; :func:`bridge_config` fills them in.
    """
    if not resolve_bridge(cfg, source):
        return convert(cfg, source)
    rest = {k: v for k, v in cfg.items() if k not in BRIDGED_KEYS}
    out, report = convert(rest, source)
    bridge_config(cfg, out, report)
    return out, report


def bridge_config(cfg: Mapping[str, Any], out: dict[str, Any], report: Any) -> None:
    """Write the bridged ``model`` / ``data`` / evaluator / resume entries into ``out`` and report them."""
    scope = config_scope(cfg)
    custom = cfg.get("custom_imports")
    model_out = out.setdefault("model", {})
    from detlight.openmmlab.detector import tuple_paths

    init: dict[str, Any] = {"model": cfg["model"], "scope": scope}
    for key in ("train_cfg", "test_cfg"):
        if cfg.get(key) is not None:
            init[key] = cfg[key]
    # YAML writes tuples as lists: record where the config had tuples, so mmdet gets exactly its containers
    init["tuples"] = tuple_paths({k: init[k] for k in ("model", "train_cfg", "test_cfg") if k in init})
    if custom:
        init["custom_imports"] = custom
    model_out["model"] = {"class_path": DETECTOR, "init_args": init}
    evaluation: Mapping[str, Any] = cfg["evaluation"] if isinstance(cfg.get("evaluation"), Mapping) else {}
    eval_kwargs = {k: v for k, v in evaluation.items() if k not in _SCHEDULE_KEYS and k != "metric"}
    ev_init: dict[str, Any] = {"metric": evaluation.get("metric", "bbox" if scope == "mmdet" else None)}
    if eval_kwargs:
        ev_init["eval_kwargs"] = eval_kwargs
    model_out["evaluator"] = {"class_path": EVALUATOR, "init_args": ev_init}
    data_init: dict[str, Any] = {"data": cfg["data"], "scope": scope, "seed": cfg.get("seed") or 0,
                                 "tuples": tuple_paths({"data": cfg["data"]})}
    if custom:
        data_init["custom_imports"] = custom
    if isinstance(cfg.get("data"), Mapping):
        out["data"] = {"class_path": DATA_MODULE, "init_args": data_init}
    trainer = out.setdefault("trainer", {})
    if _uses_sync_bn(cfg.get("model")):
        trainer["sync_batchnorm"] = True
    callbacks = trainer.get("callbacks") or []
    for callback in callbacks:
        if callback.get("class_path") == MMCV_HOOKS and custom:
            callback.setdefault("init_args", {})["custom_imports"] = _import_names(custom)
    callbacks = _bridge_mmdet_hooks(cfg, trainer, callbacks, report)
    workflow = [cb for cb in callbacks if cb.get("class_path") == WORKFLOW]
    if workflow:  # the ('val', n) losses phase needs the val set with the train pipeline: not built here
        trainer["callbacks"] = callbacks = [cb for cb in callbacks if cb not in workflow]
        report.entries = [e for e in report.entries if e.key != "workflow"]
        report.add("workflow", "approximated", "(Lightning fit loop)",
                   f"{cfg.get('workflow')}: the ('val', n) losses phase is not run for OpenMMLab datasets; evaluation "
                   "runs as `evaluation` says")
    resume = cfg.get("resume_from")
    if isinstance(resume, str) and resume.endswith(".pth"):
        callbacks.append({"class_path": RESUME, "init_args": {"path": resume}})
        trainer["callbacks"] = callbacks
        out["ckpt_path"] = None
    _report(cfg, report, scope, ev_init, resume if isinstance(resume, str) and resume.endswith(".pth") else None)


def _report(cfg: Mapping[str, Any], report: Any, scope: str, ev_init: Mapping[str, Any], resume: str | None) -> None:
    report.entries = [e for e in report.entries
                      if not (e.key in ("evaluation.metric", "resume_from") or e.key.startswith("evaluation.")
                              and e.key.split(".", 1)[1] not in _SCHEDULE_KEYS)]
    builder = "mmdet3d.models.build_model" if scope == "mmdet3d" else "mmdet.models.build_detector"
    for section, target, how in (("model", "model.model.init_args.model", f"exact: {builder}"),
                                 ("data", "data.init_args.data", f"exact: {scope}.datasets.build_dataset")):
        value = cfg.get(section)
        if isinstance(value, Mapping):
            for key in value:
                report.add(f"{section}.{key}", "mapped", target, how)
    for key in ("train_cfg", "test_cfg"):
        if cfg.get(key) is not None:
            report.add(key, "mapped", f"model.model.init_args.{key}", f"exact: {builder}")
    if cfg.get("custom_imports"):
        report.add("custom_imports", "mapped", "model.model.init_args.custom_imports",
                   f"exact: imported before the model, data and hooks are built: {_import_names(cfg['custom_imports'])}")
    report.add("evaluation.metric", "mapped", "model.evaluator.init_args.metric",
               f"exact: the dataset's own evaluate(results, metric={ev_init.get('metric')!r})")
    if resume is not None:
        report.add("resume_from", "mapped", RESUME, "exact: weights, optimizer state, epoch and iteration of the .pth")
    if "openmmlab" in cfg:
        report.add("openmmlab", "mapped", "(detlight.openmmlab switch)", f"{cfg['openmmlab']!r}")


def _bridge_mmdet_hooks(cfg: Mapping[str, Any], trainer: dict[str, Any], callbacks: list[dict[str, Any]],
                        report: Any) -> list[dict[str, Any]]:
    """Run the config's :data:`MMDET_HOOKS` unchanged (mmdet's classes) through the MMCVHooks callback."""
    hooks = [(i, dict(h)) for i, h in enumerate(cfg.get("custom_hooks") or [])
             if isinstance(h, Mapping) and h.get("type") in MMDET_HOOKS]
    if not hooks:
        return callbacks
    specs = []
    for i, hook in hooks:
        kind = hook.pop("type")
        specs.append({"class_path": f"mmdet.core.hook.{kind}", **hook})
        report.entries = [e for e in report.entries if e.key != f"custom_hooks.{i}"]
        report.add(f"custom_hooks.{i}", "mapped", MMCV_HOOKS,
                   f"exact: mmdet's own {kind} on mmdet's detector and dataset (runner.model.module, "
                   "runner.data_loader.dataset)")
    if any(h["class_path"].endswith("SetEpochInfoHook") for h in specs):
        callbacks = [cb for cb in callbacks if cb.get("class_path") != _SET_EPOCH_CALLBACK]
    existing = next((cb for cb in callbacks if cb.get("class_path") == MMCV_HOOKS), None)
    if existing is None:
        callbacks.append({"class_path": MMCV_HOOKS, "init_args": {"hooks": specs}})
    else:
        existing.setdefault("init_args", {}).setdefault("hooks", []).extend(specs)
    trainer["callbacks"] = callbacks
    return callbacks


def _import_names(custom: Any) -> list[str]:
    from detlight.openmmlab.imports import custom_import_names

    return custom_import_names(custom)[0]


def _uses_sync_bn(value: Any) -> bool:
    if isinstance(value, Mapping):
        norm = value.get("norm_cfg")
        if isinstance(norm, Mapping) and norm.get("type") in _SYNC_BN:
            return True
        return any(_uses_sync_bn(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_uses_sync_bn(v) for v in value)
    return False
