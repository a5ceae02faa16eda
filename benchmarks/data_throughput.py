"""Images per second delivered by :class:`~detlight.data.datamodule.DetDataModule` against the training step rate.

The train loader of the synthetic set (the quickstart pipeline: load PNG, resize, flip, normalise, pad, collate) is
drained for ``--epochs`` epochs with 0 and 2 workers; the first batch of each run (worker start-up) is reported on its
own. The training rate is that of the quickstart CenterNet at the same batch size (forward, backward, AdamW step; the
mean of ``--train-steps`` steps after two warm-up steps) with ``--train-threads`` threads, so the last column says
whether the loader can keep the model fed (> 1) or not.

Usage::

    python benchmarks/data_throughput.py --workers 0,2 --batch-size 16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import machine_info, markdown_table, median  # noqa: E402


def loader_rate(workers: int, batch_size: int, epochs: int, num_train: int | None = None) -> dict[str, float]:
    """Drain the train loader; returns the first-batch latency (s) and the steady images/s after it."""
    from detlight.data.datamodule import DetDataModule
    from detlight.data.synthetic import SyntheticCocoSpec

    synthetic = SyntheticCocoSpec(num_train=num_train) if num_train else SyntheticCocoSpec()
    datamodule = DetDataModule(synthetic=synthetic, samples_per_gpu=batch_size, workers_per_gpu=workers,
                               persistent_workers=workers > 0, seed=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    first, images, busy = float("nan"), 0, 0.0
    for epoch in range(epochs):
        if datamodule.train_sampler is not None:
            datamodule.train_sampler.set_epoch(epoch)
        start = time.perf_counter()
        for i, batch in enumerate(loader):
            now = time.perf_counter()
            if epoch == 0 and i == 0:
                first = now - start
            else:
                images += len(batch["img_metas"])
                busy += now - start
            start = time.perf_counter()
    return {"first_batch_s": first, "images_per_s": images / busy if busy else float("nan")}


def training_rate(batch_size: int, steps: int, threads: int, num_train: int | None = None) -> float:
    """Images/s of the quickstart CenterNet training step on batches from the synthetic set."""
    from detlight.data.datamodule import DetDataModule
    from detlight.data.synthetic import SyntheticCocoSpec
    from detlight.models.centernet import CenterNet
    from detlight.models.contract import parse_losses

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        synthetic = SyntheticCocoSpec(num_train=num_train) if num_train else SyntheticCocoSpec()
        datamodule = DetDataModule(synthetic=synthetic, samples_per_gpu=batch_size, workers_per_gpu=0, seed=0)
        datamodule.setup("fit")
        batch: dict[str, Any] = next(iter(datamodule.train_dataloader()))
        torch.manual_seed(0)
        model = CenterNet(num_classes=datamodule.num_classes)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
        times = []
        for _ in range(steps + 2):
            start = time.perf_counter()
            loss, _ = parse_losses(model.forward_train(**batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        return batch_size / median(times[2:])
    finally:
        torch.set_num_threads(previous)


def main(argv: Sequence[str] | None = None) -> str:
    """Run the measurement and print (and return) the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--num-train", type=int, default=None, help="images in the synthetic train split (600)")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--train-threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    train_ips = training_rate(args.batch_size, args.train_steps, args.train_threads, args.num_train)
    rows = [["training step (CenterNet, AdamW)", "-", f"{train_ips:.0f}", "1.00"]]
    for workers in (int(w) for w in args.workers.split(",")):
        # Workers always run with one intra-op thread (DataLoader sets it); without workers the pipeline runs in
        # the main process with its thread count, and on a busy host small-tensor ops slow down with more threads.
        for threads in sorted({torch.get_num_threads(), 1}, reverse=True) if workers == 0 else [1]:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                result = loader_rate(workers, args.batch_size, args.epochs, args.num_train)
            finally:
                torch.set_num_threads(previous)
            label = f"DetDataModule, {workers} worker(s)" + (f", main process {threads} thread(s)" if not workers else "")
            rows.append([label, f"{result['first_batch_s']:.2f}", f"{result['images_per_s']:.0f}",
                         f"{result['images_per_s'] / train_ips:.2f}"])
    report = (f"data throughput: synthetic set, batch {args.batch_size}, {args.epochs} epoch(s); training step with "
              f"{args.train_threads} thread(s)\nmachine: {machine_info()}\n\n"
              + markdown_table(["source", "first batch s", "images/s", "ratio to training rate"], rows))
    print(report, flush=True)
    return report


if __name__ == "__main__":
    main()
