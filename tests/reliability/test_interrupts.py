"""How a CLI run ends when it is stopped from outside: Ctrl-C with DataLoader workers exits 130 with one line naming
the last checkpoint (no traceback, no worker left behind); a SIGTERM that arrives after a failed save was reported
does not turn exit status 2 into -15. Each run is a ``detlight fit`` child process in its own session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_helpers import live_processes

HERE = Path(__file__).resolve().parent
QUICKSTART = str(HERE.parents[1] / "configs/quickstart.yaml")

#: 8 training images, 2 per batch: 4 batches per epoch; workers load them; no validation, no TensorBoard
SMALL = {"data.init_args.synthetic.num_train": 8, "data.init_args.synthetic.num_val": 2,
         "data.init_args.samples_per_gpu": 2, "data.init_args.workers_per_gpu": 2,
         "data.init_args.persistent_workers": True, "trainer.logger": False, "trainer.max_epochs": 3,
         "trainer.limit_val_batches": 0}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and sessions")


def _start(tmp_path: Path, extra: dict, prefix: list[str] | None = None) -> tuple[subprocess.Popen, Path, Path]:
    args = [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in {**SMALL, **extra}.items()]
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), *sys.path]), OMP_NUM_THREADS="1")
    command = prefix or [sys.executable, "-m", "detlight.cli"]
    proc = subprocess.Popen([*command, "fit", "--config", QUICKSTART, *args], stdout=out.open("w"),
                            stderr=err.open("w"), env=env, start_new_session=True, cwd=tmp_path)
    return proc, out, err


def _wait_for(predicate, proc: subprocess.Popen, err: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended early ({proc.returncode}):\n{err.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{err.read_text()[-3000:]}"
        time.sleep(0.1)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the workers")
@pytest.mark.slow
def test_ctrl_c_with_workers_exits_130_naming_the_last_checkpoint(tmp_path):
    progress = tmp_path / "progress"
    proc, _, err = _start(tmp_path, {
        "trainer.default_root_dir": str(tmp_path / "wd"),
        "trainer.callbacks+": {"class_path": "fault_helpers.SlowBatches",
                               "init_args": {"pause": 0.3, "progress": str(progress)}}})
    try:
        # two batches into epoch 2: epoch_1.ckpt is written and the workers are busy with epoch 2
        _wait_for(lambda: progress.exists() and progress.read_text() and int(progress.read_text()) >= 6, proc, err)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends to the foreground process group
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stderr = err.read_text()
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    checkpoint = tmp_path / "wd" / "epoch_1.ckpt"
    assert last == (f"detlight: interrupted (Ctrl-C); last checkpoint: {checkpoint} (resume with `--ckpt_path last` "
                    f"or `--ckpt_path {checkpoint}`)"), stderr[-3000:]
    deadline = time.monotonic() + 10
    while live_processes(session=proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_processes(session=proc.pid) == [], "DataLoader workers outlived the run"


SLOW_EXIT = "import atexit, sys, time; atexit.register(time.sleep, 8); from detlight.cli import main; main()"


@pytest.mark.slow
def test_sigterm_after_a_failed_save_keeps_exit_status_2(tmp_path):
    """The checkpoint folder cannot be created (its parent is a file); the SaveError line is printed, and a SIGTERM
    during the (here slow) shutdown after it must not end the process with -15."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    proc, _, err = _start(tmp_path, {
        "trainer.default_root_dir": str(tmp_path / "wd"), "trainer.max_epochs": 1,
        "trainer.callbacks+": {"class_path": "detlight.callbacks.MMCheckpoint",
                               "init_args": {"interval": 1, "out_dir": str(blocker / "ckpt")}}},
        prefix=[sys.executable, "-c", SLOW_EXIT])
    try:
        _wait_for(lambda: "detlight: error:" in err.read_text(), proc, err)
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stderr = err.read_text()
    assert code == 2, f"exit {code}\n{stderr[-3000:]}"
    [line] = [x for x in stderr.splitlines() if x.startswith("detlight: error:")]
    assert line.startswith(f"detlight: error: Could not save checkpoint {blocker / 'ckpt'}"), line
    assert "Traceback" not in stderr, stderr[-3000:]


def test_a_resource_sharer_thread_whose_peer_went_away_prints_nothing(capsys, monkeypatch):
    """What a worker's fd-serving thread raises when the main process stops reading (Ctrl-C) is dropped; the same
    error from any other code still reaches the previous hook."""
    import threading

    from detlight.data.loader import quiet_resource_sharer_pipes

    seen: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    quiet_resource_sharer_pipes()
    quiet_resource_sharer_pipes()  # idempotent: one wrapper

    def run(filename: str) -> None:
        code = compile("raise BrokenPipeError(32, 'Broken pipe')", filename, "exec")
        thread = threading.Thread(target=exec, args=(code, {}))
        thread.start()
        thread.join()

    run(os.path.join(os.path.dirname(os.__file__), "multiprocessing", "resource_sharer.py"))
    assert seen == []
    run("user_code.py")
    assert [type(e) for e in seen] == [BrokenPipeError]
