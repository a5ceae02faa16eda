# mmdet3d 1.0.0rc6 configs/pointnet2/pointnet2_ssg_16x2_cosine_50e_s3dis_seg-3d-13class.py (shortened)
_base_ = ['./_base_/s3dis_seg-3d-13class.py', './_base_/runtime.py']
model = dict(type='EncoderDecoder3D', decode_head=dict(num_classes=13, ignore_index=13))
data = dict(samples_per_gpu=16)
evaluation = dict(interval=2)
optimizer = dict(type='Adam', lr=0.001, weight_decay=0.001)
lr_config = dict(policy='CosineAnnealing', warmup=None, min_lr=1e-5)
runner = dict(type='EpochBasedRunner', max_epochs=50)
