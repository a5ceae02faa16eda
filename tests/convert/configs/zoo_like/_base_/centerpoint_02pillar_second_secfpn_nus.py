# mmdet3d 1.0.0rc6 configs/_base_/models/centerpoint_02pillar_second_secfpn_nus.py (shortened)
voxel_size = [0.2, 0.2, 8]
model = dict(
    type='CenterPoint',
    pts_voxel_layer=dict(max_num_points=20, voxel_size=voxel_size, max_voxels=(30000, 40000)),
    pts_voxel_encoder=dict(type='PillarFeatureNet', in_channels=5, feat_channels=[64], with_distance=False,
                           voxel_size=(0.2, 0.2, 8), norm_cfg=dict(type='BN1d', eps=1e-3, momentum=0.01),
                           legacy=False),
    pts_backbone=dict(type='SECOND', in_channels=64, out_channels=[64, 128, 256], layer_nums=[3, 5, 5],
                      layer_strides=[2, 2, 2], norm_cfg=dict(type='naiveSyncBN2d', eps=1e-3, momentum=0.01)),
    pts_neck=dict(type='SECONDFPN', out_channels=[128, 128, 128], upsample_strides=[0.5, 1, 2],
                  norm_cfg=dict(type='naiveSyncBN2d', eps=1e-3, momentum=0.01)),
    pts_bbox_head=dict(type='CenterHead', in_channels=sum([128, 128, 128]),
                       tasks=[dict(num_class=1, class_names=['car']),
                              dict(num_class=2, class_names=['truck', 'construction_vehicle'])]))
