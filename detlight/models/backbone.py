"""A small conv backbone with a top-down merge, sized to train from scratch on a CPU in minutes.

It stands in for mmdet's ``ResNet`` + ``CTResNetNeck`` pair of the CenterNet configs: same job (a single stride-4
feature map with a large receptive field), about 0.4 M parameters instead of 15 M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detlight.exceptions import ConfigError

__all__ = ["ConvBNReLU", "TinyFPNBackbone"]


class ConvBNReLU(nn.Sequential):
    """``Conv2d`` (no bias) -> ``BatchNorm2d`` -> ``ReLU``: mmcv's ``ConvModule`` with ``norm_cfg=dict(type='BN')``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size; padding keeps the size ``ceil(in / stride)``.
        stride: convolution stride.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class TinyFPNBackbone(nn.Module):
    """Plain conv stages at strides 4, 8 and 16, merged top-down (FPN style) into one stride-4 map.

    Stride 4 is where CenterNet predicts; the stride-8 and stride-16 stages only widen the receptive field so that
    a peak at an object's centre can "see" the whole object. Channels double per stage (``width``, ``2 * width``,
    ``4 * width``) and the output has ``width`` channels.

    Args:
        width: channels of the stride-4 stage and of the output.
        in_channels: image channels.

    Raises:
        ValueError: ``width`` is not a positive even number.

    Example:
        >>> net = TinyFPNBackbone(width=16)
        >>> net(torch.zeros(2, 3, 64, 96)).shape
        torch.Size([2, 16, 16, 24])
    """

    stride = 4

    def __init__(self, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        if width <= 0 or width % 2:
            raise ConfigError(f"Expected `width` to be a positive even number of channels, but got {width}.")
        self.width = width
        self.out_channels = width
        self.stage4 = nn.Sequential(
            ConvBNReLU(in_channels, width // 2, stride=2),
            ConvBNReLU(width // 2, width, stride=2),
            ConvBNReLU(width, width),
        )
        self.stage8 = nn.Sequential(ConvBNReLU(width, 2 * width, stride=2), ConvBNReLU(2 * width, 2 * width))
        self.stage16 = nn.Sequential(ConvBNReLU(2 * width, 4 * width, stride=2), ConvBNReLU(4 * width, 4 * width))
        self.lateral8 = nn.Conv2d(2 * width, width, 1)
        self.lateral16 = nn.Conv2d(4 * width, width, 1)
        self.fuse = ConvBNReLU(width, width)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Map ``float32[B, 3, H, W]`` to the stride-4 feature ``float32[B, width, ceil(H/4), ceil(W/4)]``."""
        c4 = self.stage4(img)
        c8 = self.stage8(c4)
        c16 = self.stage16(c8)
        p8 = self.lateral8(c8) + F.interpolate(self.lateral16(c16), size=c8.shape[-2:], mode="nearest")
        p4 = c4 + F.interpolate(p8, size=c4.shape[-2:], mode="nearest")
        return self.fuse(p4)
