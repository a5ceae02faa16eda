"""CenterDistanceMAP under a real 2-process gloo group with DetSampler padding."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detlight.data.sampler import DetSampler
from detlight.metrics.center_distance import CenterDistanceMAP

NUM_SAMPLES = 5  # odd: the sampler pads rank 1 with sample 0 again


def _sample(i: int) -> tuple[dict, dict]:
    gt = torch.tensor([[10.0 + i, float(i), 0, 1, 1, 1, 0], [20.0, -float(i), 0, 1, 1, 1, 0]])
    # sample i finds its first box exactly and misses the second by 1.5 m (a hit only at the 2 m and 4 m thresholds)
    pred_boxes = gt.clone()
    pred_boxes[1, 0] += 1.5
    pred = {"boxes_3d": pred_boxes, "scores_3d": torch.tensor([0.9, 0.5 + 0.01 * i]),
            "labels_3d": torch.tensor([0, 0])}
    return pred, {"gt_bboxes_3d": [gt], "gt_labels_3d": [torch.tensor([0, 0])], "img_metas": [{"sample_idx": i}]}


def _worker(rank: int, port: int, queue: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    metric = CenterDistanceMAP(["Car"])
    for i in DetSampler(NUM_SAMPLES, shuffle=False, rank=rank, world_size=2):
        pred, batch = _sample(i)
        if rank == 1 and i == 0:
            pred = {k: v[:0] for k, v in pred.items()}  # a different result for the padded duplicate
        metric.update([pred], batch)
    queue.put((rank, {k: float(v) for k, v in metric.compute().items()}))
    dist.destroy_process_group()


@pytest.mark.ddp
def test_ddp_matches_single_process() -> None:
    single = CenterDistanceMAP(["Car"])
    for i in range(NUM_SAMPLES):
        pred, batch = _sample(i)
        single.update([pred], batch)
    expected = {k: float(v) for k, v in single.compute().items()}
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
    assert results[0] == pytest.approx(expected) and results[1] == pytest.approx(expected)
    assert 0.4 < expected["mAP"] < 1.0  # the duplicate with no predictions would have lowered it
