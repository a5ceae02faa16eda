"""`detlight check`: builds everything, runs one batch, reports facts and exits non-zero on problems."""

from __future__ import annotations

from pathlib import Path

import pytest
from resume_worker import TinyNet
from torch import nn

from detlight.cli import main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs/quickstart.yaml")
TINY = ["--data.init_args.synthetic.num_train=4", "--data.init_args.synthetic.num_val=2",
        "--data.init_args.synthetic.num_classes=2", "--data.init_args.synthetic.image_size=32",
        "--data.init_args.synthetic.max_size=16", "--data.init_args.pipeline.img_scale=[32, 32]",
        "--data.init_args.samples_per_gpu=2", "--data.init_args.workers_per_gpu=0",
        "--data.init_args.persistent_workers=false", "--trainer.logger=false", "--model.model.init_args.num_classes=2"]


class UnusedHeadNet(TinyNet):
    """A detector with a branch that never reaches the loss."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__(num_classes)
        self.unused_head = nn.Linear(4, 3)


def _check(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["check", "--config", QUICKSTART, *TINY, f"--trainer.default_root_dir={tmp_path}", *args])
    return int(exc.value.code or 0), capsys.readouterr().out


def test_check_passes_and_reports_data_launch_and_batch_size(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code, out = _check(["--model.model.class_path=resume_worker.TinyNet"], tmp_path, capsys)
    assert code == 0, out
    assert "OK: no problem found" in out
    assert "data.train: 4 images, 2 classes" in out
    assert "world_size=1" in out and "effective batch size = 2 per process x 1 process(es) x 1 accumulation = 2" in out
    assert "\n  lr = " in out and "one batch: loss_a=" in out


def test_check_lists_unused_parameters_and_launcher_mismatch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    code, out = _check(["--model.model.class_path=test_check.UnusedHeadNet"], tmp_path, capsys)
    assert code == 1
    assert "2 parameter(s) received no gradient: unused_head.weight, unused_head.bias" in out
    assert "find_unused_parameters" in out
    assert "WORLD_SIZE=4, but the Trainer resolved world_size=1" in out


def test_check_reports_a_head_dataset_class_mismatch(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code, out = _check(["--model.model.class_path=resume_worker.TinyNet", "--model.model.init_args.num_classes=5"],
                       tmp_path, capsys)
    assert code == 1
    assert "the head predicts 5 classes" in out and "the dataset has 2" in out


def test_check_accepts_an_mmcv_py_config(tmp_path, capsys, monkeypatch):
    """A converted ``.py`` config carries ``ckpt_path`` (a ``fit`` key); check has no subcommand and must drop it."""
    from detlight.openmmlab.samples import write_config

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = write_config(tmp_path / "retina.py", "retinanet", root=tmp_path / "data", num_train=4, num_val=2,
                          image_size=64)
    with pytest.raises(SystemExit):
        main(["check", "--openmmlab", "false", "--config", str(config), f"--trainer.default_root_dir={tmp_path}",
              "--trainer.logger=false"])
    out = capsys.readouterr()
    assert "Mapping report" in out.err  # converted, then parsed: no "unknown key 'ckpt_path'" from the parser
    assert "unknown key" not in out.err, out.err


def test_subcommand_keys_are_dropped_from_config_copies(tmp_path):
    import yaml

    from detlight.cli import _without_subcommand_keys

    with_key, without = tmp_path / "a.yaml", tmp_path / "b.yaml"
    with_key.write_text("ckpt_path: null\ntrainer: {max_epochs: 2}\n")
    without.write_text("trainer: {max_epochs: 3}\n")
    temporary: list[str] = []
    argv = _without_subcommand_keys(["--config", str(with_key), "--config", str(without), "--x", "1"], temporary)
    assert argv[1] == temporary[0] != str(with_key) and argv[3:] == [str(without), "--x", "1"]
    assert yaml.safe_load(Path(temporary[0]).read_text()) == {"trainer": {"max_epochs": 2}}
    assert "ckpt_path" in with_key.read_text()  # the user's file is untouched
