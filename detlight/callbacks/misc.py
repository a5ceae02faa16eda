"""Old home of the small mmcv / mmdet hook callbacks; each now has its own module under ``detlight.callbacks``.

Kept so that ``detlight.callbacks.misc.<Name>`` imports and YAML ``class_path`` entries keep working. mmcv's
``DistSamplerSeedHook`` needs no port: Lightning's fit loop calls ``set_epoch(epoch)`` on ``dataloader.sampler`` and
``dataloader.batch_sampler.sampler`` at every train-epoch start, also with ``use_distributed_sampler=False``.
"""

from detlight.callbacks.check_invalid_loss import CheckInvalidLoss
from detlight.callbacks.empty_cache import EmptyCache
from detlight.callbacks.num_class_check import DEFAULT_NUM_CLASS_EXCLUDE, NumClassCheck, check_num_classes
from detlight.callbacks.set_epoch_info import SetEpochInfo
from detlight.callbacks.sync_buffers import SyncBuffers, allreduce_buffers

__all__ = ["DEFAULT_NUM_CLASS_EXCLUDE", "CheckInvalidLoss", "EmptyCache", "NumClassCheck", "SetEpochInfo",
           "SyncBuffers", "allreduce_buffers", "check_num_classes"]
