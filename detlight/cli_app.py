"""The :class:`~lightning.pytorch.cli.LightningCLI` subclass behind ``detlight fit|validate|test|predict``.

Replaces: the argument parsing and runner building of mmdet's ``tools/train.py`` / ``tools/test.py``. Kept apart from
:mod:`detlight.cli` (the console entry point and :func:`~detlight.cli.build_cli`) so that ``detlight convert`` does
not import Lightning; ``detlight.cli.DetLightCLI`` still resolves to this class.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from detlight.module import DetectorModule
from detlight.upstream_internals import action_typehint, parser_option_actions, set_action_typehint, uncached_union

__all__ = ["TRAINER_DEFAULTS", "DetLightCLI"]

TRAINER_DEFAULTS: dict[str, Any] = {
    # mmdet samplers are per process and do not reshuffle validation; detlight's DetSampler does the splitting.
    "use_distributed_sampler": False,
    # mmcv has no sanity-check pass; two extra val batches would also feed the evaluator.
    "num_sanity_val_steps": 0,
}


class DetLightCLI(LightningCLI):
    """LightningCLI for :class:`~detlight.module.DetectorModule` and any detlight datamodule (``class_path``).

    A failure that is input rather than a bug leaves it as a :class:`~detlight.exceptions.DetLightError` (see
    :func:`detlight.errors.translate_error`), so ``detlight fit`` and :func:`detlight.fit` report it alike; Ctrl-C
    leaves it as a ``KeyboardInterrupt`` whose message names the run's last checkpoint (Lightning itself would exit
    with status 1), after the loader workers are shut down.
    """

    def __init__(self, args: Sequence[str] | dict[str, Any] | None = None, run: bool = True, **kwargs: Any) -> None:
        # Build only the parser of the subcommand asked for: each one holds the whole Trainer signature, and
        # building all four costs ~0.3 s of start-up for nothing.
        first = next((a for a in args if not a.startswith("-")), None) if isinstance(args, (list, tuple)) else None
        self._only_subcommand = first if first in LightningCLI.subcommands() else None
        kwargs.setdefault("trainer_defaults", dict(TRAINER_DEFAULTS))
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        from detlight.callbacks.progress_bar import quiet_lightning

        quiet_lightning()
        try:
            super().__init__(
                DetectorModule,
                LightningDataModule,
                subclass_mode_data=True,
                auto_configure_optimizers=False,
                args=args,  # type: ignore[arg-type]
                run=run,
                **kwargs,
            )
        except SystemExit as exc:
            if not isinstance(exc.__context__, KeyboardInterrupt):
                raise
            # Lightning answers Ctrl-C inside fit with sys.exit(1); the CLI exits 130 saying where the run stands.
            raise KeyboardInterrupt(self._interrupted_message()) from None
        except KeyboardInterrupt as exc:
            raise KeyboardInterrupt(str(exc) or self._interrupted_message()) from None
        except Exception as exc:
            from detlight.errors import translate_error

            datamodule = getattr(self, "datamodule", None)
            workers, batch = _loader_settings(datamodule, getattr(self, "trainer", None))
            translated = translate_error(exc, getattr(self, "config", None), workers, batch)
            if translated is None:
                raise
            raise translated from exc

    def _interrupted_message(self) -> str:
        """``interrupted (Ctrl-C); last checkpoint: PATH ...``, after the run's loader workers are shut down."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return "interrupted (Ctrl-C) before the run started; nothing was saved"
        from detlight.data.loader import release_workers
        from detlight.resume import find_last_checkpoint, run_checkpoint_dirs

        release_workers(trainer)
        last = find_last_checkpoint(run_checkpoint_dirs(trainer))
        if last is None:
            return "interrupted (Ctrl-C); no checkpoint was written yet"
        return (f"interrupted (Ctrl-C); last checkpoint: {last} (resume with `--ckpt_path last` or "
                f"`--ckpt_path {last}`)")

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Lightning's subcommands, narrowed to the one on the command line when there is one."""
        full = LightningCLI.subcommands()
        only = getattr(self, "_only_subcommand", None)
        return {only: full[only]} if only in full else full

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse with each torchvision builder's own defaults.

        See :func:`~detlight.models.torchvision_factory.builder_signatures`; installed only when the arguments or
        config files name ``torchvision.models.detection``.
        """
        from detlight.models.torchvision_factory import builder_signatures, mentions_builders

        self._builder_signatures = mentions_builders(args if args is not None else sys.argv[1:])
        with builder_signatures(self._builder_signatures):
            super().parse_arguments(parser, args)

    def instantiate_classes(self) -> None:
        """Instantiate with the signatures the config was parsed with."""
        from detlight.models.torchvision_factory import builder_signatures

        with builder_signatures(getattr(self, "_builder_signatures", True)):
            super().instantiate_classes()

    def add_arguments_to_parser(self, parser: Any) -> None:
        """``--trainer.limit_val_batches=1`` means one batch (an int), ``=1.0`` the whole set, as in Python."""
        _int_before_float(parser, [f"--trainer.limit_{s}_batches" for s in ("train", "val", "test", "predict")]
                          + ["--trainer.val_check_interval"])

    def before_instantiate_classes(self) -> None:
        """Fail fast when ``devices x num_nodes`` does not fit torchrun/srun or MASTER_ADDR/PORT are missing."""
        from detlight.dist import check_cli_trainer_config

        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is not None and config.get("trainer") is not None:
            check_cli_trainer_config(config.get("trainer"))

    def after_instantiate_classes(self) -> None:
        """A plain ``TQDMProgressBar`` becomes detlight's (1-based epochs, loss on the bar)."""
        super().after_instantiate_classes()
        from detlight.callbacks.progress_bar import use_detlight_progress_bar

        if getattr(self, "trainer", None) is not None:
            use_detlight_progress_bar(self.trainer)

    def before_fit(self) -> None:
        """``ckpt_path: last`` (mmcv ``auto_resume``): the newest checkpoint of any earlier run in the work dir."""
        from detlight.errors import check_work_dir

        check_work_dir(str(self.trainer.default_root_dir))
        self._resolve_ckpt_path("fit")

    def before_validate(self) -> None:
        """``ckpt_path: last``: evaluate the newest readable checkpoint of the run (not Lightning's in-memory one).

        The evaluation's logs go beside the checkpoint's run (see :func:`evaluation_beside_checkpoint`)."""
        self._resolve_ckpt_path("validate")
        evaluation_beside_checkpoint(self.trainer, self.config_init.get(f"{self.subcommand}.ckpt_path"), "validate")

    def before_test(self) -> None:
        """As :meth:`before_validate`."""
        self._resolve_ckpt_path("test")
        evaluation_beside_checkpoint(self.trainer, self.config_init.get(f"{self.subcommand}.ckpt_path"), "test")

    def after_validate(self) -> None:
        """Say where the evaluation's logs went."""
        self._say_log_dir()

    def after_test(self) -> None:
        """As :meth:`after_validate`."""
        self._say_log_dir()

    def _say_log_dir(self) -> None:
        log_dir = self.trainer.log_dir
        if self.trainer.global_rank == 0 and self.trainer.loggers and log_dir:
            print(f"Evaluation logs: {log_dir}", flush=True)

    def before_predict(self) -> None:
        """As :meth:`before_validate`."""
        self._resolve_ckpt_path("predict")

    def _resolve_ckpt_path(self, stage: str) -> None:
        from detlight.resume import resolve_ckpt_path

        key = f"{self.subcommand}.ckpt_path"
        self.config_init[key] = resolve_ckpt_path(self.config_init.get(key), self.trainer, stage=stage)

    def after_fit(self) -> None:
        """Say where the run's outputs are (mmcv printed its work_dir)."""
        trainer = self.trainer
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask, or rank 0 waits for the others
        if trainer.global_rank != 0:
            return
        lines = [f"Run directory: {log_dir}"]
        ckpt: Any = trainer.checkpoint_callback
        best = next((cb.best_ckpt_path for cb in trainer.callbacks  # type: ignore[attr-defined]
                     if isinstance(getattr(cb, "best_ckpt_path", None), str)), None)  # detlight's Evaluation
        best = best or getattr(ckpt, "best_model_path", None)
        if best:
            lines.append(f"Best checkpoint: {best}")
        if getattr(ckpt, "last_model_path", None):
            lines.append(f"Last checkpoint: {ckpt.last_model_path}")
        results = getattr(self.model, "eval_results", None)
        if results:  # the names of Run.metrics; COCO's -1 ("not computed") left out
            lines.append("Final evaluation: " + ", ".join(f"val/{k}: {v:.4f}" for k, v in results.items() if v != -1))
        if log_dir:
            lines.append(f"TensorBoard: tensorboard --logdir {log_dir}")
        print("\n".join(lines), flush=True)


