_base_ = './hv_pointpillars_secfpn_6x8_160e_kitti-3d-3class.py'
data = dict(samples_per_gpu=2, workers_per_gpu=2)
# fp16 settings, the loss scale is specifically tuned to avoid Nan
fp16 = dict(loss_scale=512.)
