"""The real entry point: every shipped config parses, and `detlight fit` trains end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detlight.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml"))
TINY_DATA = [
    "--data.init_args.synthetic.num_train=8",
    "--data.init_args.synthetic.num_val=4",
    "--data.init_args.samples_per_gpu=4",
    "--data.init_args.val_samples_per_gpu=4",
    "--data.init_args.workers_per_gpu=0",
    "--data.init_args.persistent_workers=false",
]


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_parses(config, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    # trainer/ fragments are meant to follow a complete config, as their headers say
    configs = ["configs/quickstart.yaml", config] if config.startswith("configs/trainer/") else [config]
    args = [arg for path in configs for arg in ("--config", path)]
    with pytest.raises(SystemExit) as exc:
        main(["fit", *args, "--print_config"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "trainer:" in out and "model:" in out


@pytest.mark.slow
def test_fit_end_to_end_through_the_console_script(tmp_path):
    exe = Path(sys.executable).with_name("detlight")
    cmd = [str(exe), "fit", "--config", str(ROOT / "configs/quickstart.yaml"), *TINY_DATA,
           "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
           f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "quickstart" / "version_0"
    assert f"Run directory: {run_dir}" in proc.stdout
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    json_logs = list(run_dir.glob("*.log.json"))
    assert json_logs, sorted(p.name for p in run_dir.iterdir())
    lines = [json.loads(line) for line in json_logs[0].read_text().splitlines()]
    val_lines = [line for line in lines if line.get("mode") == "val"]
    assert val_lines and "bbox_mAP_50" in val_lines[-1]


def test_unknown_key_is_reported_with_its_name(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--model.optimiser.lr=0.1"])
    assert exc.value.code != 0
    assert "optimiser" in capsys.readouterr().err


def test_an_abbreviated_key_is_not_taken_for_the_full_one(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--trainer.max_epoch=3", "--print_config"])
    assert exc.value.code == 2
    assert "did you mean --trainer.max_epochs" in capsys.readouterr().err
