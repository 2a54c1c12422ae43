"""The standalone layer every static block and network is made of: conv -> BN -> ReLU.

Each op's standalone block class lives in its module under :mod:`nas_search.spaces.ops`;
:mod:`.static` assembles whole networks.
"""

from __future__ import annotations

from torch import nn

Activation = nn.ReLU


def conv_norm_activation(
    in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1, activation: bool = True
) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> optional ReLU, with 'same' padding."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if activation:
        layers.append(Activation(inplace=True))
    return nn.Sequential(*layers)
