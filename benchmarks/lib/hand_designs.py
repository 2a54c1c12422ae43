"""Hand-designed CIFAR classifiers for the classification benchmark (32 x 32 inputs).

**ResNet-20** (He et al., "Deep Residual Learning for Image Recognition", 2016, section 4.2,
the CIFAR-10 network): a 3x3 conv stem to 16 channels, then three stages of three basic
blocks (two 3x3 conv + BN, ReLU after the addition) with 16, 32 and 64 channels at 32, 16
and 8 px, global average pooling and a linear classifier. The first block of stages 2
and 3 halves the resolution with a stride-2 first conv; its shortcut is a **1x1 conv +
BN projection with stride 2 (the paper's option B)**, every other shortcut the identity.
Option B adds 2,560 conv weights (and two BNs) to the paper's 0.27M parameters of option A
(zero-padded identity shortcuts). Convs are initialised Kaiming-normal (fan out), BN
weights to one, as torchvision's ResNets.

**MobileNetV2 in its common CIFAR form** (as in the widely used CIFAR ports of it, e.g.
kuangliu/pytorch-cifar): torchvision's ``mobilenet_v2(width_mult=w, num_classes=10)``
layout and initialisation, with two strides changed from 2 to 1 so that a 32 px input is
not shrunk to 1 px:

* the stem conv (``features[0]``, 3x3, stride 2 -> 1), and
* the depthwise conv of the first block of the 24-channel stage (``features[2]``, the
  first stride-2 stage, stride 2 -> 1).

The network then runs at 32 px through the 16- and 24-channel stages, 16 px in the
32-channel stage, 8 px in the 64- and 96-channel stages and 4 px in the 160- and
320-channel stages and the final 1x1 conv (1280 channels, never narrowed below 1280, as
in torchvision), then pools. Changing a stride leaves every weight shape as it is. The
classifier has no dropout (torchvision's default is 0.2; the CIFAR ports have none, and
every model of the benchmark trains without it).

The width multiplier ``w`` scales the channels of every layer but the last, each rounded
to a multiple of torchvision's ``round_nearest``; :func:`mobilenetv2_at_budget` picks the
largest ``w`` whose FLOPs fit a budget by bisection (FLOPs grow monotonically with
``w``). It rounds channels to multiples of **4**, not torchvision's default 8: with 8 the
FLOPs jump across ResNet-20's budget in one step (0.80x of it at ``w = 0.545``, 1.002x at
``w = 0.56``), so no multiple-of-8 width lands near it; with 4 one lands within 1%.

FLOPs are fvcore's count (1 multiply-add = 1 FLOP; BN and the global average pooling
counted, activations and additions not) at 32 x 32, batch 1
(:func:`nas_search.hw_models.fvcore_count.fvcore_flops`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nas_search.hw_models.fvcore_count import fvcore_flops

#: Input side (pixels) of every model here.
CIFAR_INPUT_SIZE = 32


# ------------------------------------------------------------------------------ ResNet-20
class BasicBlock(nn.Module):
    """Two 3x3 conv + BN with a shortcut; a 1x1 conv + BN projection (option B) where the
    shape changes, else the identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016): ``6n + 2`` layers, three stages of ``n`` basic
    blocks with ``widths`` channels at strides 1, 2 and 2."""

    def __init__(self, blocks_per_stage: int = 3, widths: tuple[int, int, int] = (16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        in_channels = widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks_per_stage):
                layers.append(BasicBlock(in_channels, width, 2 if stage > 0 and index == 0 else 1))
                in_channels = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 for 32 px inputs with option-B (1x1 conv + BN) projection shortcuts."""
    return CifarResNet(3, (16, 32, 64), num_classes)


# ------------------------------------------------------------------------------ MobileNetV2
def mobilenetv2_cifar(
    width_mult: float = 1.0, num_classes: int = 10, round_nearest: int = 8, dropout: float = 0.0
) -> nn.Module:
    """torchvision's MobileNetV2 adapted to 32 px: stride 1 in the stem conv and in the
    first block of the 24-channel stage (see the module docstring). Channels are rounded to
    multiples of ``round_nearest`` (torchvision's default 8); ``dropout`` before the
    classifier (torchvision's default 0.2; 0 here, as in the CIFAR ports)."""
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(
        weights=None, width_mult=width_mult, num_classes=num_classes, round_nearest=round_nearest, dropout=dropout
    )
    stem_conv = model.features[0][0]
    first_24_depthwise = model.features[2].conv[1][0]
    for conv in (stem_conv, first_24_depthwise):
        if not isinstance(conv, nn.Conv2d) or conv.stride != (2, 2):
            raise RuntimeError(f"unexpected torchvision MobileNetV2 layout: {conv} should be a stride-2 conv")
        conv.stride = (1, 1)
    return model


@dataclass(frozen=True)
class BudgetedMobileNet:
    """The widest CIFAR MobileNetV2 within a FLOPs budget."""

    width_mult: float
    round_nearest: int
    flops: int
    budget: int

    def build(self, num_classes: int = 10) -> nn.Module:
        """A randomly initialised model of this width."""
        return mobilenetv2_cifar(self.width_mult, num_classes, self.round_nearest)


def mobilenetv2_flops(width_mult: float, num_classes: int = 10, round_nearest: int = 8) -> int:
    """fvcore FLOPs of :func:`mobilenetv2_cifar` at 32 x 32."""
    return fvcore_flops(mobilenetv2_cifar(width_mult, num_classes, round_nearest), CIFAR_INPUT_SIZE)


def mobilenetv2_at_budget(
    budget: int, num_classes: int = 10, round_nearest: int = 4, low: float = 0.1, high: float = 2.0, steps: int = 14
) -> BudgetedMobileNet:
    """The largest width multiplier in ``[low, high]`` (to about ``(high - low) / 2**steps``)
    whose CIFAR MobileNetV2 (channels rounded to multiples of ``round_nearest``) has at
    most ``budget`` fvcore FLOPs at 32 px, by bisection. Raises ``ValueError`` when even
    ``low`` is over the budget."""
    low_flops = mobilenetv2_flops(low, num_classes, round_nearest)
    if low_flops > budget:
        raise ValueError(f"MobileNetV2 at width {low} already has {low_flops:,} FLOPs, over the budget {budget:,}")
    best = BudgetedMobileNet(low, round_nearest, low_flops, budget)
    for _ in range(steps):
        middle = (low + high) / 2
        flops = mobilenetv2_flops(middle, num_classes, round_nearest)
        if flops <= budget:
            low, best = middle, BudgetedMobileNet(middle, round_nearest, flops, budget)
        else:
            high = middle
    return best


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


__all__ = [
    "CIFAR_INPUT_SIZE",
    "BasicBlock",
    "BudgetedMobileNet",
    "CifarResNet",
    "mobilenetv2_at_budget",
    "mobilenetv2_cifar",
    "mobilenetv2_flops",
    "parameter_count",
    "resnet20",
]
