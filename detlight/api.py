"""Python entry points: ``fit`` / ``validate`` / ``test`` / ``predict`` build exactly what ``detlight <subcommand>`` builds.

Replaces: mmdet's ``mmdet.apis.train_detector`` (see :func:`train_detector`) and driving ``tools/train.py`` from a
notebook. Each function parses the same arguments as the console script with :class:`~detlight.cli.DetLightCLI`, so
the Trainer, module, datamodule and the ``config.yaml`` saved in the run directory are the CLI's for the same inputs::

    detlight fit --config configs/quickstart.yaml --trainer.max_epochs=2
    detlight.fit(config="configs/quickstart.yaml", overrides={"trainer.max_epochs": 2})

Python objects can replace parts of the config (``detlight.fit(config=..., model=detector, datamodule=dm)``); the
saved ``config.yaml`` then records their classes and what of their init args could be read back.

The returned :class:`Run` keeps the Trainer and module for inspection. Calling ``fit`` again in the same process (a
notebook cell run twice) starts a fresh Trainer in the next ``version_N`` folder; data-loader workers, log file
handlers and a process group the run created are released before the function returns.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint

from detlight.callbacks.logger_callback import NOT_COMPUTED
from detlight.cli import CKPT_PATH_KEYWORDS, DetLightCLI, build_cli, remove_files
from detlight.convert.entry import convert_py_configs
from detlight.data.loader import release_workers
from detlight.exceptions import ConfigError, UsageError

__all__ = ["Run", "describe_object", "fit", "overrides_to_args", "predict", "test", "train_detector", "validate"]

#: jsonargparse's warning for an object in the config (its message starts with a newline and holds the repr)
_UNSERIALIZABLE = r"(?s)\s*Unable to serialize instance"

Subcommand = Literal["fit", "validate", "test", "predict"]
ConfigArg = str | os.PathLike[str] | Mapping[str, Any] | Sequence[str | os.PathLike[str] | Mapping[str, Any]] | None
Overrides = Mapping[str, Any] | Sequence[str] | None


@dataclass(repr=False)
class Run:
    """What an API call built and returned.

    ``trainer, module = run`` unpacks, and ``run[0]`` / ``run[1]`` index, the same two items.

    Attributes:
        subcommand: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.
        trainer: the Trainer (its ``callbacks``, ``callback_metrics``, ``log_dir``, ...).
        module: the :class:`~detlight.module.DetectorModule` (``module.model`` is the detector).
        datamodule: the datamodule, or ``None``.
        cli: the :class:`~detlight.cli.DetLightCLI` that parsed the arguments (``cli.config`` is the resolved config).
        args: the command-line arguments the call amounted to (after the subcommand); empty when Python objects were
            given (the call was built from a config dict then).
        results: ``fit`` / ``validate`` / ``test``: a list with one dict per validation (test) dataloader, keyed like
            :attr:`metrics` (``val/bbox_mAP``, ...): for ``fit`` the final evaluation. ``predict``: a list (per batch)
            of per-image detection dicts.
        metrics: every scalar the run reported, as floats, under one naming: ``<stage>/<key>`` (``val/bbox_mAP``,
            ``test/bbox_mAP``, ``val/loss_cls`` of a ``('val', n)`` workflow phase). COCO's ``-1`` ("not computed",
            e.g. ``bbox_mAP_l`` on a set without large objects) is left out.
    """

    trainer: pl.Trainer
    module: pl.LightningModule
    datamodule: pl.LightningDataModule | None
    cli: DetLightCLI
    args: list[str]
    results: Any = None
    metrics: dict[str, float] = field(default_factory=dict)
    subcommand: str = "fit"

    @property
    def log_dir(self) -> str | None:
        """The run directory (``config.yaml``, ``*.log.json``, TensorBoard events, ``checkpoints/``)."""
        return self.trainer.log_dir

    def __iter__(self) -> Iterator[Any]:
        """``trainer, module = detlight.fit(...)``."""
        return iter((self.trainer, self.module))

    def __getitem__(self, index: int) -> Any:
        """``run[0]`` is the trainer, ``run[1]`` the module (as in unpacking)."""
        return (self.trainer, self.module)[index]

    def __len__(self) -> int:
        return 2

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in list(self.metrics.items())[:4])
        more = f", +{len(self.metrics) - 4} more" if len(self.metrics) > 4 else ""
        return (f"Run({self.subcommand}, log_dir={self.log_dir!r}, epochs={self.trainer.current_epoch}, "
                f"global_step={self.trainer.global_step}, metrics={{{shown}{more}}})")


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
        raise TypeError(f"Override value of type {type(value).__name__} is not JSON-serialisable: as command-line "
                        "arguments only plain values (numbers, strings, lists, dicts) work. detlight.fit / validate / "
                        "test / predict accept Python objects in `overrides` (and as `model=` / `datamodule=`)"
                        ) from None


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
    """DetLightCLI whose subcommand keeps the Trainer call's return value and adds Python-object callbacks.

    ``module`` (a LightningModule object given to :func:`fit`) replaces the one built from the config, and
    ``config_note`` makes it write ``config.yaml`` itself (see :func:`_saved_config`) when objects were given.
    """

    def __init__(self, extra_callbacks: Sequence[Callback], module: pl.LightningModule | None = None,
                 config_note: list[str] | None = None, **kwargs: Any) -> None:
        self._extra_callbacks = list(extra_callbacks)
        self._given_module = module
        self._config_note = config_note
        self.results: Any = None
        super().__init__(**kwargs)

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        if self._given_module is not None:
            self.model = self._given_module
        callbacks = list(self._extra_callbacks)
        if self._config_note is not None and self.subcommand is not None:
            callbacks.append(_ConfigWriter(_saved_config(self, self._config_note)))
        add_callbacks(self.trainer, callbacks)

    # LightningCLI calls a CLI method named after the subcommand instead of the Trainer's, with the same kwargs.
    def fit(self, **kwargs: Any) -> None:
        self.trainer.fit(**kwargs)  # returns nothing; _launch fills Run.results from the final evaluation

    def validate(self, **kwargs: Any) -> None:
        self.results = self.trainer.validate(**kwargs)

    def test(self, **kwargs: Any) -> None:
        self.results = self.trainer.test(**kwargs)

    def predict(self, **kwargs: Any) -> None:
        self.results = self.trainer.predict(**kwargs)


class _ConfigWriter(Callback):
    """Writes the given ``config.yaml`` text into the run directory at set-up (rank 0), as SaveConfigCallback would."""

    def __init__(self, text: str) -> None:
        self.text = text

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir or trainer.default_root_dir  # a broadcast under DDP: every rank asks
        if trainer.is_global_zero:
            os.makedirs(log_dir, exist_ok=True)
            with open(os.path.join(log_dir, "config.yaml"), "w", encoding="utf-8") as f:
                f.write(self.text)


def add_callbacks(trainer: pl.Trainer, callbacks: Sequence[Callback]) -> None:
    """Add callbacks to a built Trainer, before its checkpoint callbacks (which Lightning keeps last)."""
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(f"Expected `callbacks` to hold lightning Callback objects (wrap mmcv-style hooks in "
                            f"detlight.callbacks.MMCVHooks), but got {type(callback).__name__}")
        existing = trainer.callbacks  # type: ignore[attr-defined]
        position = next((i for i, c in enumerate(existing) if isinstance(c, Checkpoint)), len(existing))
        existing.insert(position, callback)


def _run(subcommand: Subcommand, config: ConfigArg, overrides: Overrides, callbacks: Sequence[Callback],
         ckpt_path: str | None, model: Any = None, datamodule: Any = None) -> Run:
    """Build and run ``subcommand``: from command-line arguments, or from a config dict when objects are given."""
    created: list[str] = []  # temporary YAML files of converted .py configs
    try:
        if model is None and datamodule is None and not _holds_objects(overrides):
            # build_cli converts .py configs (deleting the temporary YAML) and checks the checkpoint file early
            args = _config_args(config) + overrides_to_args(overrides)
            if ckpt_path is not None:
                args.append(f"--ckpt_path={ckpt_path}")
            return _launch(subcommand, args, callbacks, {})
        cfg, module = _object_config(config, overrides, created, model, datamodule)
        if ckpt_path is not None:
            _check_ckpt_path(ckpt_path)
            cfg["ckpt_path"] = ckpt_path
        note = _object_note(cfg, module)
        with warnings.catch_warnings():  # jsonargparse would print each object whole; config.yaml says it instead
            warnings.filterwarnings("ignore", message=_UNSERIALIZABLE)
            return _launch(subcommand, {subcommand: cfg}, callbacks, {"save_config_callback": None}, module=module,
                           config_note=note)
    finally:
        remove_files(created)


def _launch(subcommand: str, args: list[str] | dict[str, Any], callbacks: Sequence[Callback],
            cli_kwargs: dict[str, Any], cli_class: type[_ApiCLI] | None = None, **extra: Any) -> Run:
    """Run the CLI for ``args``, then release what the run holds (process group it created, loader workers)."""
    had_group = torch.distributed.is_available() and torch.distributed.is_initialized()
    cls = cli_class or _ApiCLI
    if isinstance(args, dict):
        args_list: list[str] = []
    else:
        args_list, args = list(args), [subcommand, *args]
    try:
        with _parse_errors_raised(subcommand), _quiet_argv(), _signal_handlers_kept():
            cli = build_cli(args, cli_class=cls, extra_callbacks=callbacks, **cli_kwargs, **extra)
    finally:
        if not had_group and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    release_workers(cli.trainer)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()
               if torch.as_tensor(v).numel() == 1 and float(v) != NOT_COMPUTED}
    results = cli.results
    if subcommand == "fit":
        final = getattr(cli.model, "eval_results", None) or {}
        results = [{f"val/{k}": float(v) for k, v in final.items() if float(v) != NOT_COMPUTED}] if final else None
    return Run(cli.trainer, cli.model, cli.datamodule, cli, args_list, results, metrics, subcommand)


# ---------------------------------------------------------------------------------------------- Python objects
def _is_plain(value: Any) -> bool:
    """JSON-like: what a YAML config can hold."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return isinstance(value, os.PathLike)


