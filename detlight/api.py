"""Python entry points: ``fit`` / ``validate`` / ``test`` / ``predict`` build exactly what ``detlight <subcommand>`` builds.

Replaces: mmdet's ``mmdet.apis.train_detector`` (see :func:`train_detector`) and driving ``tools/train.py`` from a
notebook. Each function parses the same arguments as the console script with :class:`~detlight.cli.DetLightCLI`, so
the Trainer, module, datamodule and the ``config.yaml`` saved in the run directory are the CLI's for the same inputs::

    detlight fit --config configs/quickstart.yaml --trainer.max_epochs=2
    detlight.fit(config="configs/quickstart.yaml", overrides={"trainer.max_epochs": 2})

The returned :class:`Run` keeps the Trainer and module for inspection. Calling ``fit`` again in the same process (a
notebook cell run twice) starts a fresh Trainer in the next ``version_N`` folder; data-loader workers, log file
handlers and a process group the run created are released before the function returns.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint

from detlight.cli import DetLightCLI, build_cli
from detlight.compat.convert import convert_py_configs

__all__ = ["Run", "fit", "overrides_to_args", "predict", "test", "train_detector", "validate"]

Subcommand = Literal["fit", "validate", "test", "predict"]
ConfigArg = str | os.PathLike[str] | Mapping[str, Any] | Sequence[str | os.PathLike[str] | Mapping[str, Any]] | None
Overrides = Mapping[str, Any] | Sequence[str] | None


@dataclass
class Run:
    """What an API call built and returned.

    Attributes:
        trainer: the Trainer (its ``callbacks``, ``callback_metrics``, ``log_dir``, ...).
        module: the :class:`~detlight.module.DetectorModule` (``module.model`` is the detector).
        datamodule: the datamodule, or ``None``.
        cli: the :class:`~detlight.cli.DetLightCLI` that parsed the arguments (``cli.config`` is the resolved config).
        args: the command-line arguments the call amounted to (after the subcommand).
        results: ``trainer.validate`` / ``test`` / ``predict``'s return value (``None`` for ``fit``). For
            ``validate`` / ``test`` it holds only what was logged to the loggers; evaluation results that an
            ``IntervalLogger`` writes itself are in :attr:`metrics`.
        metrics: ``trainer.callback_metrics`` as floats (``val/bbox_mAP``, ``test/bbox_mAP``, ...).
    """

    trainer: pl.Trainer
    module: pl.LightningModule
    datamodule: pl.LightningDataModule | None
    cli: DetLightCLI
    args: list[str]
    results: Any = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def log_dir(self) -> str | None:
        """The run directory (``config.yaml``, ``*.log.json``, TensorBoard events, checkpoints)."""
        return self.trainer.log_dir

    def __iter__(self) -> Iterator[Any]:
        """``trainer, module = detlight.fit(...)``."""
        return iter((self.trainer, self.module))


def overrides_to_args(overrides: Overrides) -> list[str]:
    """Turn ``overrides`` into ``--key=value`` command-line arguments, in order.

    A mapping may use dotted keys (``{"trainer.max_epochs": 2}``) or nested dicts (``{"trainer": {"max_epochs": 2}}``);
    nested dicts are flattened to dotted keys down to their leaves, except a dict holding ``class_path`` or a
    mapping under a dotted key, which is passed whole. Values that are not strings are written as JSON (which the
    CLI reads as YAML), so ``None`` -> ``null`` and lists stay lists. A sequence of strings is taken as arguments
    already (``["--trainer.max_epochs=2"]``). Keys may end in ``+`` to append to a list (``trainer.callbacks+``).

    Raises:
        TypeError: a key is not a string, or ``overrides`` is neither a mapping nor a list of strings.

    Example:
        >>> overrides_to_args({"trainer": {"max_epochs": 2, "logger": False}, "model.optimizer": {"type": "SGD"}})
        ['--trainer.max_epochs=2', '--trainer.logger=false', '--model.optimizer={"type": "SGD"}']
    """
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"--{key}={_encode(value)}" for key, value in _flatten(overrides, "")]
    if isinstance(overrides, (str, bytes)) or not all(isinstance(a, str) for a in overrides):
        raise TypeError(f"Expected `overrides` to be a dict of dotted keys or a list of '--key=value' strings, but got "
                        f"{overrides!r}")
    return list(overrides)


def _flatten(mapping: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"Override keys must be strings like 'trainer.max_epochs', but got {key!r}")
        dotted = f"{prefix}{key}"
        nested = isinstance(value, Mapping) and value and "class_path" not in value and "." not in key
        if nested and not key.endswith("+"):
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


def _encode(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    try:
        return json.dumps(value)
    except TypeError:
        raise TypeError(f"Override value {value!r} is not JSON-serialisable; pass plain values (numbers, strings, "
                        "lists, dicts), or Python objects through `callbacks=`") from None


def _config_args(config: ConfigArg) -> list[str]:
    if config is None:
        return []
    items = [config] if isinstance(config, (str, os.PathLike, Mapping)) else list(config)
    args: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            args += ["--config", json.dumps(item)]  # jsonargparse reads a config given as a YAML/JSON string
        elif isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Config file not found: {path} (relative to the working directory "
                                        f"{os.getcwd()})")
            args += ["--config", path]
        else:
            raise TypeError(f"Expected `config` to be a path, a dict or a list of those, but got {item!r}")
    return args


class _ApiCLI(DetLightCLI):
    """DetLightCLI whose subcommand keeps the Trainer call's return value and adds Python-object callbacks."""

    def __init__(self, extra_callbacks: Sequence[Callback], **kwargs: Any) -> None:
        self._extra_callbacks = list(extra_callbacks)
        self.results: Any = None
        super().__init__(**kwargs)

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        add_callbacks(self.trainer, self._extra_callbacks)

    # LightningCLI calls a CLI method named after the subcommand instead of the Trainer's, with the same kwargs.
    def fit(self, **kwargs: Any) -> None:
        self.trainer.fit(**kwargs)
        self.results = None

    def validate(self, **kwargs: Any) -> None:
        self.results = self.trainer.validate(**kwargs)

    def test(self, **kwargs: Any) -> None:
        self.results = self.trainer.test(**kwargs)

    def predict(self, **kwargs: Any) -> None:
        self.results = self.trainer.predict(**kwargs)


