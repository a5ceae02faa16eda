"""COCO box mAP compute time of :class:`~detlight.metrics.coco.CocoMeanAP`: faster-coco-eval versus pycocotools.

Both backends get the same synthetic predictions (jittered copies of the ground truth with a few wrong labels, plus
false positives; 4 classes, 128x128 images) for 500 and 5 000 images; ``update`` (storing a batch, as in a validation
loop) and ``compute`` (COCO evaluation) are timed separately, interleaved over ``--repeats`` rounds, and the results
of the two backends are compared key by key.

Usage::

    python benchmarks/eval_map.py --images 500,5000 --repeats 3
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
from _bench import machine_info, markdown_table, spread  # noqa: E402

BACKENDS = ("faster_coco_eval", "pycocotools")
NUM_CLASSES = 4
IMAGE_SIZE = 128.0


def synthetic_batches(num_images: int, batch_size: int = 16, seed: int = 0) -> list[tuple[list[dict[str, Any]],
                                                                                             dict[str, Any]]]:
    """``(predictions, batch)`` pairs in the layout ``CocoMeanAP.update`` takes, deterministic for ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, num_images, batch_size):
        preds, metas, gt_boxes, gt_labels = [], [], [], []
        for image_id in range(start, min(start + batch_size, num_images)):
            n = int(torch.randint(1, 9, (), generator=gen))
            xy = torch.rand(n, 2, generator=gen) * (IMAGE_SIZE - 40)
            wh = 8 + torch.rand(n, 2, generator=gen) * 32
            boxes = torch.cat([xy, xy + wh], 1)
            labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
            det = boxes + torch.randn(n, 4, generator=gen) * 2.5
            det_labels = torch.where(torch.rand(n, generator=gen) < 0.1, (labels + 1) % NUM_CLASSES, labels)
            fp_xy = torch.rand(5, 2, generator=gen) * (IMAGE_SIZE - 20)
            fp = torch.cat([fp_xy, fp_xy + 4 + torch.rand(5, 2, generator=gen) * 16], 1)
            preds.append({
                "boxes": torch.cat([det, fp]).clamp(0, IMAGE_SIZE),
                "scores": torch.cat([0.5 + 0.5 * torch.rand(n, generator=gen), 0.6 * torch.rand(5, generator=gen)]),
                "labels": torch.cat([det_labels, torch.randint(0, NUM_CLASSES, (5,), generator=gen)]),
            })
            metas.append({"image_id": image_id, "scale_factor": [1.0, 1.0, 1.0, 1.0], "flip": False,
                          "ori_shape": (128, 128, 3)})
            gt_boxes.append(boxes)
            gt_labels.append(labels)
        out.append((preds, {"img_metas": metas, "gt_bboxes": gt_boxes, "gt_labels": gt_labels}))
    return out


def time_backend(backend: str, batches: Sequence[tuple[list[dict[str, Any]], dict[str, Any]]]) -> dict[str, Any]:
    """Update and compute times (s) of one evaluation, and its results as floats."""
    from detlight.metrics.coco import CocoMeanAP

    metric = CocoMeanAP(backend=backend)
    start = time.perf_counter()
    for preds, batch in batches:
        metric.update(preds, batch)
    middle = time.perf_counter()
    results = metric.compute()
    end = time.perf_counter()
    return {"update_s": middle - start, "compute_s": end - middle,
            "results": {k: float(v) for k, v in results.items()}}


def run(image_counts: Sequence[int], repeats: int) -> list[list[Any]]:
    """Table rows: images, backend, update s, compute s, bbox_mAP, bbox_mAP_50, largest gap to the other backend."""
    rows = []
    for num_images in image_counts:
        batches = synthetic_batches(num_images)
        runs: dict[str, list[dict[str, Any]]] = {b: [] for b in BACKENDS}
        for r in range(repeats):
            for backend in (BACKENDS if r % 2 == 0 else BACKENDS[::-1]):
                runs[backend].append(time_backend(backend, batches))
        reference = runs[BACKENDS[0]][0]["results"]
        for backend in BACKENDS:
            results = runs[backend][0]["results"]
            gap = max(abs(results[k] - reference[k]) for k in reference)
            same = all(r["results"] == results for r in runs[backend])
            rows.append([num_images, backend, spread([r["update_s"] for r in runs[backend]], "{:.2f}"),
                         spread([r["compute_s"] for r in runs[backend]], "{:.2f}"), f"{results['bbox_mAP']:.4f}",
                         f"{results['bbox_mAP_50']:.4f}", f"{gap:.1e}" + ("" if same else " (varies between runs)")])
    return rows


def main(argv: Sequence[str] | None = None) -> str:
    """Run the comparison and print (and return) the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="500,5000", help="comma-separated image counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    counts = [int(x) for x in args.images.split(",")]
    rows = run(counts, args.repeats)
    speedups = []
    for i in range(0, len(rows), len(BACKENDS)):
        fast, slow = (float(rows[i + j][3].split()[0]) for j in range(2))
        speedups.append(f"{rows[i][0]} images: pycocotools / faster-coco-eval compute time = {slow / fast:.1f}x")
    report = (f"COCO bbox mAP: CocoMeanAP update + compute, {args.repeats} interleaved rounds, {args.threads} thread(s)"
              f"\nmachine: {machine_info()}\n\n"
              + markdown_table(["images", "backend", "update s", "compute s, median [min-max]", "bbox_mAP",
                                "bbox_mAP_50", "max abs diff vs faster_coco_eval"], rows)
              + "\n\n" + "\n".join(speedups))
    print(report, flush=True)
    return report


if __name__ == "__main__":
    main()