def _holds_objects(overrides: Overrides) -> bool:
    return isinstance(overrides, Mapping) and not _is_plain(dict(overrides))


def _object_config(config: ConfigArg, overrides: Overrides, created: list[str], model: Any = None,
                   datamodule: Any = None) -> tuple[dict[str, Any], pl.LightningModule | None]:
    """The configs merged in order (nested keys merged, last wins), the objects put in, then the overrides set key by
    key; also the LightningModule object that replaces the built one (see :func:`_place_objects`)."""
    import yaml

    cfg: dict[str, Any] = {}
    items = [] if config is None else [config] if isinstance(config, (str, os.PathLike, Mapping)) else list(config)
    for item in items:
        if isinstance(item, Mapping):
            data: Any = dict(item)
        else:
            given = _config_args(item)[1]
            path = convert_py_configs(["--config", given])[1]
            if path != given:
                created.append(path)  # the temporary YAML of a converted .py config
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"Config {item!r} does not hold a mapping of keys (got {type(data).__name__})")
        _merge(cfg, data)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise UsageError("With Python objects, give `overrides` as a dict ({'trainer.max_epochs': 2}), not as "
                         "command-line strings")
    module = _place_objects(cfg, model, datamodule)
    for key, value in _flatten(overrides or {}, ""):
        _set_dotted(cfg, key, value)
    return cfg, module


