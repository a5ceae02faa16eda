"""DatasetEvaluator under a real 2-process gloo group: results gathered, the sampler's padding dropped, dataset order
restored, the dataset's ``evaluate`` run once (rank 0) and its numbers shared. No mmdet needed (a stand-in dataset)."""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from detlight.data.sampler import DetSampler
from detlight.openmmlab.evaluator import DatasetEvaluator

NUM_SAMPLES = 5  # odd: the sampler pads rank 1 with sample 0 again


class _Dataset:
    """Stands in for an mmdet dataset: ``evaluate`` sees the results in dataset order, as mmdet's does."""

    def __init__(self) -> None:
        self.calls = 0

    def __len__(self) -> int:
        return NUM_SAMPLES

    def evaluate(self, results: list[Any], metric: str = "bbox", logger: Any = None) -> dict[str, Any]:
        self.calls += 1
        first = [float(r[0][0, 0]) for r in results]
        return {"in_order": float(first == list(range(NUM_SAMPLES))), "score": float(np.mean(first)),
                "evaluated_on_this_rank": float(self.calls), "copypaste": f"{len(results)} results"}


def _result(i: int, padded: bool = False) -> list[np.ndarray]:
    value = -1.0 if padded else float(i)
    return [np.full((1, 5), value, dtype=np.float32)]


def _worker(rank: int, port: int, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    evaluator = DatasetEvaluator(metric="bbox")
    evaluator.bind_dataset(_Dataset())
    for position, i in enumerate(DetSampler(NUM_SAMPLES, shuffle=False, rank=rank, world_size=2)):
        padded = rank == 1 and position == NUM_SAMPLES // 2  # the duplicate of sample 0 at the end of rank 1
        evaluator.update([{"result": _result(i, padded), "sample_idx": i}])
    queue.put((rank, {k: float(v) for k, v in evaluator.compute().items()}))
    dist.destroy_process_group()


@pytest.mark.ddp
def test_two_ranks_evaluate_like_one_process() -> None:
    single = DatasetEvaluator(metric="bbox")
    single.bind_dataset(_Dataset())
    for i in range(NUM_SAMPLES):
        single.update([{"result": _result(i), "sample_idx": i}])
    expected = {k: float(v) for k, v in single.compute().items()}
    assert expected == {"in_order": 1.0, "score": 2.0, "evaluated_on_this_rank": 1.0}  # the string is only logged
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert results[0] == expected and results[1] == expected  # both ranks hold the single-process numbers