def add_callbacks(trainer: pl.Trainer, callbacks: Sequence[Callback]) -> None:
    """Add callbacks to a built Trainer, before its checkpoint callbacks (which Lightning keeps last)."""
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(f"Expected `callbacks` to hold lightning Callback objects (wrap mmcv-style hooks in "
                            f"detlight.compat.hooks.MMCVHooks), but got {type(callback).__name__}")
        existing = trainer.callbacks  # type: ignore[attr-defined]
        position = next((i for i, c in enumerate(existing) if isinstance(c, Checkpoint)), len(existing))
        existing.insert(position, callback)


def _run(subcommand: Subcommand, config: ConfigArg, overrides: Overrides, callbacks: Sequence[Callback],
         ckpt_path: str | None, cli_kwargs: Mapping[str, Any] | None = None) -> Run:
    args = convert_py_configs(_config_args(config)) + overrides_to_args(overrides)
    if ckpt_path is not None:
        args.append(f"--ckpt_path={ckpt_path}")
    kwargs = {**_cli_kwargs(ckpt_path), **dict(cli_kwargs or {})}
    had_group = torch.distributed.is_available() and torch.distributed.is_initialized()
    try:
        with _parse_errors_raised(subcommand), _quiet_argv():
            cli = build_cli([subcommand, *args], cli_class=_ApiCLI, extra_callbacks=callbacks, **kwargs)
    finally:
        if not had_group and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    release_workers(cli.trainer)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
    return Run(cli.trainer, cli.model, cli.datamodule, cli, args, cli.results, metrics)


def _cli_kwargs(ckpt_path: str | None) -> dict[str, Any]:
    """What ``detlight.cli.main`` adds around DetLightCLI: the friendly parser and the early checkpoint check."""
    try:
        from detlight.errors import FriendlyArgumentParser, check_checkpoint_file
    except ImportError:  # pragma: no cover - older layout without detlight.errors
        return {}
    if ckpt_path and ckpt_path not in ("last", "auto", "best", "hpc", "registry", "null"):
        check_checkpoint_file(ckpt_path)
    return {"parser_class": FriendlyArgumentParser}