def _merge(into: dict[str, Any], data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict) and (
                value.get("class_path", into[key].get("class_path")) == into[key].get("class_path")):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    append = key.endswith("+")
    parts = key.rstrip("+").split(".")
    node: Any = cfg
    for i, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"Cannot set override `{key}`: `{'.'.join(parts[:i + 1])}` is a "
                              f"{type(child).__name__} object, not a config section; set the object's attribute "
                              "in Python instead, or give the section as a dict")
        node = child
    last = parts[-1]
    if append:
        current = node.get(last)
        node[last] = [*(current if isinstance(current, list) else [] if current is None else [current]),
                      *(value if isinstance(value, list) else [value])]
    else:
        node[last] = value


def _place_objects(cfg: dict[str, Any], model: Any, datamodule: Any) -> pl.LightningModule | None:
    """Put ``model`` / ``datamodule`` into ``cfg``; return a LightningModule object that replaces the built one."""
    module = None
    if model is not None:
        if isinstance(model, pl.LightningModule):
            inner = getattr(model, "model", None)
            if not isinstance(inner, torch.nn.Module):
                raise UsageError(f"`model` is a {type(model).__name__} without a `.model` detector; give the "
                                 "detector (an nn.Module) or a detlight.module.DetectorModule")
            module = model
            model = inner
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"`model` must be a detector (torch.nn.Module) or a DetectorModule, got "
                             f"{type(model).__name__}")
        section = cfg.setdefault("model", {})
        if not isinstance(section, dict):
            raise UsageError("Give the detector either as `model=` or in the config's `model`, not both as objects")
        section["model"] = model
    if datamodule is not None:
        if not isinstance(datamodule, pl.LightningDataModule):
            raise UsageError(f"`datamodule` must be a LightningDataModule, got {type(datamodule).__name__}")
        cfg["data"] = datamodule
    return module


