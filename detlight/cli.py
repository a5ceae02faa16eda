"""``detlight fit|validate|test|predict|convert``: the counterpart of mmdet's ``tools/train.py`` and ``tools/test.py``.

A thin :class:`~lightning.pytorch.cli.LightningCLI` subclass: ``--config`` may be repeated (applied in order, last
wins), ``--print_config`` prints the resolved config, and the resolved config is saved as ``config.yaml`` in the run
directory. An mmcv ``.py`` config given to ``--config`` is converted on the fly by :mod:`detlight.compat.convert`.
``detlight convert`` writes that conversion to a YAML file with a mapping report.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detlight.cli_app import DetLightCLI

__all__ = ["DetLightCLI", "main"]


def __getattr__(name: str) -> Any:
    # The Lightning-based classes live in detlight.cli_app so that `detlight convert` starts without Lightning.
    if name in ("DetLightCLI", "TRAINER_DEFAULTS"):
        from detlight import cli_app

        return getattr(cli_app, name)
    if name == "_convert_py_configs":  # old private name; now detlight.compat.convert_py_configs
        from detlight.compat.convert import convert_py_configs

        return convert_py_configs
    raise AttributeError(f"module 'detlight.cli' has no attribute {name!r}")


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point ``detlight``: known errors print ``detlight: error: ...`` (``--debug`` for a traceback)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["convert"]:  # before anything imports Lightning: converting a config takes milliseconds
        from detlight.compat.cli import convert_main

        raise SystemExit(convert_main(argv[1:]))
    from detlight.errors import run_main

    run_main(_main, argv)


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
        from detlight import __version__

        print(f"detlight {__version__}")
        return
    if argv and argv[0] == "convert":
        from detlight.compat.cli import convert_main

        raise SystemExit(convert_main(argv[1:]))
    if argv and argv[0] == "check":
        from detlight.check import check_main

        raise SystemExit(check_main(argv[1:]))
    from detlight.errors import FriendlyArgumentParser, check_checkpoint_file

    ckpt = _option_value(argv, "--ckpt_path")
    if ckpt and ckpt not in ("last", "auto", "best", "hpc", "registry", "null"):
        check_checkpoint_file(ckpt)  # before building anything: missing, corrupt or unsafe files fail fast
    # argv is sys.argv[1:] (or the caller's list) after .py conversion; LightningCLI warns when it sees both.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    from detlight.cli_app import DetLightCLI
    from detlight.compat.convert import convert_py_configs

    DetLightCLI(args=convert_py_configs(argv), parser_class=FriendlyArgumentParser)


def _option_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


if __name__ == "__main__":
    main()
