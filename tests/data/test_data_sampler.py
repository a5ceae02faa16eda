from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler

from detlight.data.sampler import DetSampler
from detlight.exceptions import CheckpointError


@pytest.mark.parametrize("n", [1, 7, 10, 13])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize(("shuffle", "drop_last"), [(True, False), (False, False), (True, True)])
def test_matches_torch_distributed_sampler(n: int, world_size: int, shuffle: bool, drop_last: bool) -> None:
    data = list(range(n))
    for epoch in (0, 3):
        for rank in range(world_size):
            ours = DetSampler(n, shuffle=shuffle, seed=11, rank=rank, world_size=world_size, drop_last=drop_last)
            ref = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=11,
                                     drop_last=drop_last)
            ours.set_epoch(epoch)
            ref.set_epoch(epoch)
            assert list(ours) == list(ref) and len(ours) == len(ref)


@pytest.mark.parametrize(("n", "world_size"), [(10, 3), (5, 4), (8, 2), (3, 5)])
def test_ranks_cover_every_index_with_padding(n: int, world_size: int) -> None:
    shards = [list(DetSampler(n, shuffle=True, seed=0, rank=r, world_size=world_size)) for r in range(world_size)]
    merged = [i for shard in shards for i in shard]
    assert set(merged) == set(range(n))
    assert len({len(s) for s in shards}) == 1
    assert len(merged) == -(-n // world_size) * world_size  # padded with duplicates up to a multiple


def test_permutation_is_per_epoch_and_reproducible() -> None:
    a, b = DetSampler(50, seed=3), DetSampler(50, seed=3)
    first = list(a)
    assert first == list(b) == list(a)  # iterating does not advance anything
    assert first == torch.randperm(50, generator=torch.Generator().manual_seed(3)).tolist()
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(50))
    assert list(DetSampler(50, seed=4)) != first
    assert list(DetSampler(50, shuffle=False, seed=3)) == list(range(50))


def test_skip_is_consumed_by_the_next_epoch_only() -> None:
    sampler = DetSampler(20, seed=1, rank=1, world_size=2)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.skip = 4
    assert list(sampler) == full[4:]
    assert sampler.skip == 0 and list(sampler) == full
    assert len(sampler) == 10


def test_state_dict_round_trip_resumes_mid_epoch() -> None:
    src = DetSampler(30, seed=9, rank=0, world_size=2)
    src.set_epoch(5)
    src.skip = 7
    state = src.state_dict()
    assert state == {"epoch": 5, "skip": 7, "seed": 9, "shuffle": True}
    assert all(type(v) in (int, bool) for v in state.values())
    dst = DetSampler(30, seed=9, rank=0, world_size=2)
    dst.load_state_dict(state)
    reference = DetSampler(30, seed=9, rank=0, world_size=2)
    reference.set_epoch(5)
    assert list(dst) == list(reference)[7:]


@pytest.mark.parametrize(("state", "error", "match"), [
    ({"epoch": 1}, CheckpointError, "skip"),
    ({"epoch": 1, "skip": 0, "seed": 2}, ValueError, "seed=2"),
    ({"epoch": 1, "skip": 99}, ValueError, "skip=99"),
])
def test_bad_state_is_refused(state: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        DetSampler(10, seed=0).load_state_dict(state)


@pytest.mark.parametrize(("rank", "world_size"), [(2, 2), (-1, 2), (0, 0)])
def test_bad_rank_raises(rank: int, world_size: int) -> None:
    with pytest.raises(ValueError, match="rank"):
        DetSampler(10, rank=rank, world_size=world_size)
