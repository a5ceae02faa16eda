# mmdet 2.28 configs/cityscapes/mask_rcnn_r50_fpn_1x_cityscapes.py (shortened): a COCO-format json dataset
_base_ = ['./_base_/runtime.py']
model = dict(type='MaskRCNN', roi_head=dict(bbox_head=dict(num_classes=8)))
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes/'
data = dict(
    samples_per_gpu=1,
    workers_per_gpu=2,
    train=dict(type='RepeatDataset', times=8,
               dataset=dict(type=dataset_type,
                            ann_file=data_root + 'annotations/instancesonly_filtered_gtFine_train.json',
                            img_prefix=data_root + 'leftImg8bit/train/')),
    val=dict(type=dataset_type, ann_file=data_root + 'annotations/instancesonly_filtered_gtFine_val.json',
             img_prefix=data_root + 'leftImg8bit/val/'),
    test=dict(type=dataset_type, ann_file=data_root + 'annotations/instancesonly_filtered_gtFine_test.json',
              img_prefix=data_root + 'leftImg8bit/test/'))
evaluation = dict(metric=['bbox', 'segm'])
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
lr_config = dict(policy='step', warmup='linear', warmup_iters=500, warmup_ratio=0.001, step=[7])
runner = dict(type='EpochBasedRunner', max_epochs=8)  # [7] yields higher performance than [6]
