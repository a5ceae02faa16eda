"""``detlight fit|validate|test|predict|convert``: the counterpart of mmdet's ``tools/train.py`` and ``tools/test.py``.

A thin :class:`~lightning.pytorch.cli.LightningCLI` subclass: ``--config`` may be repeated (applied in order, last
wins), ``--print_config`` prints the resolved config, and the resolved config is saved as ``config.yaml`` in the run
directory. An mmcv ``.py`` config given to ``--config`` is converted on the fly by :mod:`detlight.compat.convert`.
``detlight convert`` writes that conversion to a YAML file with a mapping report.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from detlight.module import DetectorModule

__all__ = ["DetLightCLI", "main"]

TRAINER_DEFAULTS: dict[str, Any] = {
    # mmdet samplers are per process and do not reshuffle validation; detlight's DetSampler does the splitting.
    "use_distributed_sampler": False,
    # mmcv has no sanity-check pass; two extra val batches would also feed the evaluator.
    "num_sanity_val_steps": 0,
}


class DetLightCLI(LightningCLI):
    """LightningCLI for :class:`~detlight.module.DetectorModule` and any detlight datamodule (``class_path``)."""

    def __init__(self, args: Sequence[str] | dict[str, Any] | None = None, run: bool = True, **kwargs: Any) -> None:
        # Build only the parser of the subcommand asked for: each one holds the whole Trainer signature, and
        # building all four costs ~0.3 s of start-up for nothing.
        first = next((a for a in args if not a.startswith("-")), None) if isinstance(args, (list, tuple)) else None
        self._only_subcommand = first if first in LightningCLI.subcommands() else None
        kwargs.setdefault("trainer_defaults", dict(TRAINER_DEFAULTS))
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        super().__init__(
            DetectorModule,
            LightningDataModule,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            args=args,  # type: ignore[arg-type]
            run=run,
            **kwargs,
        )

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Lightning's subcommands, narrowed to the one on the command line when there is one."""
        full = LightningCLI.subcommands()
        only = getattr(self, "_only_subcommand", None)
        return {only: full[only]} if only in full else full

    def before_instantiate_classes(self) -> None:
        """Fail fast when ``devices x num_nodes`` does not fit torchrun/srun or MASTER_ADDR/PORT are missing."""
        from detlight.dist import check_cli_trainer_config

        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is not None and config.get("trainer") is not None:
            check_cli_trainer_config(config.get("trainer"))

    def before_fit(self) -> None:
        """``ckpt_path: last`` (mmcv ``auto_resume``): the newest checkpoint of any earlier run in the work dir."""
        from detlight.errors import check_work_dir
        from detlight.resume import resolve_ckpt_path

        check_work_dir(str(self.trainer.default_root_dir))
        key = f"{self.subcommand}.ckpt_path"
        self.config_init[key] = resolve_ckpt_path(self.config_init.get(key), self.trainer)

    def after_fit(self) -> None:
        """Say where the run's outputs are (mmcv printed its work_dir)."""
        trainer = self.trainer
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask, or rank 0 waits for the others
        if trainer.global_rank != 0:
            return
        lines = [f"Run directory: {log_dir}"]
        ckpt = trainer.checkpoint_callback  # a ModelCheckpoint has these paths; another Checkpoint may not
        best: str = getattr(ckpt, "best_model_path", "") or ""
        last: str = getattr(ckpt, "last_model_path", "") or ""
        if best:
            lines.append(f"Best checkpoint: {best}")
        if last:
            lines.append(f"Last checkpoint: {last}")
        results = getattr(self.model, "eval_results", None)
        if results:
            lines.append("Final evaluation: " + ", ".join(f"{k}: {v:.4f}" for k, v in results.items()))
        if log_dir:
            lines.append(f"TensorBoard: tensorboard --logdir {log_dir}")
        print("\n".join(lines), flush=True)


def _convert_py_configs(argv: list[str]) -> list[str]:
    """Replace each ``--config x.py`` by a YAML converted from the mmcv config (safe reader, nothing executed)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if arg in ("--config", "-c") and i + 1 < len(argv):
            value, step = argv[i + 1], 2
        elif arg.startswith("--config="):
            value, step = arg.split("=", 1)[1], 1
        if value is not None and value.endswith(".py"):
            from detlight.compat.convert import convert_file

            yaml_text, report = convert_file(value)
            fd, path = tempfile.mkstemp(prefix=os.path.basename(value)[:-3] + ".", suffix=".yaml")
            with os.fdopen(fd, "w") as f:
                f.write(yaml_text)
            print(report, file=sys.stderr)
            out += ["--config", path]
            i += step
            continue
        out.append(arg)
        i += 1
    return out


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point ``detlight``: known errors print ``detlight: error: ...`` (``--debug`` for a traceback)."""
    from detlight.errors import run_main

    run_main(_main, list(sys.argv[1:] if args is None else args))


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
    DetLightCLI(args=_convert_py_configs(argv), parser_class=FriendlyArgumentParser)


def _option_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


if __name__ == "__main__":
    main()
