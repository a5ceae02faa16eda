"""Resume is exact from any kill point: SIGKILL / SIGTERM at points drawn at random per test run, 2D and 3D, with and
without DataLoader workers, with and without ``limit_train_batches`` (an epoch that ends before its loader does);
the final weights must be bitwise equal to an uninterrupted run. Every config gets random points and one point on an
epoch boundary (its last batch, or the first batch of the next epoch, which resumes from the epoch-end checkpoint).

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

#: (kind, workers_per_gpu, training batches in the whole run: 3 epochs, limit_train_batches or "" for none); the 2D
#: loader has 6 batches per epoch, the 3D one 3
CONFIGS = [("2d", 0, 18, ""), ("2d", 2, 18, ""), ("3d", 0, 9, ""), ("3d", 2, 9, ""),
           ("2d", 0, 12, "4"), ("2d", 2, 9, "0.5"), ("3d", 0, 6, "2")]
EPOCHS = 3
#: where the signal lands: before the optimizer step, after it but before that batch's checkpoint, half-way through
#: writing the checkpoint (SIGKILL), or anywhere in a batch (SIGTERM: Preemption saves at the batch's end)
MODES = ("step", "after_step", "save", "sigterm")
RANDOM_POINTS_PER_CONFIG = 2
BOUNDARY_POINTS_PER_CONFIG = 1
POINTS_PER_CONFIG = RANDOM_POINTS_PER_CONFIG + BOUNDARY_POINTS_PER_CONFIG
SEED = int(os.environ.get("DETLIGHT_KILL_SEED") or random.SystemRandom().randrange(2**31))
MAX_PARALLEL = 4


def _boundary_points(total: int) -> list[tuple[str, int]]:
    """(mode, batch) on the boundaries between epochs: the signal on an epoch's last batch, or a SIGKILL in the next
    epoch's first step (the newest checkpoint is then the one written at the epoch's end)."""
    per_epoch = total // EPOCHS
    points = []
    for epoch in range(1, EPOCHS):
        points += [(mode, epoch * per_epoch - 1) for mode in ("after_step", "save", "sigterm")]
        points.append(("step", epoch * per_epoch))
    return points


def _draw_cases(seed: int) -> list[tuple[str, int, str, int, str]]:
    rng = random.Random(seed)
    cases = []
    for kind, workers, total, limit in CONFIGS:
        drawn: list[tuple[str, int]] = []
        while len(drawn) < RANDOM_POINTS_PER_CONFIG:
            point = (rng.choice(MODES), rng.randrange(total))
            drawn += [point] if point not in drawn else []
        boundary = [p for p in _boundary_points(total) if p not in drawn]
        drawn += rng.sample(boundary, BOUNDARY_POINTS_PER_CONFIG)
        cases += [(kind, workers, mode, at, limit) for mode, at in drawn]
    return cases


CASES = _draw_cases(SEED)


def _name(kind: str, workers: int, mode: str = "full", at: int = -1, limit: str = "") -> str:
    return f"{kind}-w{workers}" + (f"-limit{limit}" if limit else "") + f"-{mode}" + (f"-at{at}" if at >= 0 else "")


def _limit_args(limit: str) -> list[str]:
    return ["--limit", limit] if limit else []


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
    for kind, workers, _, limit in CONFIGS:  # the uninterrupted references
        name = _name(kind, workers, limit=limit)
        jobs.append([str(root / name), str(root / f"{name}.pt"), "--kind", kind, "--workers", str(workers),
                     *_limit_args(limit)])
        names.append(name)
    for kind, workers, mode, at, limit in CASES:
        name = _name(kind, workers, mode, at, limit)
        where = "step" if mode == "sigterm" else mode
        jobs.append([str(root / name), str(root / f"{name}.killed.pt"), "--kind", kind, "--workers", str(workers),
                     "--kill-at", str(at), "--kill-in", where, *_limit_args(limit)]
                    + (["--sigterm"] if mode == "sigterm" else []))
        names.append(name)
    codes = dict(zip(names, _run_jobs(jobs)))
    outputs = {name: (root / name / "output.txt").read_text() for name in names}
    resumed: dict[str, str | None] = {}
    jobs = []
    for kind, workers, mode, at, limit in CASES:
        name = _name(kind, workers, mode, at, limit)
        resumed[name] = find_last_checkpoint([root / name])
        jobs.append([str(root / name), str(root / f"{name}.pt"), "--kind", kind, "--workers", str(workers),
                     "--resume", *_limit_args(limit)])
    resume_codes = _run_jobs(jobs)
    for (kind, workers, mode, at, limit), code in zip(CASES, resume_codes):
        name = _name(kind, workers, mode, at, limit)
        assert code == 0, f"seed {SEED}: resuming {name} failed:\n{(root / name / 'output.txt').read_text()[-3000:]}"
    return {"root": root, "codes": codes, "outputs": outputs, "resumed_from": resumed}


def _assert_bitwise_equal(a: dict, b: dict, msg: str) -> None:
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a if not torch.equal(a[k], b[k])}
    assert not diffs, f"{msg}: weights differ {diffs}"


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "workers", "total", "limit"), CONFIGS,
                         ids=[f"{k}-workers{w}" + (f"-limit{lim}" if lim else "") for k, w, _, lim in CONFIGS])
def test_random_kill_points_resume_bitwise_equal(kill_runs: dict, kind: str, workers: int, total: int,
                                                 limit: str) -> None:
    root: Path = kill_runs["root"]
    reference_name = _name(kind, workers, limit=limit)
    assert kill_runs["codes"][reference_name] == 0, kill_runs["outputs"][reference_name][-3000:]
    reference = torch.load(root / f"{reference_name}.pt", weights_only=True)
    cases = [case for case in CASES if (case[0], case[1], case[4]) == (kind, workers, limit)]
    assert len(cases) == POINTS_PER_CONFIG
    assert any((mode, at) in _boundary_points(total) for _, _, mode, at, _ in cases)
    for _, _, mode, at, _ in cases:
        name = _name(kind, workers, mode, at, limit)
        where = f"seed {SEED}, {name}"
        code, output = kill_runs["codes"][name], kill_runs["outputs"][name]
        if mode == "sigterm":
            assert code == 0, f"{where}: exit {code}\n{output[-3000:]}"
            finished = at == total - 1  # SIGTERM on the run's last batch: the run simply finishes
            assert finished or "checkpoint written to" in output, f"{where}: no preemption save\n{output[-3000:]}"
            assert "killed by signal" not in output and "Traceback" not in output, f"{where}\n{output[-3000:]}"
        else:
            assert code == -signal.SIGKILL, f"{where}: exit {code}\n{output[-3000:]}"
        for path in sorted((root / name).rglob("[!.]*.ckpt")):  # every visible checkpoint is complete
            torch.load(path, weights_only=True)
        resumed = torch.load(root / f"{name}.pt", weights_only=True)
        _assert_bitwise_equal(reference, resumed, f"{where} (resumed from {kill_runs['resumed_from'][name]})")