def describe_object(obj: Any) -> tuple[dict[str, Any], list[str]]:
    """``({class_path, init_args}, not_recorded)`` for an object built in Python.

    ``init_args`` are read back from the object: its ``hparams`` (``save_hyperparameters``) first, else attributes
    named like the ``__init__`` parameters (also with a leading ``_``), kept only when they are plain values a YAML
    file can hold. The other parameters are listed in ``not_recorded``.

    Example:
        >>> import torch
        >>> described, not_recorded = describe_object(torch.nn.Linear(2, 3))
        >>> described
        {'class_path': 'torch.nn.modules.linear.Linear', 'init_args': {'in_features': 2, 'out_features': 3}}
        >>> not_recorded
        ['bias', 'device', 'dtype']
    """
    cls = type(obj)
    hparams = getattr(obj, "hparams", None)
    init_args: dict[str, Any] = {}
    missing: list[str] = []
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        found, value = False, None
        if isinstance(hparams, Mapping) and name in hparams:
            found, value = True, hparams[name]
        else:
            for attr in (name, f"_{name}"):
                if attr in getattr(obj, "__dict__", {}) or (hasattr(type(obj), attr) is False and hasattr(obj, attr)):
                    found, value = True, getattr(obj, attr)
                    break
        if found and _is_plain(value) and not isinstance(value, os.PathLike):
            init_args[name] = list(value) if isinstance(value, tuple) else value
        else:
            missing.append(name)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}, missing


def _object_note(cfg: dict[str, Any], module: pl.LightningModule | None) -> list[str]:
    """The lines that head the saved ``config.yaml`` of a run built from objects."""
    lines = ["Saved by detlight's Python API from a config that held Python objects. Each object below is written",
             "as its class_path plus the init_args that could be read back from it (hparams, or attributes named",
             "like its __init__ parameters); check them before reusing this file."]
    targets = [(k, v) for k, v in _object_paths(cfg, "")]
    if module is not None:
        targets.insert(0, ("model (the LightningModule object; `model:` below is the config's)", module))
    for where, obj in targets:
        _, missing = describe_object(obj)
        cls = type(obj)
        told = f"init args not recorded: {', '.join(missing)}" if missing else "all init args recorded"
        lines.append(f"- {where}: {cls.__module__}.{cls.__qualname__} ({told})")
    return lines


