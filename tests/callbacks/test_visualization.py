"""DetVisualization: validation images with boxes go to TensorBoard; the drawing helpers are exact."""

from __future__ import annotations

import det_tiny
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from detlight.callbacks.visualization import (
    GT_COLOUR,
    DetVisualization,
    denormalize,
    draw_detections,
    render_batch,
    slice_batch,
)
from detlight.data.transforms import Normalize
from detlight.testing import BoringDataset


def test_denormalize_inverts_the_pipeline_and_crops_padding():
    original = torch.randint(0, 256, (3, 6, 5), dtype=torch.uint8)
    norm = Normalize(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), to_rgb=False)
    results = norm({"img": original.clone(), "img_fields": ["img"]})
    img = results["img"]
    padded = torch.nn.functional.pad(img, (0, 3, 0, 2))
    meta = {"img_shape": (6, 5, 3), "img_norm_cfg": results["img_norm_cfg"]}
    out = denormalize(padded, meta)
    assert out.dtype == torch.uint8 and out.shape == (3, 6, 5)
    # to_rgb=False kept BGR order, so the display image is the channel-flipped input
    assert (out.int() - original.flip(0).int()).abs().max() <= 1


def test_draw_detections_filters_by_score_and_draws_gt_in_green():
    image = torch.zeros(3, 20, 20, dtype=torch.uint8)
    det = {"boxes": torch.tensor([[2.0, 2.0, 12.0, 12.0]]), "scores": torch.tensor([0.2]),
           "labels": torch.tensor([1])}
    assert torch.equal(draw_detections(image, ["a", "b"], det=det, score_thr=0.3), image)
    drawn = draw_detections(image, ["a", "b"], det=det, score_thr=0.1)
    assert not torch.equal(drawn, image)
    gt = draw_detections(image, ["a", "b"], gt_boxes=torch.tensor([[1.0, 15.0, 18.0, 19.0]]),
                         gt_labels=torch.tensor([0]))
    assert tuple(gt[:, 19, 10].tolist()) == GT_COLOUR  # bottom edge of the ground-truth box
    assert draw_detections(image, ["a"], det=det, score_thr=0.1, upscale=3).shape == (3, 60, 60)


def test_render_batch_restores_train_mode_and_slices():
    module = det_tiny.module()
    batch = BoringDataset(num_batches=1, batch_size=3)[0]
    assert len(slice_batch(batch, 2)["img_metas"]) == 2
    module.train()
    images = render_batch(module, batch, ["a", "b"], num_images=2, score_thr=0.0, upscale=4)
    assert module.training
    assert [tuple(i.shape) for i in images] == [(3, 16, 16)] * 2


@pytest.mark.parametrize("num_images", [1, 3])
def test_callback_logs_images_at_each_evaluation(tmp_path, num_images):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    vis = DetVisualization(num_images=num_images, score_thr=0.0, upscale=4)
    logger = TensorBoardLogger(str(tmp_path), name="vis")
    trainer = det_tiny.trainer(tmp_path, [vis], max_epochs=2, logger=logger, num_sanity_val_steps=1)
    trainer.fit(det_tiny.module(), det_tiny.loader(4), det_tiny.loader(2, batch_size=2))
    assert len(vis.images) == num_images and vis.images[0].shape == (3, 16, 16)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    tags = sorted(events.Tags()["images"])
    assert tags == [f"val_images/{n}" for n in range(num_images)]
    # one image per evaluation (two epochs), none from the sanity check
    assert [e.step for e in events.Images("val_images/0")] == [4, 8]


def test_callback_without_tensorboard_keeps_images(tmp_path):
    vis = DetVisualization(num_images=2, score_thr=0.0)
    trainer = det_tiny.trainer(tmp_path, [vis], max_epochs=1)
    trainer.validate(det_tiny.module(), det_tiny.loader(2), verbose=False)
    assert len(vis.images) == 2


@pytest.mark.parametrize(("kwargs", "match"), [({"num_images": 0}, "num_images"), ({"upscale": 1.5}, "upscale"),
                                               ({"score_thr": 2.0}, "score_thr")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DetVisualization(**kwargs)
