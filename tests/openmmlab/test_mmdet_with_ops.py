"""mmdet / mmdet3d on detlight's ``mmcv._ext``: imports, the ops table vs the registry and the docs, two detectors.

RetinaNet and Faster R-CNN are built from mmdet's own shipped configs (shrunk: ResNet-18, narrow FPN and heads, no
pretrained ``init_cfg``), then run one CPU train step with backward and a ``simple_test`` through the served ops
(NMS in the RPN and in test post-processing, RoIAlign forward/backward in Faster R-CNN's RoI head).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.openmmlab

DOC = Path(__file__).resolve().parents[2] / "docs/openmmlab-ops.md"


@pytest.fixture(scope="module")
def served() -> None:
    pytest.importorskip("mmcv")
    import detlight.openmmlab

    assert detlight.openmmlab.install_ops()


def test_mmdet_and_mmdet3d_models_import(served: None) -> None:
    for name in ("mmcv.ops", "mmdet.models", "mmdet3d.models"):
        assert importlib.import_module(name) is not None
    import mmcv._ext as ext

    assert getattr(ext, "__detlight_ops__", False)


def test_ops_table_matches_registry_and_docs(served: None) -> None:
    from detlight.openmmlab import provided_ops
    from detlight.openmmlab.ops_table import find_mmcv_ops_dir, ops_table, render_markdown, requested_ext_names

    rows = ops_table()
    registry = provided_ops()
    requested = requested_ext_names(find_mmcv_ops_dir())
    assert len(rows) == len(requested) >= 100  # mmcv 1.7.x requests 107 names
    for row in rows:
        op = registry.get(row.name)
        assert row.provided == (op is not None)
        if op is not None:
            assert (row.family, row.how) == (op.family, op.how)
    assert {r.name for r in rows if r.provided} == set(registry) & set(requested)
    for name in ("nms", "softnms", "nms_match", "bbox_overlaps", "roi_align_forward", "roi_pool_backward",
                 "sigmoid_focal_loss_forward", "deform_conv_backward_input", "modulated_deform_conv_backward",
                 "masked_im2col_forward", "carafe_backward", "ms_deform_attn_forward"):
        assert name in registry
    # the doc carries the generated table verbatim: regenerate with `python -m detlight.openmmlab.ops_table --markdown`
    assert render_markdown(rows) in DOC.read_text(encoding="utf-8"), \
        f"{DOC} is out of date: paste the output of `python -m detlight.openmmlab.ops_table --markdown`"


def _small(cfg: Any) -> Any:
    model = cfg.model
    model.backbone.update(depth=18, init_cfg=None, norm_eval=False)
    model.neck.update(in_channels=[64, 128, 256, 512], out_channels=32)
    return model


def _build(config: str, shrink: Any) -> torch.nn.Module:
    import mmcv
    import mmdet
    from mmdet.models import build_detector

    cfg = mmcv.Config.fromfile(str(Path(mmdet.__file__).parent / ".mim" / "configs" / config))
    model = _small(cfg)
    shrink(model)
    torch.manual_seed(0)
    det = build_detector(model)
    det.init_weights()
    return det


def _retina(model: Any) -> None:
    model.bbox_head.update(in_channels=32, feat_channels=32, stacked_convs=1, num_classes=3)


def _faster(model: Any) -> None:
    model.rpn_head.update(in_channels=32, feat_channels=32)
    model.roi_head.bbox_roi_extractor.update(out_channels=32)
    model.roi_head.bbox_head.update(in_channels=32, fc_out_channels=64, num_classes=3)
    model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
    model.train_cfg.rcnn.sampler.update(num=64)
    model.test_cfg.rpn.update(nms_pre=200, max_per_img=100)


def _batch() -> tuple[torch.Tensor, list[dict[str, Any]], list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 128, 160, generator=g)
    metas = [dict(img_shape=(128, 160, 3), ori_shape=(128, 160, 3), pad_shape=(128, 160, 3),
                  scale_factor=torch.ones(4).numpy(), flip=False, batch_input_shape=(128, 160))
             for _ in range(2)]
    boxes = [torch.tensor([[10.0, 12.0, 70.0, 90.0], [80.0, 20.0, 150.0, 60.0]]),
             torch.tensor([[30.0, 30.0, 100.0, 120.0]])]
    labels = [torch.tensor([0, 2]), torch.tensor([1])]
    return img, metas, boxes, labels


@pytest.mark.parametrize("config,shrink", [("retinanet/retinanet_r50_fpn_1x_coco.py", _retina),
                                           ("faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py", _faster)],
                         ids=["retinanet", "faster_rcnn"])
def test_detector_train_step_and_simple_test(served: None, config: str, shrink: Any) -> None:
    det = _build(config, shrink)
    img, metas, boxes, labels = _batch()
    det.train()
    losses = det(img, metas, gt_bboxes=boxes, gt_labels=labels, return_loss=True)
    loss, log_vars = det._parse_losses(losses)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    grads = [p.grad for p in det.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:5])
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    det.eval()
    with torch.no_grad():
        results = det.simple_test(img, metas, rescale=True)
    assert len(results) == 2
    assert len(results[0]) == 3  # one array per class
    assert all(r.shape[1] == 5 for r in results[0])
