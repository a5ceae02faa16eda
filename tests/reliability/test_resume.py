"""Iteration-exact resume: the stateful train loader, RNG states, kill/SIGTERM/interrupted-save recovery, load_from."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import SequentialSampler

from detlight.callbacks.checkpoint import atomic_torch_save
from detlight.data.sampler import DetSampler
from detlight.errors import CheckpointError, check_checkpoint_file
from detlight.module import load_weights
from detlight.resume import StatefulDataLoader, find_last_checkpoint, get_rng_state, set_rng_state

HERE = Path(__file__).resolve().parent
WORKER = HERE / "resume_worker.py"
sys.path.insert(0, str(HERE))
from resume_worker import Crash, TinyNet  # noqa: E402
from resume_worker import main as run_worker  # noqa: E402

TOTAL_BATCHES = 18  # 3 epochs x 6 batches


def _loader(sampler: object = None, batch_size: int = 2) -> StatefulDataLoader:
    sampler = sampler if sampler is not None else DetSampler(10, shuffle=True, seed=3)
    return StatefulDataLoader(list(range(10)), batch_size=batch_size, sampler=sampler)  # type: ignore[arg-type]


@pytest.mark.parametrize("use_det_sampler", [True, False])
def test_loader_resumes_mid_epoch_with_the_same_batches_and_rng(use_det_sampler):
    make = (lambda: _loader()) if use_det_sampler else (lambda: _loader(SequentialSampler(range(10))))
    loader = make()
    it = iter(loader)
    first = [next(it).tolist() for _ in range(2)]
    state = loader.state_dict()
    expected_rest = [b.tolist() for b in it]
    expected_draw = torch.rand(3)  # the RNG was saved in the state: a resumed run draws the same numbers
    resumed = make()
    resumed.load_state_dict(state)
    torch.manual_seed(123)  # a fresh process starts from another RNG state
    got = []
    for i, batch in enumerate(resumed):
        if i == 0:
            draw = torch.rand(3)
        got.append(batch.tolist())
    assert got == expected_rest and len(first + got) == len(loader) == 5
    assert torch.equal(draw, expected_draw)
    assert resumed.state_dict()["yielded"] == 5


def test_loader_state_at_epoch_end_starts_the_next_epoch_whole():
    loader = _loader()
    assert len(list(loader)) == 5
    resumed = _loader()
    resumed.load_state_dict(loader.state_dict())
    assert len(list(resumed)) == 5


@pytest.mark.parametrize(("limit", "per_epoch"), [(3, 3), (0.5, 2), (1.0, 5), (9, 5)])
def test_loader_state_at_the_end_of_a_limited_epoch_starts_the_next_epoch_whole(limit, per_epoch):
    """``limit_train_batches``: the epoch ends before the loader does; its end-of-epoch state must not make the next
    epoch skip ``per_epoch`` of its batches."""
    import lightning.pytorch as pl

    from detlight.data.loader_state import load_skipped_loader_state

    trainer = pl.Trainer(limit_train_batches=limit, logger=False, enable_checkpointing=False)
    loader = _loader()
    load_skipped_loader_state(trainer, loader)
    assert loader.epoch_batches == per_epoch
    it = iter(loader)
    for _ in range(per_epoch):  # what the Trainer takes from the epoch
        next(it)
    state = loader.state_dict()
    assert (state["yielded"], state["epoch_batches"], state["num_batches"]) == (per_epoch, per_epoch, 5)
    next_epoch = [b.tolist() for b in _loader()]  # a fresh loader's epoch: what the uninterrupted run sees next
    resumed = _loader()
    load_skipped_loader_state(trainer, resumed)
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == next_epoch


def test_loader_refuses_a_state_from_other_data_settings():
    loader = _loader()
    next(iter(loader))
    with pytest.raises(ValueError, match="batch_size=2, this run has batch_size=4"):
        _loader(batch_size=4).load_state_dict(loader.state_dict())


def test_rng_state_roundtrips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    path = tmp_path / "rng.pt"
    torch.save(get_rng_state(), path)
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(torch.load(path, weights_only=True))
    assert torch.equal(torch.rand(2), expected[0])
    assert np.array_equal(np.random.rand(2), expected[1]) and random.random() == expected[2]


def test_find_last_checkpoint_takes_the_newest_and_ignores_temporary_files(tmp_path):
    (tmp_path / "v0").mkdir()
    (tmp_path / "v1").mkdir()
    old, new, tmp = tmp_path / "v0" / "last.ckpt", tmp_path / "v1" / "epoch=1.ckpt", tmp_path / "v1" / ".x.ckpt"
    for i, path in enumerate((old, new, tmp)):
        path.write_bytes(b"x")
        os.utime(path, ns=(10**18 + i, 10**18 + i))
    assert find_last_checkpoint([tmp_path]) == str(new)
    assert find_last_checkpoint([tmp_path / "missing"]) is None


# ------------------------------------------------------------------------------ killed runs, resumed
SCENARIOS = {"sigkill_in_step": ("step", False), "sigkill_in_save": ("save", False), "sigterm": ("step", True)}
# (scenario, 0-based global batch it hits). A SIGKILL inside batch N's step resumes from the checkpoint written after
# batch N - 1, so does one inside the save of batch N (that save is left half-written); a SIGTERM lets batch N finish and
# writes its own checkpoint after it. Batches 5 and 11 end epochs 0 and 1 (the lr steps down at epoch 2): SIGTERM there
# checkpoints after the epoch end, SIGKILL at 6 and 12 resumes from the checkpoint of the epoch's last batch.
CASES = [("sigkill_in_step", 3), ("sigkill_in_step", 6), ("sigkill_in_step", 12), ("sigkill_in_save", 9),
         ("sigterm", 3), ("sigterm", 5), ("sigterm", 11)]


def _case_id(scenario: str, at: int) -> str:
    return f"{scenario}-at{at}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case killed in a child of one worker process (in parallel) and one uninterrupted run in this process."""
    if not hasattr(os, "fork"):
        pytest.skip("the killed runs are forked children of one worker process")
    root = tmp_path_factory.mktemp("resume")
    jobs = []
    for scenario, at in CASES:
        where, sigterm = SCENARIOS[scenario]
        name = _case_id(scenario, at)
        jobs.append([str(root / name), str(root / f"{name}.pt"), "--kill-at", str(at), "--kill-in", where]
                    + (["--sigterm"] if sigterm else []))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(WORKER), "--jobs", json.dumps(jobs)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    run_worker([str(root / "full"), str(root / "full.pt")])
    reference = torch.load(root / "full.pt", weights_only=True)
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output[-2000:]
    codes = json.loads(output.strip().splitlines()[-1])
    results = {}
    for (scenario, at), code in zip(CASES, codes):
        name = _case_id(scenario, at)
        results[name] = (code, (root / name / "output.txt").read_text())
    return root, reference, results


