"""Saves are written beside their target, verified, and fail as one SaveError keeping the previous file; preemption
survives a SIGTERM to the whole process group (with workers) and a second SIGTERM during its save; ``ckpt_path:
last`` skips a truncated newest file; ``validate --ckpt_path last`` evaluates the last checkpoint;
``limit_val_batches=1`` is one batch."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

import detlight.checkpoint_io as checkpoint_io
from detlight.callbacks.preemption import Preemption
from detlight.checkpoint_io import AtomicCheckpointIO, atomic_torch_save, checkpoint_problem
from detlight.errors import format_error
from detlight.exceptions import CheckpointError, SaveError
from detlight.resume import find_last_checkpoint, resolve_ckpt_path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKER = HERE / "resume_worker.py"
sys.path.insert(0, str(HERE))
from resume_worker import build_2d  # noqa: E402


def _previous(tmp_path: Path) -> Path:
    path = tmp_path / "epoch_1.ckpt"
    atomic_torch_save({"w": torch.ones(3)}, str(path))
    return path


def _assert_kept(path: Path) -> None:
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "a temporary file was left behind"


# ------------------------------------------------------------------------------ saves
@pytest.mark.parametrize(("err", "fragment"), [(errno.ENOSPC, "disk full"), (errno.EDQUOT, "quota")])
def test_disk_full_is_one_save_error_and_keeps_the_previous_file(tmp_path, monkeypatch, err, fragment):
    path = _previous(tmp_path)
    real_save = torch.save

    def full_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"PK\x03\x04 partial")
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(SaveError) as info:
        atomic_torch_save({"w": torch.zeros(3)}, str(path))
    monkeypatch.setattr(torch, "save", real_save)
    message = str(info.value)
    assert str(path) in message and fragment in message and " free in " in message, message
    assert format_error(info.value) == message and "\n" not in message
    _assert_kept(path)


def test_file_size_limit_is_one_save_error(tmp_path):
    """``ulimit -f`` in a child: the write gets EFBIG (SIGXFSZ ignored), which torch reports as a RuntimeError."""
    path = _previous(tmp_path)
    code = f"""
import resource, signal, sys, torch
from detlight.checkpoint_io import atomic_torch_save
from detlight.exceptions import SaveError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    atomic_torch_save({{"w": torch.zeros(100000)}}, {str(path)!r})
except SaveError as err:
    print("SaveError:", err)
    sys.exit(3)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "file-size limit" in proc.stdout and str(path) in proc.stdout, proc.stdout
    _assert_kept(path)


@pytest.mark.parametrize(("err", "fragment"), [(errno.EACCES, "(?i)permission denied"), (errno.EROFS, "(?i)read-only")])
def test_unwritable_folder_is_one_save_error(tmp_path, monkeypatch, err, fragment):
    path = _previous(tmp_path)

    def refuse(*args: Any, **kwargs: Any) -> Any:  # what a read-only folder does (root ignores chmod, so simulated)
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(SaveError, match=fragment) as info:
        atomic_torch_save({"w": torch.zeros(3)}, str(path))
    assert str(path) in str(info.value)
    monkeypatch.undo()
    _assert_kept(path)


def test_a_file_that_does_not_read_back_is_not_reported_as_saved(tmp_path, monkeypatch):
    path = _previous(tmp_path)
    real_save = torch.save

    def short_write(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:-40])  # loses the end of the zip directory without an error

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(SaveError, match="does not read back"):
        atomic_torch_save({"w": torch.zeros(3)}, str(path))
    monkeypatch.setattr(torch, "save", real_save)
    _assert_kept(path)


def test_temporary_file_lives_beside_the_target(tmp_path, monkeypatch):
    renames: list[tuple[str, str]] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((str(a), str(b))), real_replace(a, b)))
    target = tmp_path / "sub" / "last.ckpt"
    atomic_torch_save({"w": torch.ones(1)}, str(target))
    [(src, dst)] = renames
    assert os.path.dirname(src) == os.path.dirname(dst) == str(target.parent) and dst == str(target)
    assert Path(src).name.startswith(".last.ckpt.")
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_checkpoint_problem_spots_truncated_and_empty_files(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"w": torch.ones(1000)}, good)
    assert checkpoint_problem(str(good)) is None
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated" in (checkpoint_problem(str(cut)) or "")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    assert checkpoint_problem(str(empty)) == "the file is empty"


