"""mmdet3d's own PointPillars built by the bridge (``scope='mmdet3d'``) and driven through detlight's model contract.

Run with the OpenMMLab venv: ``.venv-openmmlab/bin/python -m pytest -q -m openmmlab tests/openmmlab``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import detlight.openmmlab

pytestmark = pytest.mark.openmmlab

mmdet3d = pytest.importorskip("mmdet3d")
detlight.openmmlab.install_ops()  # before anything imports mmcv.ops


def test_pointpillars_trains_and_predicts_through_the_detector_module() -> None:
    import mmcv
    import torch
    from mmdet3d.core.bbox import LiDARInstance3DBoxes
    from mmdet3d.models.detectors import VoxelNet

    from detlight.module import DetectorModule
    from detlight.openmmlab import openmmlab_detector
    from detlight.openmmlab.switch import config_scope

    cfg = mmcv.Config.fromfile(str(Path(mmdet3d.__file__).parent / ".mim" / "configs" / "pointpillars" /
                                   "hv_pointpillars_secfpn_6x8_160e_kitti-3d-3class.py"))
    assert config_scope(cfg._cfg_dict.to_dict()) == "mmdet3d"
    model = cfg.model.to_dict()
    pc_range = [0, -5.12, -3, 10.24, 5.12, 1]
    model["voxel_layer"].update(point_cloud_range=pc_range, max_voxels=[2000, 2000])  # YAML gives lists
    model["voxel_encoder"]["point_cloud_range"] = pc_range
    model["middle_encoder"]["output_shape"] = [64, 64]
    for r in model["bbox_head"]["anchor_generator"]["ranges"]:
        r[0], r[1], r[3], r[4] = pc_range[0], pc_range[1], pc_range[3], pc_range[4]
    torch.manual_seed(0)
    detector = openmmlab_detector(model, scope="mmdet3d")
    assert isinstance(detector, VoxelNet)
    assert detector.voxel_layer.max_voxels == (2000, 2000)  # restored as the tuple mmcv's Voxelization expects
    module = DetectorModule(detector, optimizer={"type": "SGD", "lr": 0.001})
    gen = torch.Generator().manual_seed(0)
    n = 3000
    pts = torch.cat((torch.rand(n, 1, generator=gen) * 10.24, torch.rand(n, 1, generator=gen) * 10.24 - 5.12,
                     torch.rand(n, 1, generator=gen) * 3 - 2.5, torch.rand(n, 1, generator=gen)), 1)
    gt = LiDARInstance3DBoxes(torch.tensor([[6.0, 1.0, -1.6, 3.9, 1.6, 1.56, 0.3],
                                            [3.0, -2.0, -1.5, 0.8, 0.6, 1.73, 1.2]]))
    batch = {"points": [pts], "img_metas": [{"box_type_3d": LiDARInstance3DBoxes, "detlight_idx": 7}],
             "gt_bboxes_3d": [gt], "gt_labels_3d": [torch.tensor([2, 0])]}
    module.train()
    out = module.training_step(batch, 0)
    assert {"loss_cls", "loss_bbox", "loss_dir", "loss"} <= set(out["log_vars"])
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in detector.parameters())
    module.eval()
    with torch.no_grad():
        preds = module.adapter.predict({"points": [pts], "img_metas": batch["img_metas"]})
    assert len(preds) == 1 and preds[0]["sample_idx"] == 7
    assert {"boxes_3d", "scores_3d", "labels_3d"} <= set(preds[0]["result"])
    assert preds[0]["boxes_3d"] is preds[0]["result"]["boxes_3d"]