def _assert_bitwise_equal(a: dict, b: dict, msg: str) -> None:
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a if not torch.equal(a[k], b[k])}
    assert not diffs, f"{msg}: weights differ {diffs}"


@pytest.mark.parametrize(("scenario", "at"), CASES, ids=[_case_id(*case) for case in CASES])
def test_killed_run_resumes_bitwise_equal_to_an_uninterrupted_run(runs, scenario, at):
    root, reference, results = runs
    name = _case_id(scenario, at)
    returncode, output = results[name]
    ckpt_dir = root / name / "ckpt"
    if scenario == "sigterm":
        assert returncode == 0, (name, output[-2000:])
        assert "preempted" in output and (ckpt_dir / "preempted.ckpt").is_file()
    else:
        assert returncode == -signal.SIGKILL, (name, output[-2000:])
    for path in sorted(ckpt_dir.glob("*.ckpt")):  # every visible checkpoint is complete and safe to load
        torch.load(path, weights_only=True)
    if scenario == "sigkill_in_save":
        assert list(ckpt_dir.glob(".*.tmp")), f"{name}: the save was not interrupted"
    resume_from = find_last_checkpoint([root / name])
    assert resume_from is not None
    if scenario == "sigterm":  # the checkpoint written after the epoch end (at 5, 11), not the batch-end one
        assert Path(resume_from).name == "preempted.ckpt"
    batches_done = at + 1 if scenario == "sigterm" else at
    assert torch.load(resume_from, weights_only=True)["global_step"] == batches_done, name
    run_worker([str(root / name), str(root / f"{name}.pt"), "--resume"])
    _assert_bitwise_equal(reference, torch.load(root / f"{name}.pt", weights_only=True), name)


