# mmdet's own RetinaNet (ResNet-18 + FPN, from scratch) on detlight's synthetic COCO set, sized for 2 CPU cores.
# Data:  python -m detlight.openmmlab.samples data/synthetic_coco   (600 train / 100 val images of 128 px, 4 shapes)
# Run:   detlight fit --config configs/openmmlab/retinanet_r18_synthetic.py      (OpenMMLab venv: mmdet's code)
# mmdet counterpart: configs/retinanet/retinanet_r50_fpn_1x_coco.py, scaled down: ResNet-18 without ImageNet
# weights, 64-channel FPN on P3-P5, a GroupNorm head of 2 convs, anchors of 16-100 px (octave_base_scale=2),
# GIoU box loss on decoded boxes, AdamW with warm-up and cosine decay, 128 px images, 6 epochs.
# Metric: mmdet's CocoDataset.evaluate (pycocotools): val/bbox_mAP, val/bbox_mAP_50, ...
model = dict(
    type='RetinaNet',
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(1, 2, 3), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch', init_cfg=None),
    neck=dict(type='FPN', in_channels=[128, 256, 512], out_channels=64, start_level=0, add_extra_convs=False,
              num_outs=3),
    bbox_head=dict(
        type='RetinaHead', num_classes=4, in_channels=64, stacked_convs=2, feat_channels=64,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=2, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0], target_stds=[0.1, 0.1, 0.2, 0.2]),
        reg_decoded_bbox=True,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                 ignore_iof_thr=-1),
                   allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=100))
dataset_type = 'CocoDataset'
data_root = 'data/synthetic_coco/'
classes = ('circle', 'square', 'triangle', 'cross')
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', img_scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(128, 128), flip=False,
         transforms=[dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
                     dict(type='Normalize', **img_norm_cfg), dict(type='Pad', size_divisor=32),
                     dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])]),
]
data = dict(
    samples_per_gpu=8,
    workers_per_gpu=1,
    val_dataloader=dict(samples_per_gpu=16),
    train=dict(type=dataset_type, classes=classes, ann_file=data_root + 'annotations/train.json',
               img_prefix=data_root + 'train/', pipeline=train_pipeline),
    val=dict(type=dataset_type, classes=classes, ann_file=data_root + 'annotations/val.json',
             img_prefix=data_root + 'val/', pipeline=test_pipeline),
    test=dict(type=dataset_type, classes=classes, ann_file=data_root + 'annotations/val.json',
              img_prefix=data_root + 'val/', pipeline=test_pipeline))
evaluation = dict(interval=1, metric='bbox')
optimizer = dict(type='AdamW', lr=0.002, weight_decay=0.0001)
optimizer_config = dict(grad_clip=dict(max_norm=10, norm_type=2))
lr_config = dict(policy='CosineAnnealing', min_lr=0.0, by_epoch=False, warmup='linear', warmup_iters=50,
                 warmup_ratio=0.1)
runner = dict(type='EpochBasedRunner', max_epochs=6)
checkpoint_config = dict(interval=1, max_keep_ckpts=1)
log_config = dict(interval=10, hooks=[dict(type='TextLoggerHook')])
dist_params = dict(backend='nccl')
log_level = 'INFO'
work_dir = 'work_dirs/retinanet_r18_synthetic'
load_from = None
resume_from = None
workflow = [('train', 1)]
seed = 0
