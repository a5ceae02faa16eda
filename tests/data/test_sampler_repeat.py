"""``DetSampler(repeat=N)``: mmdet's ``RepeatDataset(times=N)`` under its ``DistributedSampler``, as a sampler factor."""

from __future__ import annotations

import math

import pytest
import torch

from detlight.data.sampler import DetSampler


def mmdet_repeat_indices(n: int, times: int, seed: int, epoch: int, rank: int, world: int) -> list[int]:
    """mmdet 2.x ``DistributedSampler.__iter__`` over ``RepeatDataset(dataset, times)``, then ``idx % len(dataset)``."""
    length = n * times  # RepeatDataset.__len__
    g = torch.Generator()
    g.manual_seed(epoch + seed)
    indices = torch.randperm(length, generator=g).tolist()
    total = math.ceil(length / world) * world
    indices = (indices * math.ceil(total / len(indices)))[:total]
    return [i % n for i in indices[rank:total:world]]  # RepeatDataset.__getitem__: dataset[idx % ori_len]


@pytest.mark.parametrize(("n", "times", "world"), [(7, 3, 1), (7, 3, 2), (10, 2, 4), (5, 16, 3)])
def test_same_images_in_the_same_order_as_mmdet(n: int, times: int, world: int) -> None:
    for epoch in (0, 3):
        for rank in range(world):
            sampler = DetSampler(n, shuffle=True, seed=11, rank=rank, world_size=world, repeat=times)
            sampler.set_epoch(epoch)
            assert list(sampler) == mmdet_repeat_indices(n, times, 11, epoch, rank, world)
            assert len(sampler) == math.ceil(n * times / world)  # iterations per epoch = mmdet's


def test_each_image_appears_times_per_epoch_without_shuffle() -> None:
    assert list(DetSampler(4, shuffle=False, repeat=3)) == [0, 1, 2, 3] * 3


def test_repeat_must_be_a_positive_int() -> None:
    with pytest.raises(ValueError, match="repeat"):
        DetSampler(4, repeat=0)
    with pytest.raises(ValueError, match="repeat"):
        DetSampler(4, repeat=1.5)  # type: ignore[arg-type]


def test_datamodule_passes_repeat_times_to_the_train_sampler(tmp_path) -> None:
    from detlight.data.datamodule import DetDataModule
    from detlight.data.synthetic import SyntheticCocoSpec

    dm = DetDataModule(synthetic=SyntheticCocoSpec(root=str(tmp_path), num_train=4, num_val=2), samples_per_gpu=2,
                       workers_per_gpu=0, repeat_times=3)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 6  # 4 images x 3 passes / batch 2
    assert dm.train_sampler is not None and dm.train_sampler.repeat == 3
    assert len(dm.val_dataloader()) == 2  # validation is not repeated
