"""Round trip: a detlight-trained checkpoint exported to ``.pth`` gives mmdet's ``inference_detector`` the same
boxes as ``detlight predict`` (needs the OpenMMLab venv).

Run: ``.venv-openmmlab/bin/python -m pytest -q -m openmmlab tests/openmmlab/test_bridge_roundtrip.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import detlight.openmmlab

pytestmark = [pytest.mark.openmmlab, pytest.mark.timeout(1200)]  # builds mmdet models: slow on a loaded host

mmdet = pytest.importorskip("mmdet")
detlight.openmmlab.install_ops()  # before anything imports mmcv.ops


def _by_image(results: list[list[dict]]) -> dict[str, np.ndarray]:
    """``detlight predict`` results -> {image file name: (N, 5) boxes + score, in mmdet's per-class order}."""
    out = {}
    for batch in results:
        for det in batch:
            bbox = det["result"]  # mmdet's own per-class list of (n, 5) arrays
            name = Path(det["img_meta"]["filename"]).name
            out[name] = np.concatenate([np.asarray(b, dtype=np.float64) for b in bbox], axis=0)
    return out


def max_roundtrip_diff(tmp: Path) -> tuple[float, int]:
    """Train the tiny RetinaNet 2 iterations, predict with detlight, export, infer with mmdet: (max |diff|, boxes)."""
    from mmdet.apis import inference_detector, init_detector

    from detlight.api import fit, predict
    from detlight.openmmlab import export_pth
    from detlight.openmmlab.samples import write_config

    config = write_config(tmp / "retina_tiny.py", "retinanet", root=tmp / "data", num_train=4, num_val=2,
                          image_size=64, samples_per_gpu=2, val_samples_per_gpu=2)
    work = tmp / "work"
    trainer, _ = fit(str(config), overrides={"trainer.default_root_dir": str(work), "trainer.max_steps": 2,
                                             "trainer.limit_val_batches": 0, "trainer.enable_progress_bar": False})
    ckpt = next(work.rglob("epoch_1.ckpt"))
    run = predict(str(config), overrides={"trainer.default_root_dir": str(tmp / "pred"),
                                          "trainer.enable_progress_bar": False}, ckpt_path=str(ckpt))
    ours = _by_image(run.results)
    pth = export_pth(str(ckpt), str(tmp / "exported.pth"), classes=trainer.datamodule.CLASSES)
    detector = init_detector(str(config), pth, device="cpu")
    images = sorted((tmp / "data").rglob("val/*.png"))
    assert images and {p.name for p in images} == set(ours)
    diff, count = 0.0, 0
    for image in images:
        theirs = np.concatenate(inference_detector(detector, str(image)), axis=0).astype(np.float64)
        mine = ours[image.name]
        assert theirs.shape == mine.shape, image.name
        if len(mine):
            diff = max(diff, float(np.abs(theirs - mine).max()))
        count += len(mine)
    return diff, count


def test_exported_checkpoint_gives_init_detector_the_boxes_of_detlight_predict(tmp_path: Path) -> None:
    diff, count = max_roundtrip_diff(tmp_path)
    print(f"round trip: max abs diff {diff:.3g} over {count} boxes")
    assert count > 0  # score_thr=0.0 in the tiny config: every image keeps max_per_img boxes
    assert diff <= 1e-4, diff
