"""Static (extracted, standalone) network modules.

These are plain ``nn.Module``s with physically sized tensors.  They do not depend on the
supernet classes: :func:`build_static_model` builds one from an ``ArchSpec`` alone (random
init, for training from scratch or for loading an exported ``model.pt``), and
``Supernet.extract`` builds the same modules and copies the shared weights into them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from nas_search.spaces.ops import KindTable, block_kind
from nas_search.spaces.ops.dsc import SeparableBlock
from nas_search.spaces.ops.mbconv import InvertedResidual, SqueezeExcite
from nas_search.spaces.ops.slim import SlimModule, SqueezeExpand
from nas_search.spaces.resolved import ResolvedBlock, ResolvedNetwork
from nas_search.spaces.static_blocks import Activation, conv_norm_activation

#: Static block class for each op: a live view of ``BLOCK_KINDS[op].static_block``.
STATIC_BLOCKS: KindTable[Callable[[ResolvedBlock], nn.Module]] = KindTable("static_block")


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
            nn.Sequential(*(block_kind(block.spec.op).static_block(block) for block in stage)) for stage in network.stages
        )
        self.head = conv_norm_activation(network.last_channels, network.head_channels)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout), nn.Linear(network.head_channels, network.num_classes)
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
        return cast(torch.Tensor, self.classifier(self.head(x)))


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


__all__ = [
    "Activation",
    "InvertedResidual",
    "STATIC_BLOCKS",
    "SeparableBlock",
    "SlimModule",
    "SqueezeExcite",
    "SqueezeExpand",
    "StaticNetwork",
    "build_static_model",
    "conv_norm_activation",
    "initialise_weights",
]
