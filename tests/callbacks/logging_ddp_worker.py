"""Worker for the 2-process gloo test of the log reduction; kept free of heavy imports so that spawn starts fast."""

from __future__ import annotations

import json
import warnings
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from detlight.callbacks._reduce import reduce_averages
from detlight.logbuffer import LogBuffer


def reduce_worker(rank: int, port: int, out_dir: str) -> None:
    """Rank 1 logs an extra key; every rank writes its reduced averages and warnings to ``rank<r>.json``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=30))
    buffer = LogBuffer()
    if rank == 0:  # tensors on rank 0, python floats on rank 1: both kinds are reduced
        buffer.update({"loss_cls": torch.tensor(1.0), "loss": torch.tensor(2.0)}, 2)
        buffer.update({"loss_cls": torch.tensor(3.0), "loss": torch.tensor(4.0)}, 2)
    else:
        buffer.update({"loss_cls": 5.0, "loss_extra": 7.0, "loss": 6.0}, 4)
        buffer.update({"loss_cls": 9.0, "loss": 10.0}, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        all_entries = reduce_averages(buffer, 0)
        last_one = reduce_averages(buffer, 1)
    result = {"all": list(all_entries.items()), "last": list(last_one.items()),
              "warnings": [str(w.message) for w in caught]}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()
