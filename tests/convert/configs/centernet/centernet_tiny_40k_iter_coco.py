_base_ = './centernet_tiny_1x_coco.py'

runner = dict(_delete_=True, type='IterBasedRunner', max_iters=40000)
lr_config = dict(step=[30000, 36000], by_epoch=False)
checkpoint_config = dict(by_epoch=False, interval=4000, max_keep_ckpts=3)
evaluation = dict(interval=4000, metric='bbox', save_best='bbox_mAP')
workflow = [('train', 4000)]
optimizer_config = dict(_delete_=True, type='GradientCumulativeOptimizerHook', cumulative_iters=2)
find_unused_parameters = True
dist_params = dict(backend='gloo', port=29511)
log_config = dict(interval=100, hooks=[dict(type='TextLoggerHook', by_epoch=False),
                                       dict(type='TensorboardLoggerHook', by_epoch=False)])
resume_from = 'work_dirs/centernet/iter_8000.pth'
auto_resume = True
