"""Worker for the 2-process gloo test of ``allreduce_buffers`` (kept apart so spawned children import little)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def allreduce_worker(rank: int, port: int, out: str) -> None:
    """Rank ``r`` fills BN running_mean with ``2r`` and num_batches_tracked with ``r + 5``, then all-reduces."""
    from detlight.callbacks.sync_buffers import allreduce_buffers

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        bn = torch.nn.BatchNorm1d(2)
        bn.running_mean.fill_(float(rank) * 2)
        bn.num_batches_tracked.fill_(rank + 5)
        allreduce_buffers(bn.buffers())
        torch.save({k: v.clone() for k, v in bn.state_dict().items()}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()
