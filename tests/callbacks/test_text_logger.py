"""TextLogger (mmcv TextLoggerHook): text lines, the json log as analyze_logs.py reads it, the meta line, ETA."""

from __future__ import annotations

import json
import logging
import re
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from logging_tiny import TinyModule, batch_values, make_trainer, uneven_loader, weighted_mean

from detlight.callbacks import iter_timer
from detlight.callbacks.interval_logger import IntervalLogger
from detlight.callbacks.iter_timer import IterTimer
from detlight.callbacks.text_logger import TextLogger, read_json_log
from detlight.logbuffer import LogBuffer

SIZES = [1, 2, 3, 4, 1, 2, 3]
TRAIN_KEYS = ["mode", "epoch", "iter", "lr", "data_time", "loss_a", "loss", "grad_norm", "time"]


def _fit(tmp_path: Path, text: TextLogger, max_epochs: int = 2, module: pl.LightningModule | None = None,
         **kwargs: Any) -> TextLogger:
    trainer = make_trainer(tmp_path, [IterTimer(), text], max_epochs=max_epochs, **kwargs)
    trainer.fit(module or TinyModule(grad_norm=True, epoch_offset=100.0), uneven_loader(SIZES), uneven_loader([2, 1]))
    return text


def _load_json_logs(path: str) -> dict[int, dict[str, list[Any]]]:
    """mmdet3d tools/analysis_tools/analyze_logs.py ``load_json_logs``, verbatim in behaviour."""
    log_dict: dict[int, dict[str, list[Any]]] = {}
    with open(path) as log_file:
        for line in log_file:
            log = json.loads(line.strip())
            if "epoch" not in log:  # skip lines without `epoch` field
                continue
            epoch = log.pop("epoch")
            if epoch not in log_dict:
                log_dict[epoch] = defaultdict(list)
            for k, v in log.items():
                log_dict[epoch][k].append(v)
    return log_dict


def _fake_clock(monkeypatch: pytest.MonkeyPatch, step: float = 0.5) -> None:
    """Every perf_counter() call of IterTimer advances 0.5 s: data_time = 0.5, time = 1.0 per iteration."""
    now = [0.0]

    def perf_counter() -> float:
        now[0] += step
        return now[0]

    monkeypatch.setattr(iter_timer, "time", types.SimpleNamespace(perf_counter=perf_counter))


def test_json_log_lines_keys_rounding_and_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    text = _fit(tmp_path, TextLogger(interval=3))
    lines = [json.loads(line) for line in Path(text.json_log_path).read_text().splitlines()]
    # meta first, no `epoch`
    assert lines[0] == {"seed": 7, "exp_name": tmp_path.name, "hook_msgs": {}, "iters_per_epoch": 7}
    train = [rec for rec in lines[1:] if rec["mode"] == "train"]
    assert [list(rec) for rec in train] == [TRAIN_KEYS] * 4
    assert [(rec["epoch"], rec["iter"]) for rec in train] == [(1, 3), (1, 6), (2, 3), (2, 6)]
    values = batch_values(SIZES)
    want = [weighted_mean(values[0:3]), weighted_mean(values[3:6])]
    want += [w + 100.0 for w in want]
    assert [rec["loss_a"] for rec in train] == [round(w, 5) for w in want]
    for rec in train:
        assert all(v == round(v, 5) for v in rec.values() if isinstance(v, float))
        assert rec["lr"] == 0.1 and rec["grad_norm"] == 3.0
    evals = [rec for rec in lines[1:] if rec["mode"] == "val"]
    assert evals == [{"mode": "val", "epoch": 1, "iter": 2, "lr": 0.1, "bbox_mAP": 0.5, "bbox_mAP_50": 0.33333},
                     {"mode": "val", "epoch": 2, "iter": 2, "lr": 0.1, "bbox_mAP": 0.625, "bbox_mAP_50": 1.33333}]
    assert lines[1:] == train[:2] + evals[:1] + train[2:] + evals[1:]  # eval line follows its epoch's train lines


