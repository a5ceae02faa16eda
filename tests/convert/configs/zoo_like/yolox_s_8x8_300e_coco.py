# mmdet 2.28 configs/yolox/yolox_s_8x8_300e_coco.py (model and pipelines shortened)
_base_ = ['./_base_/runtime.py']
img_scale = (640, 640)
model = dict(type='YOLOX', input_size=img_scale, random_size_range=(15, 25), random_size_interval=10,
             backbone=dict(type='CSPDarknet', deepen_factor=0.33, widen_factor=0.5),
             bbox_head=dict(type='YOLOXHead', num_classes=80, in_channels=128, feat_channels=128))
data_root = 'data/coco/'
dataset_type = 'CocoDataset'
train_dataset = dict(
    type='MultiImageMixDataset',
    dataset=dict(type=dataset_type, ann_file=data_root + 'annotations/instances_train2017.json',
                 img_prefix=data_root + 'train2017/', filter_empty_gt=False),
    pipeline=[dict(type='Mosaic', img_scale=img_scale, pad_val=114.0)])
data = dict(samples_per_gpu=8, workers_per_gpu=4, persistent_workers=True, train=train_dataset,
            val=dict(type=dataset_type, ann_file=data_root + 'annotations/instances_val2017.json',
                     img_prefix=data_root + 'val2017/'),
            test=dict(type=dataset_type, ann_file=data_root + 'annotations/instances_val2017.json',
                      img_prefix=data_root + 'val2017/'))
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True,
                 paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
optimizer_config = dict(grad_clip=None)
max_epochs = 300
num_last_epochs = 15
resume_from = None
interval = 10
lr_config = dict(_delete_=True, policy='YOLOX', warmup='exp', by_epoch=False, warmup_by_epoch=True, warmup_ratio=1,
                 warmup_iters=5, num_last_epochs=num_last_epochs, min_lr_ratio=0.05)
runner = dict(type='EpochBasedRunner', max_epochs=max_epochs)
custom_hooks = [
    dict(type='YOLOXModeSwitchHook', num_last_epochs=num_last_epochs, priority=48),
    dict(type='SyncNormHook', num_last_epochs=num_last_epochs, interval=interval, priority=48),
    dict(type='ExpMomentumEMAHook', resume_from=resume_from, momentum=0.0001, priority=49),
]
checkpoint_config = dict(interval=interval)
evaluation = dict(save_best='auto', interval=interval, dynamic_intervals=[(max_epochs - num_last_epochs, 1)],
                  metric='bbox')
log_config = dict(interval=50)
auto_scale_lr = dict(base_batch_size=64)