@contextlib.contextmanager
def _quiet_argv() -> Iterator[None]:
    """Hide the kernel's own ``sys.argv`` (``-f kernel.json`` in Jupyter): the arguments come from ``args``."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _parse_errors_raised(subcommand: str) -> Iterator[None]:
    """Turn the parser's usage-and-exit into a ``ValueError`` that carries its message (a notebook-friendly error)."""
    buffer = io.StringIO()
    real = sys.stderr
    try:
        with contextlib.redirect_stderr(_Tee(buffer, real)):
            yield
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        message = buffer.getvalue().strip().splitlines()
        raise ValueError(f"detlight {subcommand}: invalid arguments\n" + "\n".join(message[-20:])) from None
    except Exception as exc:
        if type(exc).__name__ != "UsageError":  # detlight.errors' friendly parser error
            raise
        raise ValueError(f"detlight {subcommand}: {exc}") from None


class _Tee(io.TextIOBase):
    """Writes to the real stream and remembers what was written (warnings stay visible)."""

    def __init__(self, buffer: io.StringIO, stream: Any) -> None:
        self._buffer, self._stream = buffer, stream

    def write(self, text: str) -> int:
        self._buffer.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


def release_workers(trainer: pl.Trainer) -> None:
    """Shut down the worker processes of the run's data loaders (``persistent_workers`` keeps them alive otherwise)."""
    loaders: list[Any] = []
    for name in ("train_dataloader", "val_dataloaders", "test_dataloaders", "predict_dataloaders"):
        with contextlib.suppress(Exception):  # a loop that never ran has no loaders
            value = getattr(trainer, name)
            loaders += list(value) if isinstance(value, (list, tuple)) else [value]
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            loader._iterator = None


def fit(config: ConfigArg = None, overrides: Overrides = None, *, callbacks: Sequence[Callback] = (),
        ckpt_path: str | None = None) -> Run:
    """``detlight fit``: build from ``config`` + ``overrides`` exactly as the CLI does, train, return the :class:`Run`.

    Args:
        config: a YAML path (or mmcv ``.py`` config, converted as the CLI does), a config dict, or a list of those
            (applied in order, last wins: repeated ``--config``).
        overrides: ``--key=value`` settings applied after the configs (see :func:`overrides_to_args`).
        callbacks: Lightning callbacks given as Python objects (e.g. defined in a notebook), added before the
            checkpoint callbacks. They are not part of the saved ``config.yaml``.
        ckpt_path: resume from this checkpoint (``--ckpt_path``; ``"last"`` finds the run's last one).

    Raises:
        ValueError: the CLI rejected the arguments (the message is the CLI's).
        FileNotFoundError: a config file does not exist.
    """
    return _run("fit", config, overrides, callbacks, ckpt_path)


def validate(config: ConfigArg = None, overrides: Overrides = None, *, callbacks: Sequence[Callback] = (),
             ckpt_path: str | None = None) -> Run:
    """``detlight validate``; the results are in :attr:`Run.metrics` (``val/...``). Arguments as :func:`fit`."""
    return _run("validate", config, overrides, callbacks, ckpt_path)


def test(config: ConfigArg = None, overrides: Overrides = None, *, callbacks: Sequence[Callback] = (),
         ckpt_path: str | None = None) -> Run:
    """``detlight test``; the results are in :attr:`Run.metrics` (``test/...``). Arguments as :func:`fit`."""
    return _run("test", config, overrides, callbacks, ckpt_path)


test.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported into a test module


def predict(config: ConfigArg = None, overrides: Overrides = None, *, callbacks: Sequence[Callback] = (),
            ckpt_path: str | None = None) -> Run:
    """``detlight predict``; :attr:`Run.results` is a list (per batch) of per-image detection dicts."""
    return _run("predict", config, overrides, callbacks, ckpt_path)


