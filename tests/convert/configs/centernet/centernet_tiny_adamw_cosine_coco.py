"""A child of a child: `_delete_` replaces the SGD optimizer and the step schedule; `{{_base_.x}}` reads the parents."""
_base_ = './centernet_tiny_1x_coco.py'

base_lr = {{ _base_.optimizer.lr }} / 10
optimizer = dict(_delete_=True, type='AdamW', lr=base_lr, weight_decay=0.05,
                 paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.,
                                    custom_keys={'backbone': dict(lr_mult=0.1)}))
lr_config = dict(_delete_=True, policy='CosineAnnealing', warmup='linear', warmup_iters=1000,
                 warmup_ratio=1.0 / 10, min_lr_ratio=1e-5)
runner = dict(max_epochs={{_base_.runner.max_epochs}} * 2)
data = dict(samples_per_gpu=4, train=dict(pipeline={{_base_.train_pipeline}}[:4] + [
    dict(type='Normalize', mean=[0., 0., 0.], std=[1., 1., 1.], to_rgb=False)]))
momentum_config = None
custom_hooks = [
    dict(type='EMAHook', momentum=0.0002, interval=1, warm_up=100, priority='ABOVE_NORMAL'),
    dict(type='MyProjectHook', every='epoch'),
]
custom_imports = dict(imports=['my_project.hooks'], allow_failed_imports=False)
log_config = dict(hooks=[dict(type='TextLoggerHook'), dict(type='WandbLoggerHook', init_kwargs=dict(project='x'))])
name = f'adamw_{base_lr:.0e}_x{runner["max_epochs"]}'
