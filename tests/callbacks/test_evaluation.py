"""Evaluation: mmcv EvalHook interval/start gating of Lightning's validation loop, save_best and rule inference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from det_tiny import loader, module, trainer
from lightning.pytorch.callbacks import Callback

from detlight.callbacks.checkpoint import MMCheckpoint
from detlight.callbacks.evaluation import Evaluation, infer_rule
from detlight.exceptions import ConfigError


class _ValLog(Callback):
    """Records (epoch, batches trained) at every non-sanity validation end."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, int]] = []

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if not trainer.sanity_checking:
            self.runs.append((trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.total.ready))


@pytest.mark.parametrize(
    ("key", "rule"),
    [("bbox_mAP", "greater"), ("mAP", "greater"), ("ACC", "greater"), ("AR@100", "greater"), ("loss", "less"),
     ("val_loss", "less"), ("top1_precision", "greater")],
)
def test_infer_rule(key: str, rule: str) -> None:
    assert infer_rule(key) == rule


def test_infer_rule_fails_clearly_and_custom_keys_replace_defaults() -> None:
    with pytest.raises(ValueError, match="rule: greater"):
        infer_rule("KITTI/Car_3D_AP40_moderate_strict")
    assert infer_rule("KITTI/Car_3D_AP40_moderate_strict", greater_keys=["ap40"]) == "greater"
    with pytest.raises(ValueError):  # mmcv replaces the defaults instead of extending them
        infer_rule("bbox_mAP", greater_keys=["ap40"])
    with pytest.raises(ValueError, match="Cannot infer"):
        Evaluation(save_best="KITTI/Car_AP")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"interval": 2}, [False, True, False, True, False, True]),
        ({"interval": 2, "start": 3}, [False, False, True, False, True, False]),
        ({"interval": 1, "start": 0}, [True] * 6),
        ({"interval": 1, "dynamic_intervals": [(4, 2)]}, [True, True, True, True, False, True]),
    ],
)
def test_should_evaluate_follows_mmcv(kwargs: dict, expected: list[bool]) -> None:
    cb = Evaluation(**kwargs)
    assert [cb.should_evaluate(e) for e in range(6)] == expected


def test_interval_gates_lightning_validation(tmp_path: Path) -> None:
    runs = _ValLog()
    tr = trainer(tmp_path, [Evaluation(interval=2), runs], max_epochs=4, enable_checkpointing=False)
    tr.fit(module(), loader(2), loader(1, seed=1))
    assert [epoch for epoch, _ in runs.runs] == [1, 3]
    assert tr.check_val_every_n_epoch == 1  # the Trainer's own setting is restored


def test_start_zero_evaluates_before_training(tmp_path: Path) -> None:
    runs = _ValLog()
    trainer(tmp_path, [Evaluation(start=0), runs], max_epochs=2, enable_checkpointing=False).fit(
        module(), loader(2), loader(1, seed=1))
    assert runs.runs == [(0, 0), (0, 2), (1, 4)]


def test_iteration_mode_validates_every_interval_batches(tmp_path: Path) -> None:
    runs = _ValLog()
    trainer(tmp_path, [Evaluation(interval=3, by_epoch=False), runs], max_epochs=2,
            enable_checkpointing=False).fit(module(), loader(4), loader(1, seed=1))
    assert [done for _, done in runs.runs] == [3, 6]


@pytest.mark.parametrize(
    ("key", "values", "best_epoch"),
    [("bbox_mAP", [0.1, 0.3, 0.2, 0.25], 2), ("bbox_mAP", [0.1, 0.3, 0.3, 0.5], 4), ("loss", [0.5, 0.3, 0.4, 0.3], 2)],
)
def test_save_best_keeps_only_the_best(tmp_path: Path, key: str, values: list[float], best_epoch: int) -> None:
    cb = Evaluation(save_best="auto", export_mmcv=True)
    trainer(tmp_path, [cb], max_epochs=4, enable_checkpointing=False).fit(
        module(values, key=key), loader(1), loader(1, seed=1))
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("best_"))
    assert names == [f"best_{key}_epoch_{best_epoch}.ckpt", f"best_{key}_epoch_{best_epoch}.pth"]
    assert cb.best_score == pytest.approx(values[best_epoch - 1])
    pth = torch.load(tmp_path / names[1], weights_only=True)
    assert pth["meta"]["epoch"] == best_epoch
    assert pth["meta"]["hook_msgs"]["best_score"] == pytest.approx(values[best_epoch - 1])
    ckpt = torch.load(tmp_path / names[0], weights_only=True)
    assert ckpt["callbacks"]["Evaluation"]["best_score"] == pytest.approx(values[best_epoch - 1])


def test_slash_keys_and_mmcheckpoint_directory(tmp_path: Path) -> None:
    key = "KITTI/Car_3D_AP40_moderate_strict"
    model = module([0.2, 0.1], key=key)
    cbs = [Evaluation(save_best=key, rule="greater"), MMCheckpoint(interval=1, out_dir=str(tmp_path / "out"))]
    trainer(tmp_path / "run", cbs, max_epochs=2).fit(model, loader(1), loader(1, seed=1))
    assert (tmp_path / "out" / "run" / "best_KITTI_Car_3D_AP40_moderate_strict_epoch_1.ckpt").is_file()


def test_auto_key_without_rule_fails_at_first_evaluation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Cannot infer whether a higher or lower 'foo'"):
        trainer(tmp_path, [Evaluation(save_best="auto")], max_epochs=1, enable_checkpointing=False).fit(
            module([0.1], key="foo"), loader(1), loader(1, seed=1))


def test_missing_key_names_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bbox_mAP"):
        trainer(tmp_path, [Evaluation(save_best="segm_mAP")], max_epochs=1, enable_checkpointing=False).fit(
            module([0.1]), loader(1), loader(1, seed=1))


def test_best_score_survives_resume(tmp_path: Path) -> None:
    first = Evaluation(save_best="bbox_mAP")
    trainer(tmp_path, [first, MMCheckpoint(interval=1)], max_epochs=2).fit(
        module([0.5, 0.1]), loader(1), loader(1, seed=1))
    second = Evaluation(save_best="bbox_mAP")
    trainer(tmp_path, [second, MMCheckpoint(interval=1)], max_epochs=3).fit(
        module([0.3]), loader(1), loader(1, seed=1), ckpt_path=str(tmp_path / "epoch_2.ckpt"))
    assert second.best_score == pytest.approx(0.5)  # 0.3 is not better than the restored 0.5
    assert sorted(p.name for p in tmp_path.glob("best_*")) == ["best_bbox_mAP_epoch_1.ckpt"]


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="interval"):
        Evaluation(interval=0)
    with pytest.raises(ValueError, match="start"):
        Evaluation(start=-1)
    with pytest.raises(ValueError, match="rule"):
        Evaluation(rule="bigger")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ascending"):
        Evaluation(dynamic_intervals=[(5, 1), (3, 2)])
