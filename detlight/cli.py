"""``detlight fit|validate|test|predict|convert``: the counterpart of mmdet's ``tools/train.py`` and ``tools/test.py``.

A thin :class:`~lightning.pytorch.cli.LightningCLI` subclass: ``--config`` may be repeated (applied in order, last
wins), ``--print_config`` prints the resolved config, and the resolved config is saved as ``config.yaml`` in the run
directory. An mmcv ``.py`` config given to ``--config`` is converted on the fly by :mod:`detlight.convert.entry`.
``detlight convert`` writes that conversion to a YAML file with a mapping report.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from detlight.cli_app import DetLightCLI

__all__ = ["CKPT_PATH_KEYWORDS", "DetLightCLI", "build_cli", "check_config_files", "main", "remove_files"]

def __getattr__(name: str) -> Any:
    # The Lightning-based class lives in detlight.cli_app so that `detlight convert` starts without Lightning.
    if name in ("DetLightCLI", "TRAINER_DEFAULTS"):
        from detlight import cli_app

        return getattr(cli_app, name)
    from detlight._aliases import _MISSING, resolve_alias  # old names (detlight._aliases.ALIASES)

    value = resolve_alias(f"detlight.cli.{name}")
    if value is not _MISSING:
        return value
    raise AttributeError(f"module 'detlight.cli' has no attribute {name!r}")


#: ``--ckpt_path`` values that name no file: Lightning's keywords and detlight's ``last`` (mmcv ``auto_resume``).
CKPT_PATH_KEYWORDS = ("last", "auto", "best", "hpc", "registry", "null")


def check_config_files(argv: Sequence[str]) -> None:
    """Read each ``--config`` YAML file given in ``argv`` and refuse an empty one, a non-mapping or a syntax error.

    jsonargparse reports these without the file name ("Unexpected config:", a bare key, ``<unicode string>``).

    Raises:
        ConfigError: naming the file (and line) and what a config must look like.
    """
    import yaml

    from detlight.exceptions import ConfigError

    shape = "a config is a mapping with keys such as `trainer:`, `model:`, `data:` (see configs/quickstart.yaml)"
    for path in _option_values(list(argv), ("--config", "-c")):
        if path.endswith(".py") or not os.path.isfile(path):
            continue  # mmcv configs are read by the converter; a missing file is reported by the parser
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
            problem = " ".join(str(getattr(err, "problem", None) or err).split())
            context = getattr(err, "context", None)
            raise ConfigError(f"{where}: YAML syntax error: {problem}"
                              + (f" ({' '.join(str(context).split())})" if context else "")) from None
        if content is None:
            raise ConfigError(f"config file {path} is empty; {shape}")
        if not isinstance(content, dict):
            preview = repr(content[:3] if isinstance(content, list) else content)[:60]
            raise ConfigError(f"config file {path}: the top level is a {type(content).__name__} ({preview}), not a "
                              f"mapping; {shape}")


_CLI = TypeVar("_CLI", bound="DetLightCLI")


def build_cli(args: Sequence[str] | dict[str, Any], *, run: bool = True,
              cli_class: type[_CLI] | None = None,
              **kwargs: Any) -> _CLI:
    """Build a :class:`DetLightCLI` (or ``cli_class``) as ``detlight`` does; ``detlight check`` and the API use it too.

    For command-line ``args``: a ``--ckpt_path`` file is checked before anything is built, mmcv ``.py`` configs are
    converted and YAML configs are checked (:func:`check_config_files`). The parser is
    :class:`~detlight.errors.FriendlyArgumentParser` unless ``parser_class`` is given. A dict ``args`` (a config
    already in memory) is passed as is.

    Args:
        args: ``[subcommand, options...]`` (options only with ``run=False``), or a config dict.
        run: run the subcommand (``False``: only build the Trainer, module and datamodule).
        cli_class: a :class:`DetLightCLI` subclass (default: :class:`DetLightCLI`).
        **kwargs: passed to ``cli_class``.
    """
    from detlight.cli_app import DetLightCLI
    from detlight.convert.entry import convert_py_configs
    from detlight.errors import FriendlyArgumentParser, check_checkpoint_file

    temporary: list[str] = []  # YAML converted from .py configs: deleted when the run is over, not at exit
    try:
        if not isinstance(args, dict):
            given = list(args)
            ckpt = _option_value(given, "--ckpt_path")
            if ckpt and ckpt not in CKPT_PATH_KEYWORDS:
                check_checkpoint_file(ckpt)  # before building anything: missing, corrupt or unsafe files fail fast
            args = convert_py_configs(given)
            before = set(_option_values(given, ("--config", "-c")))
            temporary = [a for a in _option_values(args, ("--config",)) if a not in before]
            check_config_files(args)
            if not run:  # no subcommand: its own keys (ckpt_path, written by every .py conversion) are unknown
                args = _without_subcommand_keys(args, temporary)
        kwargs.setdefault("parser_class", FriendlyArgumentParser)
        with warnings.catch_warnings():
            # args come from the caller, not sys.argv; LightningCLI warns when it sees both.
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
            return (cli_class or DetLightCLI)(args=args, run=run, **kwargs)  # type: ignore[return-value]
    finally:
        remove_files(temporary)


#: config keys that belong to a subcommand (``fit(ckpt_path=...)``), not to the Trainer / model / data parser
SUBCOMMAND_KEYS = ("ckpt_path",)


def _without_subcommand_keys(argv: list[str], temporary: list[str]) -> list[str]:
    """``argv`` with each ``--config`` YAML that holds :data:`SUBCOMMAND_KEYS` replaced by a copy without them.

    ``detlight check`` builds the parser without subcommands; a converted ``.py`` config always carries
    ``ckpt_path``. The copies are appended to ``temporary`` (deleted when the run is over).
    """
    import tempfile

    import yaml

    out = list(argv)
    for i, arg in enumerate(out):
        if arg not in ("--config", "-c") or i + 1 >= len(out) or not os.path.isfile(out[i + 1]):
            continue
        with open(out[i + 1], encoding="utf-8") as f:
            content = yaml.safe_load(f)
        if not isinstance(content, dict) or not any(k in content for k in SUBCOMMAND_KEYS):
            continue
        stripped = {k: v for k, v in content.items() if k not in SUBCOMMAND_KEYS}
        fd, path = tempfile.mkstemp(suffix=".yaml", prefix="detlight-check-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(stripped, f, sort_keys=False)
        temporary.append(path)
        out[i + 1] = path
    return out


def remove_files(paths: Sequence[str]) -> None:
    """Delete the given files, ignoring ones already gone (the temporary YAML of a converted ``.py`` config)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point ``detlight``: known errors print ``detlight: error: ...`` (``--debug`` for a traceback)."""
    from detlight.exceptions import DetLightError
    from detlight.openmmlab.switch import pop_cli_switch  # --openmmlab true|false|auto (mmdet configs)

    try:
        argv = pop_cli_switch(sys.argv[1:] if args is None else args)
    except DetLightError as err:
        print(f"detlight: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if argv[:1] == ["convert"]:  # before anything imports Lightning: converting a config takes milliseconds
        from detlight.convert.cli import convert_main

        raise SystemExit(convert_main(argv[1:]))
    from detlight.errors import run_main

    run_main(_main, argv, exiting=args is None)  # the console script: the process ends with the SystemExit


TOP_LEVEL_HELP = """usage: detlight [-h] {fit,validate,test,predict,check,convert} ...

