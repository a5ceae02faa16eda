# mmdet 2.28 configs/mask2former/mask2former_swin-t-p4-w7-224_lsj_8x2_50e_coco.py (shortened):
# `custom_keys.update({...})` statements with nested comprehensions over enumerate/range/len
_base_ = ['./_base_/runtime.py']
depths = [2, 2, 6, 2]
model = dict(type='Mask2Former', backbone=dict(type='SwinTransformer', depths=depths, window_size=7))
backbone_norm_multi = dict(lr_mult=0.1, decay_mult=0.0)
backbone_embed_multi = dict(lr_mult=0.1, decay_mult=0.0)
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
custom_keys = {
    'backbone': dict(lr_mult=0.1, decay_mult=1.0),
    'backbone.patch_embed.norm': backbone_norm_multi,
    'backbone.norm': backbone_norm_multi,
    'absolute_pos_embed': backbone_embed_multi,
    'relative_position_bias_table': backbone_embed_multi,
    'query_embed': embed_multi,
    'query_feat': embed_multi,
    'level_embed': embed_multi
}
custom_keys.update({
    f'backbone.stages.{stage_id}.blocks.{block_id}.norm': backbone_norm_multi
    for stage_id, num_blocks in enumerate(depths)
    for block_id in range(num_blocks)
})
custom_keys.update({
    f'backbone.stages.{stage_id}.downsample.norm': backbone_norm_multi
    for stage_id in range(len(depths) - 1)
})
optimizer = dict(type='AdamW', lr=0.0001, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999),
                 paramwise_cfg=dict(custom_keys=custom_keys, norm_decay_mult=0.0))
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=0.01, norm_type=2))
lr_config = dict(policy='step', gamma=0.1, by_epoch=False, step=[327778, 355092], warmup='linear',
                 warmup_by_epoch=False, warmup_ratio=1.0, warmup_iters=10)
max_iters = 368750
runner = dict(_delete_=True, type='IterBasedRunner', max_iters=max_iters)
workflow = [('train', 5000)]
checkpoint_config = dict(by_epoch=False, interval=5000, save_last=True, max_keep_ckpts=3)
evaluation = dict(interval=5000, dynamic_intervals=[(max_iters // 5000 * 5000 + 1, max_iters)], metric=['bbox'])
