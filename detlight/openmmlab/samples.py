"""Small, self-contained mmdet ``.py`` configs on detlight's synthetic COCO set (smoke tests, the parity benchmark).

Replaces: nothing; mmdet's own configs need COCO and ImageNet weights. These keep mmdet's structure (the same
``model`` / ``data`` / schedule keys as ``configs/retinanet/retinanet_r50_fpn_1x_coco.py``) with a ResNet-18 trained
from scratch on tiny images, so one iteration takes well under a second on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from detlight.data.synthetic import SyntheticCocoSpec, ensure_synthetic_coco

__all__ = ["FAMILIES", "link_synthetic_coco", "write_config"]

Family = Literal["retinanet", "faster_rcnn", "mask_rcnn"]
FAMILIES: tuple[str, ...] = ("retinanet", "faster_rcnn", "mask_rcnn")

_BACKBONE = """dict(type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch', init_cfg=None)"""

_MODELS = {
    "retinanet": """model = dict(
    type='RetinaNet',
    backbone=BACKBONE,
    neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=32, start_level=1, add_extra_convs='on_input',
              num_outs=3),
    bbox_head=dict(
        type='RetinaHead', num_classes=NUM_CLASSES, in_channels=32, stacked_convs=1, feat_channels=32,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                 ignore_iof_thr=-1),
                   allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=20))
""",
    "faster_rcnn": """model = dict(
    type='FasterRCNN',
    backbone=BACKBONE,
    neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=32, num_outs=4),
    rpn_head=dict(
        type='RPNHead', in_channels=32, feat_channels=32,
        anchor_generator=dict(type='AnchorGenerator', scales=[4], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=7,
                                sampling_ratio=0), out_channels=32, featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(type='Shared2FCBBoxHead', in_channels=32, fc_out_channels=64, roi_feat_size=7,
                       num_classes=NUM_CLASSES,
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                                       target_stds=[0.1, 0.1, 0.2, 0.2]),
                       reg_class_agnostic=False,
                       loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                       loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                               match_low_quality=True, ignore_iof_thr=-1),
                 sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
                 allowed_border=-1, pos_weight=-1, debug=False),
        rpn_proposal=dict(nms_pre=200, max_per_img=100, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                                match_low_quality=False, ignore_iof_thr=-1),
                  sampler=dict(type='RandomSampler', num=64, pos_fraction=0.25, neg_pos_ub=-1,
                               add_gt_as_proposals=True),
                  pos_weight=-1, debug=False)),
    test_cfg=dict(
        rpn=dict(nms_pre=200, max_per_img=100, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=20)))
""",
}

_MODELS["mask_rcnn"] = (
    _MODELS["faster_rcnn"].replace("type='FasterRCNN'", "type='MaskRCNN'")
    .replace("                       loss_bbox=dict(type='L1Loss', loss_weight=1.0))),",
             "                       loss_bbox=dict(type='L1Loss', loss_weight=1.0)),\n"
             "        mask_roi_extractor=dict(type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=14,\n"
             "                                sampling_ratio=0), out_channels=32, featmap_strides=[4, 8, 16, 32]),\n"
             "        mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=32, conv_out_channels=32,\n"
             "                       num_classes=NUM_CLASSES,\n"
             "                       loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),")
    .replace("                  pos_weight=-1, debug=False)),", "                  mask_size=28, pos_weight=-1, debug=False)),")
    .replace("rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=20)",
             "rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=20, mask_thr_binary=0.5)")
)

_REST = """
dataset_type = 'CocoDataset'
classes = CLASSES
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=WITH_MASK),
    dict(type='Resize', img_scale=(IMG, IMG), keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'MASK_KEY]),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(IMG, IMG), flip=False,
         transforms=[dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
                     dict(type='Normalize', **img_norm_cfg), dict(type='Pad', size_divisor=32),
                     dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])]),
]
data = dict(
    samples_per_gpu=SAMPLES,
    workers_per_gpu=0,
    val_dataloader=dict(samples_per_gpu=VALSPG),
    train=dict(type=dataset_type, classes=classes, ann_file='TRAIN_ANN', img_prefix='TRAIN_IMG',
               pipeline=train_pipeline),
    val=dict(type=dataset_type, classes=classes, ann_file='VAL_ANN', img_prefix='VAL_IMG', pipeline=test_pipeline),
    test=dict(type=dataset_type, classes=classes, ann_file='VAL_ANN', img_prefix='VAL_IMG', pipeline=test_pipeline))
evaluation = dict(interval=1, metric=METRIC)
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(grad_clip=dict(max_norm=35, norm_type=2))
lr_config = dict(policy='step', warmup='linear', warmup_iters=10, warmup_ratio=0.1, step=[8, 11])
runner = dict(type='EpochBasedRunner', max_epochs=EPOCHS)
checkpoint_config = dict(interval=1)
log_config = dict(interval=1, hooks=[dict(type='TextLoggerHook')])
dist_params = dict(backend='nccl')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]
seed = 0
"""


def write_config(path: str | Path, family: str = "retinanet", root: str | Path | None = None, num_train: int = 4,
                 num_val: int = 2, image_size: int = 64, samples_per_gpu: int = 2, max_epochs: int = 1,
                 val_samples_per_gpu: int = 2) -> Path:
    """Write a self-contained mmdet config of ``family`` on a synthetic COCO set generated under ``root``.

    Args:
        path: the ``.py`` file to write.
        family: ``"retinanet"``, ``"faster_rcnn"`` or ``"mask_rcnn"`` (ResNet-18 + FPN, 32 channels).
        root: the synthetic set's cache folder (default: detlight's cache).
        num_train: train images.
        num_val: val images.
        image_size: side of the square images (also mmdet's ``img_scale``).
        samples_per_gpu: train batch size.
        max_epochs: ``runner.max_epochs``.
        val_samples_per_gpu: ``data.val_dataloader.samples_per_gpu``.

    Returns:
        ``path``.
    """
    if family not in _MODELS:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    paths = ensure_synthetic_coco(SyntheticCocoSpec(root=None if root is None else str(root), num_train=num_train,
                                                    num_val=num_val, image_size=image_size))
    text = (_MODELS[family].replace("BACKBONE", _BACKBONE) + _REST)
    mask = family == "mask_rcnn"
    text = text.replace("WITH_MASK", str(mask)).replace("MASK_KEY", ", 'gt_masks'" if mask else "")
    text = text.replace("METRIC", "['bbox', 'segm']" if mask else "'bbox'")
    for key, value in (("NUM_CLASSES", str(len(paths.classes))), ("CLASSES", repr(tuple(paths.classes))),
                       ("TRAIN_ANN", str(paths.train_ann)), ("TRAIN_IMG", str(paths.train_img_prefix) + "/"),
                       ("VAL_ANN", str(paths.val_ann)), ("VAL_IMG", str(paths.val_img_prefix) + "/"),
                       ("SAMPLES", str(samples_per_gpu)), ("VALSPG", str(val_samples_per_gpu)), ("EPOCHS", str(max_epochs)), ("IMG", str(image_size))):
        text = text.replace(key, value)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def link_synthetic_coco(dest: str | Path, spec: SyntheticCocoSpec | None = None) -> Path:
    """Generate ``spec``'s synthetic COCO set (default: 600 train / 100 val images of 128 px) and link it at ``dest``.

    ``dest`` then holds mmdet's layout, ``annotations/{train,val}.json`` and ``train/`` / ``val/`` image folders, as
    ``configs/openmmlab/*.py`` expect (``data_root = 'data/synthetic_coco/'``).

    Raises:
        FileExistsError: ``dest`` exists and is not a link to this set.
    """
    paths = ensure_synthetic_coco(spec)
    target = paths.train_ann.parent.parent.resolve()
    out = Path(dest)
    if out.is_symlink() and out.resolve() == target:
        return out
    if out.exists() or out.is_symlink():
        raise FileExistsError(f"{out} exists and is not a link to the synthetic COCO set {target}; remove it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.symlink_to(target, target_is_directory=True)
    return out


if __name__ == "__main__":
    import sys

    print(link_synthetic_coco(sys.argv[1] if len(sys.argv) > 1 else "data/synthetic_coco"))
