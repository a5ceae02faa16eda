"""MMCheckpoint: mmcv CheckpointHook cadence, names, max_keep_ckpts deletion, mmcv .pth layout, resume, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from det_tiny import loader, module, trainer
from lightning.pytorch.callbacks import Callback

from detlight.callbacks.checkpoint import AtomicCheckpointIO, MMCheckpoint, atomic_torch_save, link_or_copy


def _files(path: Path, suffix: str) -> set[str]:
    return {p.name for p in path.iterdir() if p.suffix == suffix and p.stem not in ("latest", "last")}


# Expected sets follow mmcv §2.4: every_n_epochs(interval) or (save_last and last epoch); max_keep deletes
# current - k*interval, then one interval further back, stopping at the first missing file.
@pytest.mark.parametrize(
    ("interval", "epochs", "max_keep", "save_last", "expected"),
    [
        (-1, 3, -1, True, {3}),
        (-1, 3, -1, False, set()),
        (2, 5, -1, True, {2, 4, 5}),
        (2, 5, -1, False, {2, 4}),
        (1, 4, 2, True, {3, 4}),
        (2, 5, 1, True, {4, 5}),  # at 5: range(3, 0, -2) -> epoch_3 missing -> stop; at 4: deletes epoch_2
    ],
)
def test_epoch_cadence_and_max_keep(tmp_path: Path, interval: int, epochs: int, max_keep: int, save_last: bool,
                                    expected: set[int]) -> None:
    cb = MMCheckpoint(interval=interval, max_keep_ckpts=max_keep, save_last=save_last)
    trainer(tmp_path, [cb], max_epochs=epochs).fit(module(), loader(2))
    assert _files(tmp_path, ".ckpt") == {f"epoch_{e}.ckpt" for e in expected}


def test_iter_cadence_and_mmcv_deletion_quirk(tmp_path: Path) -> None:
    # 2 epochs x 4 batches = 8 iters, interval 3: iter_3, iter_6 and (save_last) iter_8. max_keep=1 deletes iter_3
    # at iter_6 (range(3, 0, -3)); at iter_8 it looks at iter_5, which does not exist, and keeps iter_6.
    cb = MMCheckpoint(interval=3, by_epoch=False, max_keep_ckpts=1, export_mmcv=True)
    trainer(tmp_path, [cb], max_epochs=2).fit(module(), loader(4))
    assert _files(tmp_path, ".ckpt") == {"iter_6.ckpt", "iter_8.ckpt"}
    assert _files(tmp_path, ".pth") == {"iter_6.pth", "iter_8.pth"}
    meta = torch.load(tmp_path / "iter_6.pth", weights_only=True)["meta"]
    # mmcv saves inside after_train_iter, before runner.iter is incremented: iter_6.pth holds iter 5
    assert (meta["epoch"], meta["iter"]) == (2, 5)


def test_mmcv_layout_is_plain_and_matches_the_model(tmp_path: Path) -> None:
    cb = MMCheckpoint(interval=1, export_mmcv=True, meta={"seed": 3})
    model = module()
    trainer(tmp_path, [cb], max_epochs=2).fit(model, loader(3))
    pth = torch.load(tmp_path / "epoch_2.pth", weights_only=True)
    assert set(pth) == {"meta", "state_dict", "optimizer"}
    meta = pth["meta"]
    assert (meta["epoch"], meta["iter"], meta["seed"], meta["CLASSES"]) == (2, 6, 3, ("a", "b"))
    assert meta["hook_msgs"]["last_ckpt"] == str(tmp_path / "epoch_1.pth")
    assert pth["state_dict"].keys() == model.model.state_dict().keys()
    for key, value in model.model.state_dict().items():
        assert pth["state_dict"][key].device.type == "cpu"
        torch.testing.assert_close(pth["state_dict"][key], value)
    assert pth["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1)
    ckpt = torch.load(tmp_path / "epoch_2.ckpt", weights_only=True)  # Lightning file: plain types too
    assert "optimizer_states" in ckpt and ckpt["epoch"] == 1
    assert os.readlink(tmp_path / "latest.pth") == "epoch_2.pth"
    assert os.readlink(tmp_path / "latest.ckpt") == "epoch_2.ckpt"


def test_save_optimizer_false_writes_weights_only(tmp_path: Path) -> None:
    cb = MMCheckpoint(interval=1, save_optimizer=False, export_mmcv=True)
    trainer(tmp_path, [cb], max_epochs=1).fit(module(), loader(2))
    assert "optimizer" not in torch.load(tmp_path / "epoch_1.pth", weights_only=True)
    assert "optimizer_states" not in torch.load(tmp_path / "epoch_1.ckpt", weights_only=True)


def test_no_symlink_when_disabled_and_out_dir_gets_work_dir_name(tmp_path: Path) -> None:
    work, out = tmp_path / "work_x", tmp_path / "shared"
    cb = MMCheckpoint(interval=1, out_dir=str(out), create_symlink=False)
    trainer(work, [cb], max_epochs=1).fit(module(), loader(2))
    assert sorted(p.name for p in (out / "work_x").iterdir()) == ["epoch_1.ckpt"]


class _FirstEpoch(Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.epochs.append(trainer.current_epoch)


def test_resume_from_last_continues_the_run(tmp_path: Path) -> None:
    trainer(tmp_path, [MMCheckpoint(interval=1)], max_epochs=2).fit(module(), loader(2))
    seen = _FirstEpoch()
    resumed = trainer(tmp_path, [MMCheckpoint(interval=1), seen], max_epochs=3)
    resumed.fit(module(seed=1), loader(2), ckpt_path="last")
    assert seen.epochs == [2]
    assert resumed.global_step == 6
    assert os.readlink(tmp_path / "latest.ckpt") == "epoch_3.ckpt"


def test_atomic_io_is_installed_for_the_default_io(tmp_path: Path) -> None:
    tr = trainer(tmp_path, [MMCheckpoint(interval=1)], max_epochs=1)
    tr.fit(module(), loader(1))
    assert isinstance(tr.strategy.checkpoint_io, AtomicCheckpointIO)


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "epoch_1.pth"
    atomic_torch_save({"v": torch.tensor(1.0)}, str(target))

    def broken_save(obj: object, f: object) -> None:
        f.write(b"partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"v": torch.tensor(2.0)}, str(target))
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["v"].item() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_1.pth"]  # no temp file left behind


def test_link_falls_back_to_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "epoch_1.pth"
    src.write_bytes(b"abc")
    link_or_copy(str(src), str(tmp_path / "latest.pth"))
    assert (tmp_path / "latest.pth").is_symlink()

    def no_symlink(*args: object, **kwargs: object) -> None:
        raise OSError("symlinks not permitted")

    monkeypatch.setattr(os, "symlink", no_symlink)
    link_or_copy(str(src), str(tmp_path / "latest.pth"))
    assert not (tmp_path / "latest.pth").is_symlink()
    assert (tmp_path / "latest.pth").read_bytes() == b"abc"


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(TypeError, match="interval"):
        MMCheckpoint(interval=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_keep_ckpts"):
        MMCheckpoint(max_keep_ckpts="3")  # type: ignore[arg-type]
