# mmdet3d 1.0.0rc6 configs/centerpoint/centerpoint_02pillar_second_secfpn_4x8_cyclic_20e_nus.py (shortened):
# `sum([...])` in the model base, naiveSyncBN2d, CBGSDataset around the train set, a cyclic schedule
_base_ = ['./_base_/nus-3d.py', './_base_/centerpoint_02pillar_second_secfpn_nus.py', './_base_/runtime.py']
point_cloud_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
class_names = ['car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle', 'bicycle',
               'pedestrian', 'traffic_cone']
model = dict(pts_voxel_layer=dict(point_cloud_range=point_cloud_range),
             pts_bbox_head=dict(bbox_coder=dict(pc_range=point_cloud_range[:2])))
data = dict(train=dict(type='CBGSDataset', dataset=dict(classes=class_names, use_valid_flag=True)))
optimizer = dict(type='AdamW', lr=1e-4, weight_decay=0.01)
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=35, norm_type=2))
lr_config = dict(_delete_=True, policy='cyclic', target_ratio=(10, 1e-4), cyclic_times=1, step_ratio_up=0.4)
momentum_config = dict(policy='cyclic', target_ratio=(0.85 / 0.95, 1), cyclic_times=1, step_ratio_up=0.4)
runner = dict(type='EpochBasedRunner', max_epochs=20)