def _object_paths(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _object_paths(value, f"{prefix}{key}.")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _object_paths(value, f"{prefix}{i}.")
    elif not _is_plain(node):
        yield prefix.rstrip("."), node


def _described(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _described(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_described(v) for v in node]
    if isinstance(node, os.PathLike):
        return os.fspath(node)
    return node if _is_plain(node) else describe_object(node)[0]


def _saved_config(cli: DetLightCLI, note: list[str]) -> str:
    """The resolved config as YAML, objects replaced by their descriptions, headed by ``note`` as comments."""
    import yaml

    subcommand = str(cli.subcommand)
    config = cli.config.get(subcommand, cli.config)
    plain = _described(config.as_dict() if hasattr(config, "as_dict") else dict(config))
    plain.pop("config", None)
    text = yaml.safe_dump(plain, sort_keys=False, default_flow_style=False)
    return "".join(f"# {line}\n" for line in note) + text


def _check_ckpt_path(ckpt_path: str) -> None:
    """The CLI's early check of a ``ckpt_path`` file (missing, corrupt or unsafe files fail before any build)."""
    from detlight.errors import check_checkpoint_file

    if ckpt_path not in CKPT_PATH_KEYWORDS:
        check_checkpoint_file(ckpt_path)


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Put the caller's SIGTERM / SIGINT handlers back afterwards (a failing run ignores them while it shuts down)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


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
    """Turn the parser's usage-and-exit into a ``ValueError`` that carries its message (a notebook-friendly error).

    detlight's own errors (a :class:`~detlight.exceptions.UsageError` from the parser included, a ``ValueError``
    too) pass unchanged: the same kind and one-line message as ``detlight <subcommand>`` prints.
    """
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


class _Tee(io.TextIOBase):
    """Writes to the real stream and remembers what was written (warnings stay visible)."""

    def __init__(self, buffer: io.StringIO, stream: Any) -> None:
        self._buffer, self._stream = buffer, stream

    def write(self, text: str) -> int:
        self._buffer.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


def fit(config: ConfigArg = None, overrides: Overrides = None, *, model: Any = None, datamodule: Any = None,
        callbacks: Sequence[Callback] = (), ckpt_path: str | None = None) -> Run:
    """``detlight fit``: build from ``config`` + ``overrides`` exactly as the CLI does, train, return the :class:`Run`.

    Python objects can stand in for any part of the config: ``model=`` (a detector ``nn.Module``, which becomes
    ``model.model``, or a whole :class:`~detlight.module.DetectorModule`), ``datamodule=`` (a LightningDataModule,
    which becomes ``data``), or object values in ``overrides`` (``{"model.model": detector}``). The configs are then
    merged in Python (nested keys merged, later files win) and built from that dict; the saved ``config.yaml``
    records each object's class and the init args that could be read back from it, and says which could not (see
    :func:`describe_object`).

    Args:
        config: a YAML path (or mmcv ``.py`` config, converted as the CLI does), a config dict, or a list of those
            (applied in order, last wins: repeated ``--config``).
        overrides: ``--key=value`` settings applied after the configs (see :func:`overrides_to_args`).
        model: a detector or DetectorModule object (see above).
        datamodule: a LightningDataModule object.
        callbacks: Lightning callbacks given as Python objects (e.g. defined in a notebook), added before the
            checkpoint callbacks. They are not part of the saved ``config.yaml``.
        ckpt_path: resume from this checkpoint (``--ckpt_path``; ``"last"`` finds the run's last one).

    Raises:
        ValueError: the CLI rejected the arguments (the message is the CLI's).
        FileNotFoundError: a config file does not exist.
        UsageError: ``model`` / ``datamodule`` is not of a usable type.
    """
    return _run("fit", config, overrides, callbacks, ckpt_path, model, datamodule)


def validate(config: ConfigArg = None, overrides: Overrides = None, *, model: Any = None, datamodule: Any = None,
             callbacks: Sequence[Callback] = (), ckpt_path: str | None = None) -> Run:
    """``detlight validate``; the results are in :attr:`Run.metrics` (``val/...``). Arguments as :func:`fit`."""
    return _run("validate", config, overrides, callbacks, ckpt_path, model, datamodule)


def test(config: ConfigArg = None, overrides: Overrides = None, *, model: Any = None, datamodule: Any = None,
         callbacks: Sequence[Callback] = (), ckpt_path: str | None = None) -> Run:
    """``detlight test``; the results are in :attr:`Run.metrics` (``test/...``). Arguments as :func:`fit`."""
    return _run("test", config, overrides, callbacks, ckpt_path, model, datamodule)


test.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported into a test module


def predict(config: ConfigArg = None, overrides: Overrides = None, *, model: Any = None, datamodule: Any = None,
            callbacks: Sequence[Callback] = (), ckpt_path: str | None = None) -> Run:
    """``detlight predict``; :attr:`Run.results` is a list (per batch) of per-image detection dicts."""
    return _run("predict", config, overrides, callbacks, ckpt_path, model, datamodule)


# ---------------------------------------------------------------------------------------------- mmdet's API
def train_detector(model: torch.nn.Module, dataset: Any, cfg: Any, distributed: bool = False, validate: bool = True,
                   timestamp: str | None = None, meta: dict[str, Any] | None = None) -> Run:
    """mmdet's ``train_detector(model, dataset, cfg, distributed, validate, timestamp, meta)`` on detlight.

    Replaces: ``mmdet.apis.train_detector``. ``cfg`` (an mmcv config dict, an ``mmcv.Config`` or a ``.py`` path) is
    converted with :func:`detlight.convert.converter.convert_config` (the mapping report is printed), then built by the
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
    from detlight.convert.config import load_config
    from detlight.convert.converter import convert_config

    source = "train_detector"
    if isinstance(cfg, (str, os.PathLike)):
        source = os.fspath(cfg)
        cfg = load_config(source)
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
        warnings.filterwarnings("ignore", message=_UNSERIALIZABLE)
        return _launch("fit", {"fit": converted}, (), {"save_config_callback": None}, cli_class=_GivenDatasetCLI,
                       train_set=train_set, config_note=_object_note(converted, None))


def _set_text_logger_args(converted: dict[str, Any], timestamp: str | None, meta: dict[str, Any] | None) -> None:
    for spec in converted.get("trainer", {}).get("callbacks", []) or []:
        if isinstance(spec, dict) and str(spec.get("class_path", "")).endswith("TextLogger"):
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


