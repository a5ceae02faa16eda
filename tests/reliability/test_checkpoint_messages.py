"""Checkpoint and resume messages point the right way: a corrupt file is corrupt (not "unsafe", no
``weights_only=False`` advice, no torch ``mmap`` note), a folder is a folder, the truncated-newest fallback is said
once, the preemption line counts epochs from 1 and names the epoch a save at its end belongs to, and a resume shows
none of Lightning's ``weights_only`` / "dirpath has changed" notes."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from detlight.callbacks.preemption import Preemption
from detlight.cli import main
from detlight.errors import check_checkpoint_file
from detlight.exceptions import CheckpointError
from detlight.resume import resolve_ckpt_path

HERE = Path(__file__).resolve().parent
QUICKSTART = str(HERE.parents[1] / "configs/quickstart.yaml")
sys.path.insert(0, str(HERE))
from resume_worker import build_2d  # noqa: E402

WRONG_WAY = ("weights_only=False", "`weights_only` set to `False`", "arbitrary unpickling", "mmap", "not found")


@pytest.mark.parametrize("head", [b"", b"\x80\x02"], ids=["random-bytes", "random-bytes-after-a-pickle-header"])
def test_random_bytes_are_a_corrupt_file_not_an_unsafe_one(tmp_path, head):
    path = tmp_path / "epoch_1.ckpt"
    path.write_bytes(head + bytes(range(256)) * 20)
    with pytest.raises(CheckpointError) as info:
        check_checkpoint_file(str(path))
    message = str(info.value)
    assert message.startswith(f"cannot read checkpoint {path}: "), message
    assert "not a torch checkpoint" in message and "\n" not in message, message
    assert not [w for w in WRONG_WAY if w in message], message


def test_a_file_that_needs_unpickling_is_still_refused_as_unsafe(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match=r"needs arbitrary unpickling \(argparse.Namespace\)") as info:
        check_checkpoint_file(str(path))
    assert "weights_only=False" not in str(info.value)


def test_a_legacy_format_checkpoint_is_read_without_torch_mmap_note(tmp_path):
    path = tmp_path / "legacy.ckpt"
    torch.save({"pytorch-lightning_version": "2.6.6", "state_dict": {"w": torch.ones(2)}}, path,
               _use_new_zipfile_serialization=False)
    check_checkpoint_file(str(path))  # torch refuses mmap for this format; the check reads it without


@pytest.mark.parametrize(("content", "what"), [
    ({"meta": {"epoch": 1}, "state_dict": {"w": torch.ones(1)}}, "an mmcv-style checkpoint (meta / state_dict)"),
    ({"w": torch.ones(1)}, "a bare state_dict or other weights")])
def test_weights_that_are_not_a_run_checkpoint_point_to_load_from(tmp_path, capsys, content, what):
    path = tmp_path / "epoch_12.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError) as info:
        check_checkpoint_file(str(path))
    assert str(info.value) == (f"{path} is not a checkpoint of a detlight (Lightning) run but {what}; `ckpt_path` "
                               f"resumes or evaluates such a run. Load these weights with `--model.load_from {path}`")
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--config", QUICKSTART, "--ckpt_path", str(path)])
    assert exc.value.code == 2 and f"detlight: error: {info.value}" in capsys.readouterr().err


def test_a_folder_passed_as_checkpoint_is_named_a_folder(tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"w": torch.ones(1)}, folder / "epoch_1.ckpt")
    with pytest.raises(CheckpointError) as info:
        check_checkpoint_file(str(folder))
    message = str(info.value)
    assert message.startswith(f"checkpoint {folder} is a folder, not a file"), message
    assert str(folder / "epoch_1.ckpt") in message and "--ckpt_path last" in message and "not found" not in message
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", QUICKSTART, "--ckpt_path", str(folder)])
    assert exc.value.code == 2
    assert f"detlight: error: {message}" in capsys.readouterr().err
    trainer = pl.Trainer(default_root_dir=str(tmp_path), logger=False, enable_checkpointing=False)
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        resolve_ckpt_path(str(folder), trainer)


# ------------------------------------------------------------------------------ the preemption line
class _SigtermAt(pl.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop.total_batch_idx + 1 == self.at:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler only raises a flag


@pytest.fixture()
def _sigterm_handler_restored():
    saved = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, saved)  # Preemption ignores SIGTERM once it has saved


@pytest.mark.usefixtures("_sigterm_handler_restored")
@pytest.mark.parametrize(("at", "where"), [(6, "at the end of epoch 1 (iteration 6)"),
                                           (8, "in epoch 2 after its batch 2/6 (iteration 8)"),
                                           (3, "in epoch 1 after its batch 3/6 (iteration 3)")])
def test_preemption_line_counts_epochs_from_1_and_names_the_epoch_a_save_ends(tmp_path, capsys, at, where):
    data, module = build_2d(str(tmp_path), 0)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False,
                         num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(tmp_path),
                         callbacks=[_SigtermAt(at), Preemption(dirpath=str(tmp_path))])
    with pytest.raises(SystemExit):
        trainer.fit(module, datamodule=data)
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("detlight: preempted")]
    assert line.startswith(f"detlight: preempted {where}; checkpoint written to {tmp_path / 'preempted.ckpt'}"), line


# ------------------------------------------------------------------------------ a resume's output
@pytest.mark.slow
def test_resume_past_a_truncated_newest_checkpoint_says_so_once_and_nothing_of_lightning(tmp_path):
    args = [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in {
        "data.init_args.synthetic.num_train": 4, "data.init_args.synthetic.num_val": 2,
        "data.init_args.samples_per_gpu": 2, "data.init_args.workers_per_gpu": 0,
        "trainer.limit_val_batches": 0, "trainer.default_root_dir": str(tmp_path / "wd"),
        "trainer.logger.init_args.save_dir": str(tmp_path / "wd")}.items()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")

    def fit(*extra: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "detlight.cli", "fit", "--config", QUICKSTART, *args, *extra],
                              capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    fit("--trainer.max_epochs=2")
    checkpoints = tmp_path / "wd" / "quickstart" / "version_0" / "checkpoints"
    newest = checkpoints / "epoch_2.ckpt"
    newest.write_bytes(newest.read_bytes()[:3000])  # a copy cut short
    output = fit("--trainer.max_epochs=3", "--ckpt_path=last")
    said = [line for line in output.splitlines() if "skipping unreadable checkpoint" in line]
    assert len(said) == 1, output[-3000:]
    assert str(newest) in said[0] and f"using {checkpoints / 'epoch_1.ckpt'}" in said[0], said[0]
    assert "dirpath has changed" not in output and "weights_only" not in output, output[-3000:]