def test_curves_use_the_recorded_epoch_length(tmp_path: Path) -> None:
    from detlight.plotting import load_curves

    text = _fit(tmp_path, TextLogger(interval=3))  # 7 batches an epoch: lines at iter 3 and 6, the 7th is not logged
    curves = load_curves(text.json_log_path)
    assert curves.iters_per_epoch == 7
    assert curves.get("loss").steps == [3, 6, 10, 13]  # the largest logged iter (6) would give [3, 6, 9, 12]
    assert curves.get("val/bbox_mAP").steps == [7, 14]


def test_analyze_logs_reads_it(tmp_path: Path) -> None:
    text = _fit(tmp_path, TextLogger(interval=2))
    log_dict = _load_json_logs(text.json_log_path)
    assert sorted(log_dict) == [1, 2]
    for epoch in (1, 2):
        assert log_dict[epoch]["mode"] == ["train"] * 3 + ["val"]
        assert len(log_dict[epoch]["time"]) == 3  # cal_train_time reads `time` of the train lines
        assert log_dict[epoch]["bbox_mAP"] == [0.5 + (epoch - 1) / 8]
    records = read_json_log(text.json_log_path)
    assert len(records) == 8 and all("epoch" in rec for rec in records)


def test_text_lines_match_mmcv_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_clock(monkeypatch)
    text = _fit(tmp_path, TextLogger(interval=3))
    records = [line.split(" - INFO - ", 1)[1] for line in Path(text.log_path).read_text().splitlines()
               if " - INFO - " in line]  # the hook table's continuation lines have no head
    assert records[0].startswith("Start running, host: ") and records[1].startswith("Hooks will be executed")
    assert records[2] == "workflow: [('train', 1)], max: 2 epochs"
    start = records.index(f"Exp name: {tmp_path.name}")  # once, after the preamble
    lines = records[start + 1:]
    assert not [line for line in lines if line.startswith("Exp name")]
    # ETA: running mean time 1.0 s x (14 - iter - 1) iterations left
    assert lines[0] == ("Epoch [1][3/7]\tlr: 1.000e-01, eta: 0:00:11, time: 1.000, data_time: 0.500, "
                        "loss_a: 3.5000, loss: 7.0000, grad_norm: 3.0000")
    assert lines[1].startswith("Epoch [1][6/7]\tlr: 1.000e-01, eta: 0:00:08, time: 1.000, data_time: 0.500, ")
    assert lines[2] == "Epoch(val) [1][2]\tbbox_mAP: 0.5000, bbox_mAP_50: 0.3333"
    # mmcv's ETA only sums the logged intervals: the ignored 7th iteration makes it 9 s / 10 iters x 4 left = 3.6 s
    assert lines[3].startswith("Epoch [2][3/7]\tlr: 1.000e-01, eta: 0:00:03, ")
    assert lines[-1] == "Epoch(val) [2][2]\tbbox_mAP: 0.6250, bbox_mAP_50: 1.3333"
    assert not [h for h in logging.getLogger("detlight").handlers if isinstance(h, logging.FileHandler)]


def test_by_iter_lines(tmp_path: Path) -> None:
    text = _fit(tmp_path, TextLogger(interval=4, by_epoch=False))
    lines = Path(text.log_path).read_text().splitlines()
    heads = [m.group(1) for line in lines if (m := re.search(r"(Iter(\(val\))? \[[^\]]*\])", line))]
    assert heads == ["Iter [4/14]", "Iter(val) [2]", "Iter [8/14]", "Iter [12/14]", "Iter(val) [2]"]
    assert [rec["iter"] for rec in read_json_log(text.json_log_path)] == [4, 2, 8, 12, 2]