mmdetection-style detection training, run by PyTorch Lightning.

subcommands:
  fit        train (mmdet tools/train.py); --config may be repeated, later files win
  validate   evaluate on the val split (--ckpt_path to pick the weights)
  test       evaluate on the test split
  predict    run inference
  check      preflight: build everything, one batch forward/backward, report problems
  convert    mmcv/mmdet .py config -> detlight YAML plus a mapping report (read safely, never executed)

`detlight <subcommand> --help` lists every option; `--print_config` shows the resolved config.
Add --debug (or DETLIGHT_DEBUG=1) to see full tracebacks.
"""


def _main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(TOP_LEVEL_HELP, end="")
        return
    if argv[0] == "--version":
        from detlight._version import __version__

        print(f"detlight {__version__}")
        return
    if argv and argv[0] == "convert":
        from detlight.convert.cli import convert_main

        raise SystemExit(convert_main(argv[1:]))
    if argv and argv[0] == "check":
        from detlight.check import run_check

        # run=False: the parser has no subcommands, so the fit options are given without "fit".
        check_args = argv[2:] if argv[1:2] == ["fit"] else argv[1:]
        raise SystemExit(run_check(build_cli(check_args, run=False, save_config_callback=None)))
    build_cli(argv)  # DetLightCLI turns known failures (a checkpoint from another model, ...) into detlight errors


def _option_value(argv: list[str], name: str) -> str | None:
    values = _option_values(argv, (name,))
    return values[-1] if values else None


def _option_values(argv: list[str], names: Sequence[str]) -> list[str]:
    """Every value of the options ``names`` in ``argv`` (``--name value`` or ``--name=value``), in order."""
    values = []
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif any(arg.startswith(name + "=") for name in names):
            values.append(arg.split("=", 1)[1])
    return values


if __name__ == "__main__":
    main()
