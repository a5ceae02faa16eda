"""Resume is exact from any kill point: SIGKILL / SIGTERM at points drawn at random per test run, 2D and 3D, with and
without DataLoader workers; the final weights must be bitwise equal to an uninterrupted run.

The seed of the draw is printed (``DETLIGHT_KILL_SEED=<seed>`` reruns the same points). Every killed run and every
resume is a child forked from one worker process (``resume_worker.py --jobs``), a few at a time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detlight.resume import find_last_checkpoint

HERE = Path(__file__).resolve().parent
WORKER = HERE / "resume_worker.py"

#: (kind, workers_per_gpu, training batches in the whole run: 3 epochs)
CONFIGS = [("2d", 0, 18), ("2d", 2, 18), ("3d", 0, 9), ("3d", 2, 9)]
#: where the signal lands: before the optimizer step, after it but before that batch's checkpoint, half-way through
#: writing the checkpoint (SIGKILL), or anywhere in a batch (SIGTERM: Preemption saves at the batch's end)
MODES = ("step", "after_step", "save", "sigterm")
POINTS_PER_CONFIG = 3
SEED = int(os.environ.get("DETLIGHT_KILL_SEED") or random.SystemRandom().randrange(2**31))
MAX_PARALLEL = 4


def _draw_cases(seed: int) -> list[tuple[str, int, str, int]]:
    rng = random.Random(seed)
    cases = []
    for kind, workers, total in CONFIGS:
        for _ in range(POINTS_PER_CONFIG):
            cases.append((kind, workers, rng.choice(MODES), rng.randrange(total)))
    return cases


CASES = _draw_cases(SEED)


def _name(kind: str, workers: int, mode: str = "full", at: int = -1) -> str:
    return f"{kind}-w{workers}-{mode}" + (f"-at{at}" if at >= 0 else "")


def _run_jobs(jobs: list[list[str]]) -> list[int]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, str(WORKER), "--jobs", json.dumps(jobs), str(MAX_PARALLEL)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kill_runs(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict:
    if not hasattr(os, "fork"):
        pytest.skip("the runs are forked children of one worker process")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nrandom kill points: seed {SEED} (DETLIGHT_KILL_SEED={SEED} reruns them): "
              + ", ".join(_name(*case) for case in CASES), flush=True)
    root = tmp_path_factory.mktemp("random_kill")
    jobs, names = [], []
    for kind, workers, _ in CONFIGS:  # the uninterrupted references
        name = _name(kind, workers)
        jobs.append([str(root / name), str(root / f"{name}.pt"), "--kind", kind, "--workers", str(workers)])
        names.append(name)
    for kind, workers, mode, at in CASES:
        name = _name(kind, workers, mode, at)
        where = "step" if mode == "sigterm" else mode
        jobs.append([str(root / name), str(root / f"{name}.killed.pt"), "--kind", kind, "--workers", str(workers),
                     "--kill-at", str(at), "--kill-in", where] + (["--sigterm"] if mode == "sigterm" else []))
        names.append(name)
    codes = dict(zip(names, _run_jobs(jobs)))
    outputs = {name: (root / name / "output.txt").read_text() for name in names}
    resumed: dict[str, str | None] = {}
    jobs = []
    for kind, workers, mode, at in CASES:
        name = _name(kind, workers, mode, at)
        resumed[name] = find_last_checkpoint([root / name])
        jobs.append([str(root / name), str(root / f"{name}.pt"), "--kind", kind, "--workers", str(workers),
                     "--resume"])
    resume_codes = _run_jobs(jobs)
    for (kind, workers, mode, at), code in zip(CASES, resume_codes):
        name = _name(kind, workers, mode, at)
        assert code == 0, f"seed {SEED}: resuming {name} failed:\n{(root / name / 'output.txt').read_text()[-3000:]}"
    return {"root": root, "codes": codes, "outputs": outputs, "resumed_from": resumed}


def _assert_bitwise_equal(a: dict, b: dict, msg: str) -> None:
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a if not torch.equal(a[k], b[k])}
    assert not diffs, f"{msg}: weights differ {diffs}"


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "workers", "total"), CONFIGS, ids=[f"{k}-workers{w}" for k, w, _ in CONFIGS])
def test_random_kill_points_resume_bitwise_equal(kill_runs: dict, kind: str, workers: int, total: int) -> None:
    root: Path = kill_runs["root"]
    reference_name = _name(kind, workers)
    assert kill_runs["codes"][reference_name] == 0, kill_runs["outputs"][reference_name][-3000:]
    reference = torch.load(root / f"{reference_name}.pt", weights_only=True)
    cases = [case for case in CASES if case[:2] == (kind, workers)]
    assert len(cases) == POINTS_PER_CONFIG
    for _, _, mode, at in cases:
        name = _name(kind, workers, mode, at)
        where = f"seed {SEED}, {name}"
        code, output = kill_runs["codes"][name], kill_runs["outputs"][name]
        if mode == "sigterm":
            assert code == 0, f"{where}: exit {code}\n{output[-3000:]}"
            finished = at == total - 1  # SIGTERM on the run's last batch: the run simply finishes
            assert finished or "checkpoint written to" in output, f"{where}: no preemption save\n{output[-3000:]}"
            assert "killed by signal" not in output and "Traceback" not in output, f"{where}\n{output[-3000:]}"
        else:
            assert code == -signal.SIGKILL, f"{where}: exit {code}\n{output[-3000:]}"
        for path in sorted((root / name / "ckpt").glob("*.ckpt")):  # every visible checkpoint is complete
            torch.load(path, weights_only=True)
        resumed = torch.load(root / f"{name}.pt", weights_only=True)
        _assert_bitwise_equal(reference, resumed, f"{where} (resumed from {kill_runs['resumed_from'][name]})")
