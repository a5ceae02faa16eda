# mmdet 2.x configs/pascal_voc/retinanet_r50_fpn_1x_voc0712.py (model shortened): a dataset detlight cannot read
_base_ = ['./_base_/voc0712.py', './_base_/runtime.py']
model = dict(type='RetinaNet', backbone=dict(type='ResNet', depth=50), bbox_head=dict(num_classes=20))
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
lr_config = dict(policy='step', step=[3])
runner = dict(type='EpochBasedRunner', max_epochs=4)  # actual epoch = 4 * 3 = 12