def test_a_failed_save_during_fit_stops_with_one_line(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint

    data, module = build_2d(str(tmp_path), 0)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0,
                         limit_val_batches=0, default_root_dir=str(tmp_path), plugins=[AtomicCheckpointIO()],
                         callbacks=[ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=2)])

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_io.torch, "save", full_disk)
    with pytest.raises(SaveError) as info:
        trainer.fit(module, datamodule=data)
    assert format_error(info.value) is not None and str(tmp_path / "ckpt") in str(info.value)
    assert "disk full" in str(info.value)


class _SigtermAt(pl.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop.total_batch_idx + 1 == self.at:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler only raises a flag


def test_preemption_into_a_read_only_folder_does_not_claim_success(tmp_path, monkeypatch, capsys):
    data, module = build_2d(str(tmp_path), 0)
    preemption = Preemption(dirpath=str(tmp_path / "ro"))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False,
                         num_sanity_val_steps=0, default_root_dir=str(tmp_path),
                         callbacks=[_SigtermAt(2), preemption])
    real_mkstemp = tempfile.mkstemp

    def read_only(*args: Any, dir: str | None = None, **kwargs: Any) -> Any:  # noqa: A002
        if dir is not None and str(dir).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(SaveError, match="(?i)read-only") as info:
        trainer.fit(module, datamodule=data)
    assert str(tmp_path / "ro" / "preempted.ckpt") in str(info.value)
    assert "checkpoint written" not in capsys.readouterr().err and preemption.saved_path is None
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # installed by Preemption.setup


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    progress = tmp_path / "progress.txt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "run"), str(tmp_path / "out.pt"),
                             "--progress", str(progress), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)  # its own process group, as under a scheduler
    return proc, progress


def _wait_for(proc: subprocess.Popen, progress: Path, done: Any, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = progress.read_text() if progress.exists() else ""
        if text and done(text):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting; progress {progress.read_text() if progress.exists() else None}")


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_twice_saves_and_exits_0(tmp_path):
    """A scheduler's SIGTERM to the whole group (workers_per_gpu=2), then more during the save and the shutdown."""
    proc, progress = _start(tmp_path, "--workers", "2", "--pause", "0.2", "--save-pause", "1.0", "--exit-pause",
                            "1.0", "--no-ckpt")
    try:
        _wait_for(proc, progress, lambda t: t.isdigit() and int(t) >= 3)
        os.killpg(proc.pid, signal.SIGTERM)
        _wait_for(proc, progress, lambda t: t == "saving")
        os.killpg(proc.pid, signal.SIGTERM)  # the impatient second signal lands inside the save
        _wait_for(proc, progress, lambda t: t == "exiting")
        os.killpg(proc.pid, signal.SIGTERM)  # and a third one after it, while the process shuts down
        output = proc.communicate(timeout=240)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-3000:]
    assert "checkpoint written to" in output and "killed by signal" not in output, output[-3000:]
    ckpts = list((tmp_path / "run").rglob("preempted.ckpt"))
    assert len(ckpts) == 1 and checkpoint_problem(str(ckpts[0])) is None
    state = torch.load(ckpts[0], weights_only=True)
    assert state["global_step"] >= 4


# ------------------------------------------------------------------------------ ckpt_path last
class _Dirs:
    """The attributes resolve_ckpt_path reads from a Trainer."""

    def __init__(self, root: Path) -> None:
        self.default_root_dir = str(root)
        self.loggers: list[Any] = []
        self.callbacks: list[Any] = []


def test_ckpt_path_last_skips_a_truncated_newest_file_and_says_so(tmp_path, capsys):
    good, bad = tmp_path / "v0" / "epoch_1.ckpt", tmp_path / "v1" / "epoch_2.ckpt"
    for path in (good, bad):
        path.parent.mkdir()
        torch.save({"w": torch.ones(1000)}, path)
    bad.write_bytes(bad.read_bytes()[:300])
    os.utime(good, ns=(10**18, 10**18))
    assert find_last_checkpoint([tmp_path]) == str(bad)
    assert resolve_ckpt_path("last", _Dirs(tmp_path)) == str(good)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert str(bad) in err and "truncated" in err and f"using {good}" in err, err
    with pytest.raises(CheckpointError, match=f"Checkpoint {bad}.*truncated"):
        resolve_ckpt_path(str(bad), _Dirs(tmp_path))  # type: ignore[arg-type]
    good.write_bytes(b"")
    with pytest.raises(CheckpointError, match="every checkpoint .* is unreadable"):
        resolve_ckpt_path("last", _Dirs(tmp_path))  # type: ignore[arg-type]