def test_same_averages_as_interval_logger(tmp_path: Path) -> None:
    seen: list[dict[str, float]] = []

    class Spy(IntervalLogger):
        def log_train(self, trainer: pl.Trainer, pl_module: Any, values: Any, batch_idx: int, iteration: int) -> None:
            seen.append(dict(pl_module.log_buffer.output))  # what mmcv's later loggers would read

    text = TextLogger(interval=3)
    trainer = make_trainer(tmp_path, [IterTimer(), text, Spy(interval=3)], max_epochs=1)
    module = TinyModule(grad_norm=True)
    trainer.fit(module, uneven_loader(SIZES))
    train = [rec for rec in read_json_log(text.json_log_path) if rec["mode"] == "train"]
    assert [{k: round(v, 5) for k, v in out.items()} for out in seen] == [
        {k: v for k, v in rec.items() if k not in ("mode", "epoch", "iter", "lr")} for rec in train]
    assert module.log_buffer.output == {} and not module.log_buffer.ready  # the last logger cleared it


def test_meta_line_takes_config_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("model:\n  lr: 0.1\n")
    text = _fit(tmp_path, TextLogger(interval=3, meta={"exp_name": "pointpillars", "env_info": "cpu"}), max_epochs=1)
    meta = json.loads(Path(text.json_log_path).read_text().splitlines()[0])
    assert meta["exp_name"] == "pointpillars" and meta["env_info"] == "cpu"
    assert meta["config"] == "model:\n  lr: 0.1\n"
    assert Path(text.log_path).name == f"{text.timestamp}.log"
    assert re.fullmatch(r"\d{8}_\d{6}", text.timestamp)


def test_json_off_and_fixed_timestamp(tmp_path: Path) -> None:
    text = _fit(tmp_path, TextLogger(interval=3, json=False, timestamp="20240101_000000"), max_epochs=1)
    assert text.json_log_path is None
    assert sorted(p.name for p in tmp_path.glob("*.log*")) == ["20240101_000000.log"]


def test_read_json_log_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "run.log.json"
    path.write_text('{"seed": 1}\n{"mode": "train", "epoch": 1}\n{not json\n')
    with pytest.raises(ValueError, match=r"run\.log\.json:3 is not a json object"):
        read_json_log(path)


def test_meta_must_be_json_serialisable() -> None:
    with pytest.raises(ValueError, match="`meta` must be json-serialisable"):
        TextLogger(meta={"model": object()})


def test_val_workflow_losses_get_their_own_line(tmp_path: Path) -> None:
    class WithValLosses(TinyModule):
        def __init__(self) -> None:
            super().__init__()
            self.val_log_buffer = LogBuffer()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            (x,) = batch
            self.val_log_buffer.update({"loss_val": x.mean()}, len(x))

        def on_validation_epoch_end(self) -> None:
            super().on_validation_epoch_end()
            self.val_log_buffer.clear()  # as DetectorModule does, after the callbacks have read it

    text = _fit(tmp_path, TextLogger(interval=3), max_epochs=1, module=WithValLosses())
    val = [rec for rec in read_json_log(text.json_log_path) if rec["mode"] == "val"]
    # val batches [2, 1] over values 1..3: sample-weighted mean (1 + 2 + 3) / 3
    assert val == [{"mode": "val", "epoch": 1, "iter": 2, "lr": 0.1, "bbox_mAP": 0.5, "bbox_mAP_50": 0.33333},
                   {"mode": "val", "epoch": 1, "iter": 2, "lr": 0.1, "loss_val": 2.0}]
    assert Path(text.log_path).read_text().splitlines()[-1].endswith("Epoch(val) [1][2]\tloss_val: 2.0000")


def test_memory_key_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class OnCuda(TinyModule):  # pretends to live on a GPU; only TextLogger asks
        @property
        def device(self) -> torch.device:
            return torch.device("cuda", 0)

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 1024 * 1024 + 5)
    text = _fit(tmp_path, TextLogger(interval=3), max_epochs=1, module=OnCuda(grad_norm=True))
    train = [rec for rec in read_json_log(text.json_log_path) if rec["mode"] == "train"]
    assert list(train[0]) == TRAIN_KEYS[:4] + ["memory"] + TRAIN_KEYS[4:] and train[0]["memory"] == 3
    first = next(line for line in Path(text.log_path).read_text().splitlines() if "Epoch [" in line)
    assert re.search(r"data_time: \d\.\d{3}, memory: 3, loss_a: ", first)
