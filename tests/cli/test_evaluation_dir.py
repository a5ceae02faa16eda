"""Where ``validate`` / ``test`` write their logs: beside the checkpoint's run, not in a new ``version_N``."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from detlight.cli_app import evaluation_beside_checkpoint, run_dir_of_checkpoint


def _run(root: Path, marker: str = "config.yaml") -> Path:
    run = root / "quickstart" / "version_3"
    (run / "checkpoints").mkdir(parents=True)
    (run / marker).write_text("x")
    (run / "checkpoints" / "epoch_2.ckpt").write_bytes(b"x")
    return run


def test_a_checkpoint_in_a_run_names_that_run(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert run_dir_of_checkpoint(str(run / "checkpoints" / "epoch_2.ckpt")) == run
    (run / "flat.ckpt").write_bytes(b"x")
    assert run_dir_of_checkpoint(str(run / "flat.ckpt")) == run
    other = _run(tmp_path / "b", marker="20240101_000000.log.json")
    assert run_dir_of_checkpoint(str(other / "checkpoints" / "epoch_2.ckpt")) == other


def test_a_checkpoint_outside_a_run_keeps_the_configured_place(tmp_path: Path) -> None:
    (tmp_path / "downloaded.ckpt").write_bytes(b"x")
    trainer = pl.Trainer(logger=TensorBoardLogger(str(tmp_path / "logs"), name="eval"), enable_progress_bar=False,
                         enable_model_summary=False)
    assert run_dir_of_checkpoint(str(tmp_path / "downloaded.ckpt")) is None
    assert run_dir_of_checkpoint("s3://bucket/x.ckpt") is None and run_dir_of_checkpoint(str(tmp_path / "no")) is None
    assert evaluation_beside_checkpoint(trainer, str(tmp_path / "downloaded.ckpt"), "validate") is None
    assert Path(trainer.logger.log_dir) == tmp_path / "logs" / "eval" / "version_0"


def test_tensorboard_and_csv_loggers_move_others_stay(tmp_path: Path) -> None:
    run = _run(tmp_path)
    other = object.__new__(type("WandbLike", (pl.loggers.Logger,), {"name": "w", "version": 0,
                                                                     "log_metrics": None, "log_hyperparams": None}))
    trainer = pl.Trainer(logger=[TensorBoardLogger(str(tmp_path), name="quickstart"), CSVLogger(str(tmp_path)), other],
                         enable_progress_bar=False, enable_model_summary=False)
    moved = evaluation_beside_checkpoint(trainer, str(run / "checkpoints" / "epoch_2.ckpt"), "test")
    assert moved == str(run / "test" / "epoch_2")
    assert [type(lg) for lg in trainer.loggers] == [TensorBoardLogger, CSVLogger, type(other)]
    assert trainer.loggers[2] is other
    assert [Path(lg.log_dir) for lg in trainer.loggers[:2]] == [run / "test" / "epoch_2"] * 2
