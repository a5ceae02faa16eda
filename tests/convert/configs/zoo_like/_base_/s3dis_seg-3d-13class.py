# mmdet3d 1.0.0rc6 configs/_base_/datasets/s3dis_seg-3d-13class.py (shortened): range(len(...)) in a base
dataset_type = 'S3DISSegDataset'
data_root = './data/s3dis/'
class_names = ('ceiling', 'floor', 'wall', 'beam', 'column', 'window', 'door', 'table', 'chair', 'sofa', 'bookcase',
               'board', 'clutter')
train_area = [1, 2, 3, 4, 6]
test_area = 5
train_pipeline = [
    dict(type='PointSegClassMapping', valid_cat_ids=tuple(range(len(class_names))), max_cat_id=13),
]
data = dict(
    samples_per_gpu=8,
    workers_per_gpu=4,
    train=dict(type=dataset_type, data_root=data_root,
               ann_files=[data_root + f's3dis_infos_Area_{i}.pkl' for i in train_area], pipeline=train_pipeline,
               classes=class_names, ignore_index=len(class_names)),
    val=dict(type=dataset_type, data_root=data_root, ann_files=data_root + f's3dis_infos_Area_{test_area}.pkl',
             classes=class_names, test_mode=True, ignore_index=len(class_names)))
evaluation = dict(interval=1)
