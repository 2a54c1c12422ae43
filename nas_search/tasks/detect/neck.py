"""Elastic FPN-lite neck: the supernet's neck, elastic in width and per-level depth.

Mirrors :class:`nas_search.tasks.detect.static.Neck`: a 1x1 lateral conv + BN from each
backbone feature (any active feature width, read from the tensor) to the active neck
width, top-down nearest upsampling and addition, then the first ``depth`` residual
depthwise-separable blocks of each level. ``copy_into`` copies the active slices into the
static neck. The extra levels (stride-2 separable blocks on the deepest level) follow.
Weights are sliced only by the ops of ``nas_search.spaces.elastic``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch
from torch import nn

from nas_search.spaces.elastic import ElasticConvNormActivation
from nas_search.tasks.detect.space import ResolvedNeck
from nas_search.tasks.detect.static import ExtraLevel, Neck, NeckBlock, top_down


class ElasticNeckBlock(nn.Module):
    """Elastic residual separable block; mirrors :class:`~nas_search.tasks.detect.static.NeckBlock`."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.depthwise = ElasticConvNormActivation(max_channels, max_channels, 3, depthwise=True)
        self.pointwise = ElasticConvNormActivation(max_channels, max_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pointwise(self.depthwise(x, kernel=3), x.size(1))

    @torch.no_grad()
    def copy_into(self, target: NeckBlock, channels: int) -> None:
        """Copy the active slice into a static block of ``channels`` channels."""
        self.depthwise.copy_into(target.depthwise, channels, channels, kernel=3)
        self.pointwise.copy_into(target.pointwise, channels, channels)


class ElasticExtraLevel(nn.Module):
    """Elastic stride-2 separable block; mirrors :class:`~nas_search.tasks.detect.static.ExtraLevel`."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.depthwise = ElasticConvNormActivation(max_channels, max_channels, 3, 2, depthwise=True)
        self.pointwise = ElasticConvNormActivation(max_channels, max_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x, kernel=3), x.size(1))

    @torch.no_grad()
    def copy_into(self, target: ExtraLevel, channels: int) -> None:
        """Copy the active slice into a static extra level of ``channels`` channels."""
        self.depthwise.copy_into(cast(nn.Sequential, target[0]), channels, channels, kernel=3)
        self.pointwise.copy_into(cast(nn.Sequential, target[1]), channels, channels)


class ElasticNeck(nn.Module):
    """Elastic neck over ``len(max_in_channels)`` levels.

    Args:
        max_in_channels: the largest width of each backbone feature, shallow to deep.
        max_channels: the largest neck width.
        max_depth: the largest number of blocks per level.
        extra_levels: coarser levels appended after the deepest one.

    Set :attr:`active` (a :class:`ResolvedNeck`) before running it.
    """

    def __init__(self, max_in_channels: Sequence[int], max_channels: int, max_depth: int, extra_levels: int = 0) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(
            ElasticConvNormActivation(channels, max_channels, activation=False) for channels in max_in_channels
        )
        self.blocks = nn.ModuleList(
            nn.ModuleList(ElasticNeckBlock(max_channels) for _ in range(max_depth)) for _ in max_in_channels
        )
        self.extras = nn.ModuleList(ElasticExtraLevel(max_channels) for _ in range(extra_levels))
        self.active: ResolvedNeck | None = None

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        neck = cast(ResolvedNeck, self.active)
        fused = top_down([lateral(feature, neck.channels) for lateral, feature in zip(self.laterals, features)])
        outputs = []
        for blocks, x in zip(self.blocks, fused):
            for block in cast(nn.ModuleList, blocks)[: neck.depth]:
                x = block(x)
            outputs.append(x)
        for extra in self.extras[: neck.extra_levels]:
            outputs.append(extra(outputs[-1]))
        return outputs

    @torch.no_grad()
    def copy_into(self, target: Neck, neck: ResolvedNeck) -> None:
        """Copy the active slices of ``neck`` into a static :class:`Neck`."""
        for lateral, static, in_channels in zip(
            cast("Iterable[ElasticConvNormActivation]", self.laterals), target.laterals, neck.in_channels
        ):
            lateral.copy_into(cast(nn.Sequential, static), neck.channels, in_channels)
        for blocks, static_blocks in zip(self.blocks, target.blocks):
            for block, static in zip(
                cast("Iterable[ElasticNeckBlock]", cast(nn.ModuleList, blocks)[: neck.depth]),
                cast(nn.Sequential, static_blocks),
            ):
                block.copy_into(cast(NeckBlock, static), neck.channels)
        for extra, static in zip(cast("Iterable[ElasticExtraLevel]", self.extras), target.extras):
            extra.copy_into(cast(ExtraLevel, static), neck.channels)


__all__ = ["ElasticExtraLevel", "ElasticNeck", "ElasticNeckBlock"]
