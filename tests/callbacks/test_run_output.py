"""What a run writes and keeps: the newest checkpoint, run folders, file modes, mmcv meta and log steps."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from det_tiny import loader, module, trainer
from lightning.pytorch.loggers import TensorBoardLogger

from detlight.callbacks import Evaluation, IntervalLogger, IterTimer, MMCheckpoint, TextLogger
from detlight.resume import find_last_checkpoint


def _global_step(path: Path | str) -> int:
    return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])


def test_stop_before_the_interval_still_saves_the_last_state(tmp_path: Path) -> None:
    # interval 2 over 4 epochs would save epoch_2 and epoch_4; max_steps=5 stops in epoch 3 at batch 5
    cb = MMCheckpoint(interval=2)
    tr = trainer(tmp_path, [cb], max_epochs=4, max_steps=5)
    tr.fit(module(), loader(2))
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["epoch_2.ckpt", "iter_5.ckpt", "last.ckpt",
                                                                 "latest.ckpt"]
    assert os.readlink(tmp_path / "last.ckpt") == "iter_5.ckpt"
    assert _global_step(tmp_path / "last.ckpt") == 5
    assert find_last_checkpoint([tmp_path]) == str(tmp_path / "iter_5.ckpt")


def test_no_extra_save_when_the_last_one_is_current(tmp_path: Path) -> None:
    trainer(tmp_path, [MMCheckpoint(interval=1)], max_epochs=2).fit(module(), loader(2))
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["epoch_1.ckpt", "epoch_2.ckpt", "last.ckpt",
                                                                 "latest.ckpt"]


def test_files_are_ordinary_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        trainer(tmp_path, [MMCheckpoint(interval=1, export_mmcv=True)], max_epochs=1).fit(module(), loader(1))
    finally:
        os.umask(old)
    for name in ("epoch_1.ckpt", "epoch_1.pth"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name


def test_each_run_gets_its_own_folder(tmp_path: Path) -> None:
    for _ in range(2):  # the converted configs' logger: name '' and version null
        logger = TensorBoardLogger(save_dir=str(tmp_path), name="", version=None)
        trainer(tmp_path, [MMCheckpoint(interval=1)], max_epochs=1, logger=logger).fit(module(), loader(1))
    first, second = tmp_path / "version_0" / "checkpoints", tmp_path / "version_1" / "checkpoints"
    assert (first / "epoch_1.ckpt").is_file() and (second / "epoch_1.ckpt").is_file()
    assert not list(tmp_path.glob("*.ckpt"))  # nothing shared in the work dir


def test_mmcv_meta_in_epoch_and_best_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from detlight import __version__

    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    cbs = [Evaluation(save_best="bbox_mAP", export_mmcv=True), MMCheckpoint(interval=1, export_mmcv=True)]
    trainer(tmp_path, cbs, max_epochs=2).fit(module(values=(0.3, 0.2)), loader(1), loader(1, seed=1))
    epoch2 = torch.load(tmp_path / "epoch_2.pth", weights_only=True)["meta"]
    assert epoch2["hook_msgs"] == {"best_score": pytest.approx(0.3), "best_ckpt": str(tmp_path /
                                   "best_bbox_mAP_epoch_1.pth"), "last_ckpt": str(tmp_path / "epoch_1.pth")}
    assert epoch2["mmcv_version"] == __version__ == epoch2["detlight_version"]
    assert (epoch2["seed"], epoch2["exp_name"], epoch2["epoch"], epoch2["iter"]) == (5, tmp_path.name, 2, 2)
    best = torch.load(tmp_path / "best_bbox_mAP_epoch_1.pth", weights_only=True)["meta"]
    assert (best["seed"], best["exp_name"], best["epoch"]) == (5, tmp_path.name, 1)
    assert best["hook_msgs"]["best_ckpt"] == str(tmp_path / "best_bbox_mAP_epoch_1.pth")
    assert "last_ckpt" not in best["hook_msgs"]  # mmcv: epoch_1.pth is written after epoch 1's evaluation here


def test_iteration_based_eval_step_matches_mmcv(tmp_path: Path) -> None:
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    steps: list[tuple[int, list[str]]] = []
    logger.log_metrics = lambda metrics, step=None: steps.append((step, sorted(metrics)))  # type: ignore[method-assign]
    cbs = [IterTimer(), Evaluation(interval=2, by_epoch=False), IntervalLogger(interval=10, by_epoch=False)]
    trainer(tmp_path, cbs, max_epochs=1, logger=logger, enable_checkpointing=False).fit(
        module(), loader(4), loader(1, seed=1))
    # mmcv IterBasedRunner evaluates in after_train_iter of iterations 1 and 3 (0-based): step runner.iter + 1
    assert [step for step, keys in steps if "val/bbox_mAP" in keys] == [2, 4]


def test_coco_not_computed_is_not_logged(tmp_path: Path) -> None:
    from det_tiny import ScriptedMetric

    model = module()
    model.evaluator = ScriptedMetric([0.5], extra={"bbox_mAP_l": -1.0})
    text = TextLogger(interval=10)
    trainer(tmp_path, [IterTimer(), text], max_epochs=1, enable_checkpointing=False).fit(
        model, loader(1), loader(1, seed=1))
    assert model.eval_results["bbox_mAP_l"] == -1.0
    log = Path(text.log_path).read_text()
    assert "bbox_mAP: 0.5000" in log and "bbox_mAP_l" not in log
    vals = [json.loads(line) for line in Path(text.json_log_path).read_text().splitlines()[1:]]
    assert vals and all("bbox_mAP_l" not in rec for rec in vals)


def test_preamble_lists_hooks_by_stage(tmp_path: Path) -> None:
    text = TextLogger(interval=10)
    ckpt = MMCheckpoint(interval=1)
    trainer(tmp_path, [IterTimer(), Evaluation(), text, ckpt], max_epochs=3).fit(module(), loader(1), loader(1))
    log = Path(text.log_path).read_text()
    table = log[log.index("Hooks will be executed in the following order:"):log.index("workflow:")]
    assert "before_run:\n" in table and "after_train_iter:\n(LOW         ) IterTimer" in table
    assert "after_train_epoch:\n(NORMAL      ) MMCheckpoint" in table
    assert "(LOW         ) Evaluation" in table and " -------------------- " in table
    assert "workflow: [('train', 1)], max: 3 epochs" in log
    assert f"Checkpoints will be saved to {tmp_path} by HardDiskBackend." in log
    assert log.count("Exp name:") == 1
    meta = json.loads(Path(text.json_log_path).read_text().splitlines()[0])
    assert meta["hook_msgs"] == {} and "epoch" not in meta


def test_links_follow_a_preemption_checkpoint(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    class Stop(pl.Callback):  # what detlight.resume.Preemption does for SIGTERM: save in on_exception
        saved_path: str | None = None

        def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
            if trainer.global_step == 3:
                raise RuntimeError("stop here")

        def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exc: BaseException) -> None:
            self.saved_path = str(tmp_path / "preempted.ckpt")
            trainer.save_checkpoint(self.saved_path)

    with pytest.raises(RuntimeError, match="stop here"):
        trainer(tmp_path, [Stop(), MMCheckpoint(interval=1)], max_epochs=3).fit(module(), loader(2))
    assert os.readlink(tmp_path / "last.ckpt") == "preempted.ckpt" == os.readlink(tmp_path / "latest.ckpt")
    assert _global_step(tmp_path / "last.ckpt") == 3
