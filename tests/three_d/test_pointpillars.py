"""PointPillars: pillar scatter, targets, losses, inference contract and a tiny overfit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detlight.data.synthetic_lidar import SyntheticLidarSpec, make_scene
from detlight.metrics.center_distance import CenterDistanceMAP
from detlight.models.box3d import flip_horizontal
from detlight.models.pointpillars import PillarFeatureNet, PointPillars

SMALL_RANGE = [0.0, -10.24, -3.0, 20.48, 10.24, 1.0]
SMALL = dict(point_cloud_range=SMALL_RANGE, voxel_size=[0.32, 0.32, 4.0], pillar_channels=16,
             backbone_channels=[16, 32], backbone_layers=[1, 1], neck_channels=[32, 32], head_channels=32,
             norm_momentum=0.1)


def _scene(index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    spec = SyntheticLidarSpec(num_train=4, num_val=0, seed=11, spawn_x=(4.0, 18.0), spawn_half_width=8.0,
                              objects_per_scene=(3, 5), clutter_per_scene=(0, 0), max_range=25.0)
    pts, boxes, names = make_scene(spec, index)
    keep = (pts[:, 0] < 20.48) & (np.abs(pts[:, 1]) < 10.24) & (pts[:, 2] > -3) & (pts[:, 2] < 1)
    labels = torch.tensor([("Pedestrian", "Cyclist", "Car").index(n) for n in names])
    return torch.from_numpy(pts[keep]), torch.from_numpy(boxes), labels


def _meta(i: int, **kw: object) -> dict:
    return {"sample_idx": i, "pcd_horizontal_flip": False, "pcd_rotation": 0.0, "pcd_scale_factor": 1.0, **kw}


def test_pillar_scatter_places_points_and_ignores_out_of_range() -> None:
    torch.manual_seed(0)
    pfn = PillarFeatureNet(SMALL_RANGE, [0.32, 0.32], feat_channels=8).eval()
    inside = torch.tensor([[1.0, -10.0, -1.0, 0.5], [1.1, -9.95, -0.5, 0.2]])  # pillar col 3, row 0
    canvas = pfn([inside])
    assert canvas.shape == (1, 8, 64, 64)
    nonzero = canvas.abs().sum(1)[0].nonzero().tolist()
    assert nonzero == [[0, 3]]
    far = torch.tensor([[30.0, 0.0, -1.0, 0.9], [5.0, 0.0, 2.0, 0.9], [-0.1, 0.0, -1.0, 0.9]])
    torch.testing.assert_close(pfn([torch.cat([inside, far])]), canvas)


def test_targets_peak_at_gt_cells() -> None:
    model = PointPillars(num_classes=3, **SMALL)
    boxes = [torch.tensor([[5.0, 0.0, -1.7, 3.9, 1.6, 1.5, 0.3], [30.0, 0.0, -1.7, 3.9, 1.6, 1.5, 0.3]]),
             torch.tensor([[10.0, -5.0, -1.7, 0.8, 0.6, 1.7, 0.0]])]
    labels = [torch.tensor([2, 2]), torch.tensor([0])]
    heat, flat, targets, valid = model.get_targets(boxes, labels, (32, 32))
    assert heat.shape == (2, 3, 32, 32) and valid.tolist() == [True, False, True]
    # 0.64 m cells: (5, 0) -> col 7, row 16; (10, -5) -> col 15, row 8
    assert (heat == 1).nonzero().tolist() == [[0, 2, 16, 7], [1, 0, 8, 15]]
    assert heat[0, :2].abs().sum() == 0 and heat[1, 1:].abs().sum() == 0
    assert flat[0].item() == 16 * 32 + 7 and flat[2].item() == 32 * 32 + 8 * 32 + 15
    assert 0 < heat[0, 2, 16, 9].item() < 1  # gaussian falls off around the peak


def test_forward_train_losses_and_gradients() -> None:
    torch.manual_seed(0)
    model = PointPillars(num_classes=3, **SMALL)
    pts, boxes, labels = _scene(0)
    losses = model.forward_train([pts, pts[:100]], [_meta(0), _meta(1)], [boxes, torch.zeros(0, 7)],
                                 [labels, torch.zeros(0, dtype=torch.long)])
    assert set(losses) == {"loss_heatmap", "loss_bbox"}
    assert all(v.ndim == 0 and torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_forward_train_without_any_box_keeps_graph() -> None:
    model = PointPillars(num_classes=3, **SMALL)
    pts, _, _ = _scene(1)
    losses = model.forward_train([pts], [_meta(0)], [torch.zeros(0, 7)], [torch.zeros(0, dtype=torch.long)])
    assert losses["loss_bbox"].item() == 0.0
    sum(losses.values()).backward()
    assert model.head.reg[-1].weight.grad is not None


def test_simple_test_contract_and_rescale() -> None:
    torch.manual_seed(0)
    model = PointPillars(num_classes=3, score_thr=0.0, max_num=7, **SMALL).eval()
    pts, _, _ = _scene(2)
    flipped, _ = flip_horizontal(pts, torch.zeros(0, 7))
    plain, from_flipped = model.simple_test([pts, flipped], [_meta(0), _meta(0, pcd_horizontal_flip=True)])
    assert plain["boxes_3d"].dtype == torch.float32 and plain["boxes_3d"].shape == (7, 7)
    assert plain["scores_3d"].dtype == torch.float32 and plain["labels_3d"].dtype == torch.int64
    assert (plain["labels_3d"] < 3).all() and (plain["scores_3d"][:-1] >= plain["scores_3d"][1:]).all()
    # boxes found on the flipped cloud come back flipped: y and yaw change sign relative to a non-rescaled run
    raw = model.simple_test([flipped], [_meta(0, pcd_horizontal_flip=True)], rescale=False)[0]
    torch.testing.assert_close(from_flipped["boxes_3d"][:, 1], -raw["boxes_3d"][:, 1])
    torch.testing.assert_close(from_flipped["boxes_3d"][:, 6], -raw["boxes_3d"][:, 6])


def test_constructor_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="code_weights"):
        PointPillars(code_weights=[1.0] * 7)
    with pytest.raises(ValueError, match="integer"):
        PointPillars(backbone_strides=[2, 2], neck_strides=[4, 2])


@pytest.mark.slow
def test_tiny_overfit_reaches_high_map() -> None:
    torch.manual_seed(0)
    model = PointPillars(num_classes=3, **SMALL)
    scenes = [_scene(i) for i in range(2)]
    batch = {"points": [s[0] for s in scenes], "img_metas": [_meta(i) for i in range(2)],
             "gt_bboxes_3d": [s[1] for s in scenes], "gt_labels_3d": [s[2] for s in scenes]}
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(40):
        loss = sum(model.forward_train(**batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    metric = CenterDistanceMAP(("Pedestrian", "Cyclist", "Car"))
    metric.update(model.simple_test(batch["points"], batch["img_metas"]), batch)
    present = {int(c) for s in scenes for c in s[2]}
    result = metric.compute()
    per_class = [result[f"mAP_{('Pedestrian', 'Cyclist', 'Car')[c]}"].item() for c in present]
    assert np.mean(per_class) > 0.5, result