def test_resume_without_the_loader_state_diverges(runs, tmp_path):
    """Control: plain Lightning resume (no loader state in the checkpoint) does not reproduce the run."""
    _, reference, _ = runs
    with pytest.raises(Crash):  # mid-epoch 1: the last checkpoint is after global batch 7
        run_worker([str(tmp_path), str(tmp_path / "unused.pt"), "--kill-at", "8", "--kill-in", "crash"])
    path = tmp_path / "ckpt" / "last.ckpt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["global_step"] == 8
    exact = tmp_path / "exact.pt"
    run_worker([str(tmp_path), str(exact), "--resume"])
    _assert_bitwise_equal(reference, torch.load(exact, weights_only=True), "crash at 8")
    del ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    torch.save(ckpt, path)
    os.utime(path)  # the newest file again: `last` must pick the stripped one
    run_worker([str(tmp_path), str(tmp_path / "plain.pt"), "--resume"])
    out = torch.load(tmp_path / "plain.pt", weights_only=True)
    assert any(not torch.equal(reference[k], out[k]) for k in reference)


# ------------------------------------------------------------------------------ saving and loading
def test_an_interrupted_atomic_save_leaves_the_previous_file_loadable(tmp_path):
    path = str(tmp_path / "latest.ckpt")
    atomic_torch_save({"w": torch.ones(2)}, path)

    class Boom:
        def __reduce__(self):
            raise KeyboardInterrupt("killed mid-save")

    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"w": torch.zeros(2), "x": Boom()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["latest.ckpt"]


def test_load_from_reads_an_mmcv_pth_and_a_detlight_ckpt(tmp_path):
    src = TinyNet()
    mmcv = tmp_path / "epoch_1.pth"
    torch.save({"meta": {"epoch": 1, "iter": 6, "CLASSES": ("a", "b")},
                "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()},
                "optimizer": {"state": {}, "param_groups": []}}, mmcv)
    ours = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}, "epoch": 0}, ours)
    for path in (mmcv, ours):
        dst = TinyNet()
        load_weights(dst, str(path))
        _assert_bitwise_equal(src.state_dict(), dst.state_dict(), str(path))


class Pickled:
    """Not a plain type: unpickling it would run arbitrary code paths."""


def test_checkpoints_needing_arbitrary_unpickling_are_refused(tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {}, "meta": Pickled()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_weights(TinyNet(), str(path))
    with pytest.raises(CheckpointError, match="arbitrary unpickling"):
        check_checkpoint_file(str(path))


def test_cli_ckpt_path_last_finds_the_previous_runs_checkpoint(tmp_path, monkeypatch, caplog):
    """`detlight fit --ckpt_path last` resumes from another version directory; with nothing there it starts fresh."""
    from detlight.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(HERE.parents[1] / "configs/quickstart.yaml"),
            "--data.init_args.synthetic.num_train=4", "--data.init_args.synthetic.num_val=2",
            "--data.init_args.synthetic.image_size=32", "--data.init_args.synthetic.max_size=16",
            "--data.init_args.pipeline.img_scale=[32, 32]", "--data.init_args.samples_per_gpu=2",
            "--data.init_args.workers_per_gpu=0", "--data.init_args.persistent_workers=false",
            "--trainer.max_epochs=1", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=true",
            f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--ckpt_path", "last"]
    with caplog.at_level("INFO", logger="detlight.resume"):
        main(args)
        assert "starting from scratch" in caplog.text
        first = find_last_checkpoint([tmp_path])
        assert first is not None and "version_0" in first
        caplog.clear()
        main(args)
    assert f"Resuming from {first}" in caplog.text
    ckpt = torch.load(first, weights_only=True)
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["yielded"] == 2
