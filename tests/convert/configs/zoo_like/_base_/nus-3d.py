# mmdet3d 1.0.0rc6 configs/_base_/datasets/nus-3d.py (pipelines shortened)
point_cloud_range = [-50, -50, -5, 50, 50, 3]
class_names = ['car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
               'traffic_cone', 'barrier']
dataset_type = 'NuScenesDataset'
data_root = 'data/nuscenes/'
input_modality = dict(use_lidar=True, use_camera=False)
data = dict(
    samples_per_gpu=4,
    workers_per_gpu=4,
    train=dict(type=dataset_type, data_root=data_root, ann_file=data_root + 'nuscenes_infos_train.pkl',
               classes=class_names, modality=input_modality, test_mode=False, box_type_3d='LiDAR'),
    val=dict(type=dataset_type, data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl',
             classes=class_names, modality=input_modality, test_mode=True, box_type_3d='LiDAR'),
    test=dict(type=dataset_type, data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl',
              classes=class_names, modality=input_modality, test_mode=True, box_type_3d='LiDAR'))
evaluation = dict(interval=24)
