"""Static (extracted, standalone) network modules.

These are plain ``nn.Module``s with physically sized tensors.  They do not depend on the
supernet classes: :func:`build_static_model` builds one from an ``ArchSpec`` alone (random
init, for training from scratch or for loading an exported ``model.pt``), and
``Supernet.extract`` builds the same modules and copies the shared weights into them.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from nas_search.spaces.scc.conv import SlidingChannelConv2d
from nas_search.spaces.space import ResolvedBlock, ResolvedNetwork

Activation = nn.ReLU


def conv_norm_activation(
    in_channels: int,
    out_channels: int,
    kernel: int = 1,
    stride: int = 1,
    groups: int = 1,
    activation: bool = True,
) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> optional ReLU, with 'same' padding."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if activation:
        layers.append(Activation(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite: global pool -> 1x1 reduce -> ReLU -> 1x1 expand -> hard-sigmoid
    gate, multiplied onto the input."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.activation = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.activation(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand -> depthwise kxk -> [squeeze-excite] -> 1x1 linear project."""

    def __init__(self, block: ResolvedBlock) -> None:
        super().__init__()
        hidden = block.hidden_channels
        self.expand = conv_norm_activation(block.in_channels, hidden)
        self.depthwise = conv_norm_activation(hidden, hidden, block.spec.kernel, block.stride, groups=hidden)
        self.squeeze_excite = (
            SqueezeExcite(hidden, block.squeeze_excite_channels) if block.squeeze_excite_channels else nn.Identity()
        )
        self.project = conv_norm_activation(hidden, block.out_channels, activation=False)
        self.residual = block.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.squeeze_excite(self.depthwise(self.expand(x))))
        return out + x if self.residual else out


class SeparableBlock(nn.Module):
    """Depthwise kxk -> pointwise (dense 1x1 for ``dsc``, sliding-channel for ``scc``)."""

    def __init__(self, block: ResolvedBlock) -> None:
        super().__init__()
        channels = block.in_channels
        self.depthwise = conv_norm_activation(channels, channels, block.spec.kernel, block.stride, groups=channels)
        if block.spec.op == "scc":
            pointwise: nn.Module = SlidingChannelConv2d(
                channels, block.out_channels, block.spec.groups, block.spec.overlap
            )
        else:
            pointwise = nn.Conv2d(channels, block.out_channels, 1, bias=False)
        self.pointwise = nn.Sequential(pointwise, nn.BatchNorm2d(block.out_channels), Activation(inplace=True))
        self.residual = block.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pointwise(self.depthwise(x))
        return out + x if self.residual else out


class SqueezeExpand(nn.Module):
    """Slim-CNN SSE block: 1x1 squeeze to f, then two parallel expand branches to 4f each
    (a 1x1 conv and a depthwise-separable 3x3), concatenated to 8f."""

    def __init__(self, in_channels: int, squeeze: int) -> None:
        super().__init__()
        self.squeeze = conv_norm_activation(in_channels, squeeze)
        self.expand_pointwise = conv_norm_activation(squeeze, 4 * squeeze)
        self.expand_separable = nn.Sequential(
            conv_norm_activation(squeeze, squeeze, 3, groups=squeeze),
            conv_norm_activation(squeeze, 4 * squeeze),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.squeeze(x)
        return torch.cat([self.expand_pointwise(squeezed), self.expand_separable(squeezed)], dim=1)


class SlimModule(nn.Module):
    """Slim-CNN slim module: two SSE blocks plus a projected 1x1 skip from the input, then
    a depthwise-separable kxk conv (which carries the stride)."""

    def __init__(self, block: ResolvedBlock) -> None:
        super().__init__()
        squeeze, out_channels = block.hidden_channels, block.out_channels
        self.first = SqueezeExpand(block.in_channels, squeeze)
        self.second = SqueezeExpand(8 * squeeze, squeeze)
        self.skip = conv_norm_activation(block.in_channels, out_channels, activation=False)
        self.depthwise = conv_norm_activation(out_channels, out_channels, block.spec.kernel, block.stride, groups=out_channels)
        self.pointwise = conv_norm_activation(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.second(self.first(x)) + self.skip(x)
        return self.pointwise(self.depthwise(out))


#: Static block class for each op.
STATIC_BLOCKS: dict[str, Callable[[ResolvedBlock], nn.Module]] = {
    "mbconv": InvertedResidual,
    "dsc": SeparableBlock,
    "scc": SeparableBlock,
    "slim": SlimModule,
}


class StaticNetwork(nn.Module):
    """A standalone network: stem, stages, and a classifier head.

    ``forward`` returns class logits; :meth:`forward_features` returns the multi-scale
    feature maps of the stages marked as features (strides 8, 16, 32 in the ``mobile``
    space), for a detector's neck and head.
    """

    def __init__(self, network: ResolvedNetwork, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = conv_norm_activation(network.input_channels, network.stem_channels, 3, network.stem_stride)
        self.stages = nn.ModuleList(
            nn.Sequential(*(STATIC_BLOCKS[block.spec.op](block) for block in stage)) for stage in network.stages
        )
        self.head = conv_norm_activation(network.last_channels, network.head_channels)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Dropout(dropout),
            nn.Linear(network.head_channels, network.num_classes),
        )
        self.feature_stages = tuple(network.feature_stages)
        self.feature_channels = tuple(network.stages[index][-1].out_channels for index in network.feature_stages)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the feature stages, shallow to deep."""
        features = []
        x = self.stem(x)
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.feature_stages:
                features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.classifier(self.head(x))


def build_static_model(network: ResolvedNetwork, dropout: float = 0.0) -> StaticNetwork:
    """A randomly initialised standalone network for a resolved architecture."""
    model = StaticNetwork(network, dropout=dropout)
    initialise_weights(model)
    return model


def initialise_weights(model: nn.Module) -> None:
    """Kaiming-normal convs, unit BN, small-normal linear layers."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)
