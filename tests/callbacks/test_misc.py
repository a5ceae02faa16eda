"""CheckInvalidLoss, EmptyCache, SyncBuffers, SetEpochInfo, NumClassCheck, and Lightning's own sampler set_epoch."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from det_tiny import loader, module, trainer
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler

from detlight.callbacks import empty_cache, num_class_check, sync_buffers
from detlight.callbacks.check_invalid_loss import CheckInvalidLoss
from detlight.callbacks.empty_cache import EmptyCache
from detlight.callbacks.num_class_check import NumClassCheck
from detlight.callbacks.set_epoch_info import SetEpochInfo
from detlight.callbacks.sync_buffers import SyncBuffers
from detlight.exceptions import ModelContractError
from detlight.testing import BoringDataset, BoringDetector

# ---------------------------------------------------------------------------------------------------- CheckInvalidLoss


def test_invalid_loss_names_key_epoch_and_iter(tmp_path: Path) -> None:
    clean = trainer(tmp_path, [CheckInvalidLoss(interval=1)], max_epochs=2, enable_checkpointing=False)
    clean.fit(module(), DataLoader(BoringDataset(2), batch_size=None))  # finite losses: no error
    assert clean.global_step == 4
    # the second batch (global iter 2) carries a NaN pixel; interval=2 checks iters 2, 4, ...
    nan_loader = DataLoader(BoringDataset(4, nan_at=1), batch_size=None)
    tr = trainer(tmp_path, [CheckInvalidLoss(interval=2)], max_epochs=2, enable_checkpointing=False)
    with pytest.raises(FloatingPointError, match=r"epoch 1, iter 2: \{'loss_cls': nan, 'acc': nan, 'loss': nan\}"):
        tr.fit(module(), nan_loader)


def test_invalid_loss_is_only_checked_every_interval(tmp_path: Path) -> None:
    # iter 1 is NaN (and the weights after it), but with interval=4 the 3 iterations run are never checked
    nan_loader = DataLoader(BoringDataset(4, nan_at=0), batch_size=None)
    tr = trainer(tmp_path, [CheckInvalidLoss(interval=4)], max_epochs=1, enable_checkpointing=False,
                 limit_train_batches=3)
    tr.fit(module(), nan_loader)
    assert tr.global_step == 3
    assert not torch.isfinite(tr.lightning_module.last_outputs["loss"])


def test_invalid_loss_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        CheckInvalidLoss(interval=0)


# ---------------------------------------------------------------------------------------------------- EmptyCache


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, 2 + 2), ({"before_epoch": True}, 4 + 4), ({"after_epoch": False, "after_iter": True}, 2 * 3 + 2 * 1)],
)
def test_empty_cache_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict, expected: int) -> None:
    calls: list[int] = []
    monkeypatch.setattr(empty_cache, "_empty_cache", lambda: calls.append(1))
    trainer(tmp_path, [EmptyCache(**kwargs)], max_epochs=2, enable_checkpointing=False).fit(
        module(), loader(3), loader(1, seed=1))
    assert len(calls) == expected


# ---------------------------------------------------------------------------------------------------- SyncBuffers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_allreduce_buffers_math(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in for a 2-rank group whose other rank holds running_mean = 3 and running_var = 5.
    other = {torch.float32: torch.tensor([3.0, 3.0, 5.0, 5.0])}
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda t: t.add_(other[t.dtype]))
    bn = torch.nn.BatchNorm1d(2)
    bn.running_mean.fill_(1.0)
    bn.num_batches_tracked.fill_(7)
    sync_buffers.allreduce_buffers(bn.buffers())
    torch.testing.assert_close(bn.running_mean, torch.full((2,), 2.0))
    torch.testing.assert_close(bn.running_var, torch.full((2,), 3.0))
    assert bn.num_batches_tracked.item() == 7


@pytest.mark.ddp
@pytest.mark.slow
def test_allreduce_buffers_with_two_gloo_processes(tmp_path: Path) -> None:
    from ddp_buffers_worker import allreduce_worker

    mp.start_processes(allreduce_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        state = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        torch.testing.assert_close(state["running_mean"], torch.ones(2))
        assert state["num_batches_tracked"].item() == rank + 5


def test_sync_buffers_is_a_no_op_on_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(sync_buffers, "allreduce_buffers", lambda buffers: calls.append(1))
    trainer(tmp_path, [SyncBuffers()], max_epochs=1, enable_checkpointing=False).fit(module(), loader(1))
    assert calls == []


# ---------------------------------------------------------------------------------------------------- SetEpochInfo


def test_set_epoch_info(tmp_path: Path) -> None:
    model = module()
    trainer(tmp_path, [SetEpochInfo()], max_epochs=3, enable_checkpointing=False).fit(model, loader(1))
    assert model.model.epochs_seen == [0, 1, 2]


def test_set_epoch_info_needs_the_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(BoringDetector, "set_epoch")
    with pytest.raises(ModelContractError, match="BoringDetector has no such method"):
        trainer(tmp_path, [SetEpochInfo()], max_epochs=1, enable_checkpointing=False).fit(module(), loader(1))


# ---------------------------------------------------------------------------------------------------- NumClassCheck


def test_num_class_check_passes_and_fails_clearly(tmp_path: Path) -> None:
    trainer(tmp_path, [NumClassCheck()], max_epochs=1, enable_checkpointing=False).fit(
        module(num_classes=2), loader(1), loader(1))
    with pytest.raises(ValueError, match=r"`num_classes` \(3\) of BoringDetector `model` does not match .* \(2\) in BoringDataset"):
        trainer(tmp_path, [NumClassCheck()], max_epochs=1, enable_checkpointing=False).fit(
            module(num_classes=3), loader(1))


def test_num_class_check_on_validation_sets_and_exclusions(tmp_path: Path) -> None:
    val = DataLoader(BoringDataset(1, classes=("a", "b", "c")), batch_size=None)
    with pytest.raises(ValueError, match=r"\(3\) in BoringDataset"):
        trainer(tmp_path, [NumClassCheck()], max_epochs=1, enable_checkpointing=False).fit(
            module(), loader(1), val)
    trainer(tmp_path, [NumClassCheck(exclude=("BoringDetector",))], max_epochs=1, enable_checkpointing=False).fit(
        module(), loader(1), val)


def test_num_class_check_string_and_missing_classes(caplog: pytest.LogCaptureFixture) -> None:
    class Data:
        CLASSES: object = "car"

    with pytest.raises(ValueError, match=r"CLASSES = \('car',\)"):
        num_class_check.check_num_classes(BoringDetector(1), Data())
    Data.CLASSES = None
    with caplog.at_level(logging.WARNING):
        num_class_check.check_num_classes(BoringDetector(1), Data())
    assert "Please set `CLASSES` in the Data" in caplog.text


# ---------------------------------------------------------------------------------------------------- DistSamplerSeedHook


class _RecordingSampler(Sampler[int]):
    def __init__(self, n: int) -> None:
        self.n = n
        self.epochs: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def _det_sampler(n: int) -> Sampler[int]:
    from detlight.data.sampler import DetSampler

    class Recording(DetSampler):
        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)
            super().set_epoch(epoch)

    sampler = Recording(n, shuffle=True, seed=0)
    sampler.epochs = []  # type: ignore[attr-defined]
    return sampler


@pytest.mark.parametrize("wrap", ["sampler", "batch_sampler", "det_sampler"])
def test_lightning_calls_set_epoch_like_dist_sampler_seed_hook(tmp_path: Path, wrap: str) -> None:
    data = BoringDataset(3)
    if wrap == "batch_sampler":
        sampler = _RecordingSampler(3)
        dl = DataLoader(data, batch_sampler=BatchSampler(sampler, 1, False), collate_fn=lambda items: items[0])
    else:
        sampler = _det_sampler(3) if wrap == "det_sampler" else _RecordingSampler(3)
        dl = DataLoader(data, batch_size=None, sampler=sampler)
    tr = trainer(tmp_path, [], max_epochs=3, enable_checkpointing=False, use_distributed_sampler=False)
    tr.fit(module(), dl)
    assert sampler.epochs == [0, 1, 2]  # type: ignore[attr-defined]
    assert isinstance(tr.train_dataloader.sampler, type(sampler) if wrap != "batch_sampler" else SequentialSampler)


def test_num_class_check_excludes_subclasses_as_mmdets_isinstance_does() -> None:
    """mmdet skips ``isinstance(module, (RPNHead, VGG, ...))``: SSD's ``SSDVGG(num_classes=-1)`` is a VGG and Cascade
    RPN's ``StageCascadeRPNHead`` an RPNHead, so neither stops training."""

    class VGG(torch.nn.Module):
        num_classes = -1

    class SSDVGG(VGG):
        pass

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = SSDVGG()

    class Data:
        CLASSES = ("a", "b")

    num_class_check.check_num_classes(Net(), Data())  # excluded through its base class
    with pytest.raises(ValueError, match=r"`num_classes` \(-1\) of SSDVGG `backbone`"):
        num_class_check.check_num_classes(Net(), Data(), exclude=("RPNHead",))