def test_ckpt_path_last_with_nothing_to_evaluate_is_refused(tmp_path):
    assert resolve_ckpt_path("last", _Dirs(tmp_path)) is None  # type: ignore[arg-type]  # fit: from scratch
    with pytest.raises(CheckpointError, match="no checkpoint under .* to validate"):
        resolve_ckpt_path("last", _Dirs(tmp_path), stage="validate")  # type: ignore[arg-type]


def _tiny_quickstart(tmp_path: Path) -> list[str]:
    return ["--config", str(ROOT / "configs/quickstart.yaml"), f"--data.init_args.synthetic.root={tmp_path / 'd'}",
            "--data.init_args.synthetic.num_train=4", "--data.init_args.synthetic.num_val=3",
            "--data.init_args.synthetic.image_size=32", "--data.init_args.synthetic.max_size=16",
            "--data.init_args.pipeline.img_scale=[32, 32]", "--data.init_args.samples_per_gpu=2",
            "--data.init_args.workers_per_gpu=0", "--data.init_args.persistent_workers=false",
            "--trainer.enable_progress_bar=true", f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}"]


@pytest.mark.slow
def test_validate_ckpt_path_last_evaluates_the_last_checkpoint(tmp_path, monkeypatch):
    from detlight.cli import DetLightCLI

    monkeypatch.chdir(tmp_path)
    DetLightCLI(args=["fit", *_tiny_quickstart(tmp_path), "--trainer.max_epochs=1", "--trainer.limit_val_batches=0"])
    last = find_last_checkpoint([tmp_path])
    assert last is not None
    cli = DetLightCLI(args=["validate", *_tiny_quickstart(tmp_path), "--ckpt_path", "last",
                            "--trainer.limit_val_batches=1"])
    assert cli.trainer.ckpt_path == last
    assert cli.trainer.limit_val_batches == 1 and cli.trainer.num_val_batches == [1]  # one batch, not 100 %
    loaded = torch.load(last, weights_only=True)["state_dict"]
    for key, value in cli.model.state_dict().items():
        assert torch.equal(value, loaded[key]), key


def test_limit_batches_1_is_one_batch_and_1_0_is_all(tmp_path):
    from detlight.cli import DetLightCLI

    for text, expected in (("1", 1), ("1.0", 1.0), ("3", 3), ("0.25", 0.25)):
        cli = DetLightCLI(args=[*_tiny_quickstart(tmp_path), f"--trainer.limit_val_batches={text}",
                                f"--trainer.limit_train_batches={text}"], run=False)
        for value in (cli.trainer.limit_val_batches, cli.trainer.limit_train_batches):
            assert value == expected and type(value) is type(expected), (text, value)


def test_old_import_paths_and_yaml_class_paths_still_work():
    import importlib

    import detlight.callbacks.checkpoint as old_ckpt
    import detlight.data.datamodule as old_dm
    import detlight.resume as old_resume
    from detlight.data import loader, loader_state

    assert old_resume.Preemption is Preemption
    assert old_resume.StatefulDataLoader is loader_state.StatefulDataLoader
    assert old_resume.get_rng_state is loader_state.get_rng_state
    assert old_resume.load_skipped_loader_state is loader_state.load_skipped_loader_state
    assert old_ckpt.atomic_torch_save is atomic_torch_save and old_ckpt.AtomicCheckpointIO is AtomicCheckpointIO
    assert old_ckpt.link_or_copy is checkpoint_io.link_or_copy
    assert old_dm.worker_init_fn is loader.worker_init_fn
    for class_path in ("detlight.resume.Preemption", "detlight.callbacks.preemption.Preemption",
                       "detlight.callbacks.Preemption"):
        module, _, name = class_path.rpartition(".")
        assert getattr(importlib.import_module(module), name) is Preemption