def run_dir_of_checkpoint(ckpt_path: str) -> Path | None:
    """The run directory a checkpoint file belongs to: ``<run>/checkpoints/x.ckpt`` or ``<run>/x.ckpt`` where
    ``<run>`` holds a run's files (``config.yaml``, ``hparams.yaml`` or a ``*.log.json``); ``None`` otherwise."""
    path = Path(ckpt_path)
    if "://" in ckpt_path or not path.is_file():
        return None
    for run in (path.parent.parent, path.parent) if path.parent.name == "checkpoints" else (path.parent,):
        if (run / "config.yaml").is_file() or (run / "hparams.yaml").is_file() or any(run.glob("*.log.json")):
            return run
    return None


def evaluation_beside_checkpoint(trainer: Any, ckpt_path: str | None, stage: str) -> str | None:
    """Point the TensorBoard / CSV loggers of a ``validate`` / ``test`` run at ``<run>/<stage>/<checkpoint name>``,
    ``<run>`` being the run the checkpoint came from (:func:`run_dir_of_checkpoint`).

    Without this each evaluation opened a new ``version_N`` folder beside the training runs. Evaluating the same
    checkpoint again writes into the same folder; ``tensorboard --logdir <run>`` shows the evaluation next to its
    training. A checkpoint outside a run directory, and other loggers, keep the configured place. Returns the new
    log directory, or ``None`` when nothing moved.
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    run = run_dir_of_checkpoint(ckpt_path) if ckpt_path else None
    if run is None or not trainer.loggers:
        return None
    version = Path(str(ckpt_path)).resolve().stem  # last.ckpt as a link: the epoch it names
    loggers, moved = [], None
    for logger in trainer.loggers:
        if type(logger) in (TensorBoardLogger, CSVLogger):
            logger = type(logger)(save_dir=str(run), name=stage, version=version)
            moved = moved or logger.log_dir
        loggers.append(logger)
    trainer.loggers = loggers
    return moved

def _loader_settings(datamodule: Any, trainer: Any) -> tuple[int | None, int | None]:
    """(workers per process, batch size) of the run's train data, where they can be read."""
    workers = getattr(datamodule, "workers_per_gpu", None)
    batch = getattr(datamodule, "samples_per_gpu", None)
    if workers is None or batch is None:
        try:
            loader = trainer.train_dataloader if trainer is not None else None
        except Exception:  # noqa: BLE001 - no loader yet
            loader = None
        workers = workers if workers is not None else getattr(loader, "num_workers", None)
        batch = batch if batch is not None else getattr(loader, "batch_size", None)
    return (workers if isinstance(workers, int) else None), (batch if isinstance(batch, int) else None)


def _int_before_float(parser: Any, options: Sequence[str]) -> None:
    """Make the ``Union[int, float]`` of ``options`` try ``int`` first.

    Python's typing cache hands out an earlier ``Union[float, int]`` for Lightning's ``Optional[Union[int, float]]``
    annotations, so jsonargparse parsed ``1`` as ``1.0``, which Lightning reads as 100 %.
    """
    import typing

    for option in options:
        action = parser_option_actions(parser).get(option)
        hint = action_typehint(action)
        args = getattr(hint, "__args__", None)
        if typing.get_origin(hint) is typing.Union and args and float in args and int in args:
            ordered = (int, float, *(a for a in args if a not in (int, float)))
            set_action_typehint(action, uncached_union(hint, ordered))  # type: ignore[arg-type]