# ---------------------------------------------------------------------------------------------- mmdet's API
def train_detector(model: torch.nn.Module, dataset: Any, cfg: Any, distributed: bool = False, validate: bool = True,
                   timestamp: str | None = None, meta: dict[str, Any] | None = None) -> Run:
    """mmdet's ``train_detector(model, dataset, cfg, distributed, validate, timestamp, meta)`` on detlight.

    Replaces: ``mmdet.apis.train_detector``. ``cfg`` (an mmcv config dict, an ``mmcv.Config`` or a ``.py`` path) is
    converted with :func:`detlight.compat.convert.convert_config` (the mapping report is printed), then built by the
    CLI with ``model`` as the detector. ``cfg.seed`` seeds the run as mmdet's ``tools/train.py`` does (default 0).

    Args:
        model: the detector (mmdet or torchvision contract, see :mod:`detlight.models.contract`).
        dataset: the training dataset, or a list whose first item is it (mmdet's ``[build_dataset(cfg.data.train)]``);
            ``None`` uses ``cfg.data.train``. A second item (the ``('val', 1)`` workflow dataset) is ignored: detlight
            computes that phase on the val split.
        cfg: the mmcv config.
        distributed: mmdet's flag. Lightning chooses the strategy from ``trainer`` settings, so ``True`` only checks
            that ``cfg`` asks for more than one device.
        validate: run the evaluation (``cfg.evaluation``) on ``cfg.data.val``; ``False`` skips validation.
        timestamp: names the ``{timestamp}.log`` / ``.log.json`` files, as in mmdet.
        meta: extra entries for the json log's meta line.

    Returns:
        The :class:`Run` (the Trainer has finished fitting).
    """
    from detlight.compat.config import load_config
    from detlight.compat.convert import convert_config

    source = "train_detector"
    if isinstance(cfg, (str, os.PathLike)):
        source, cfg = os.fspath(cfg), load_config(Path(cfg))
    elif not isinstance(cfg, Mapping) and hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()  # mmcv.Config
    if not isinstance(cfg, Mapping):
        raise TypeError(f"Expected `cfg` to be an mmcv config dict, mmcv.Config or a .py path, got {type(cfg).__name__}")
    converted, report = convert_config(cfg, source)
    print(report.format(), file=sys.stderr)
    converted.pop("ckpt_path", None)
    converted["seed_everything"] = cfg.get("seed", 0) if cfg.get("seed") is not None else 0
    converted.setdefault("model", {})["model"] = model
    _set_text_logger_args(converted, timestamp, meta)
    if not validate:
        converted.setdefault("trainer", {}).update(limit_val_batches=0, num_sanity_val_steps=0)
    if distributed and converted.get("trainer", {}).get("devices") in (None, 1, "1"):
        warnings.warn("train_detector(distributed=True): the converted config runs on one device; set "
                      "trainer.devices / strategy in cfg (or run `detlight fit`) for DDP", stacklevel=2)
    train_set = dataset[0] if isinstance(dataset, (list, tuple)) else dataset
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Unable to serialize instance.*")
        run = _run_given(converted, train_set)
    return run


def _set_text_logger_args(converted: dict[str, Any], timestamp: str | None, meta: dict[str, Any] | None) -> None:
    for spec in converted.get("trainer", {}).get("callbacks", []) or []:
        if isinstance(spec, MutableMapping) and str(spec.get("class_path", "")).endswith("TextLogger"):
            init_args = spec.setdefault("init_args", {})
            if timestamp is not None:
                init_args["timestamp"] = timestamp
            if meta:
                init_args["meta"] = {**init_args.get("meta", {}), **json.loads(json.dumps(meta, default=str))}


class _GivenDatasetCLI(_ApiCLI):
    """Puts the dataset handed to :func:`train_detector` in place of the config's train split."""

    def __init__(self, train_set: Any, **kwargs: Any) -> None:
        self._train_set = train_set
        super().__init__(**kwargs)

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        if self._train_set is None:
            return
        datasets = getattr(self.datamodule, "datasets", None)
        if not isinstance(datasets, dict):
            raise TypeError(f"train_detector needs a datamodule with a `datasets` dict such as DetDataModule to take "
                            f"the given dataset, got {type(self.datamodule).__name__}")
        datasets["train"] = self._train_set


def _run_given(converted: dict[str, Any], train_set: Any) -> Run:
    """Build with the converted config (a dict, so the detector object goes in as is) and fit."""
    had_group = torch.distributed.is_available() and torch.distributed.is_initialized()
    try:
        with _parse_errors_raised("fit"), _quiet_argv():
            cli = build_cli({"fit": converted}, cli_class=_GivenDatasetCLI, train_set=train_set, extra_callbacks=(),
                            save_config_callback=None)
    finally:
        if not had_group and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    release_workers(cli.trainer)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
    return Run(cli.trainer, cli.model, cli.datamodule, cli, [], cli.results, metrics)
