"""``mbconv``: the inverted residual (MobileNetV2/V3), 1x1 expand -> depthwise kxk ->
optional squeeze-excite -> 1x1 linear project: its standalone and elastic block classes and
its ``BlockKind``.

Elastic blocks take the input tensor and a :class:`~nas_search.spaces.resolved.ResolvedBlock`
(the active choice with its channel counts) in ``forward`` and copy their active weights
into the standalone block with ``copy_into``; the standalone block is a plain module with
physically sized tensors (what an extracted network is made of, and a latency part).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from nas_search.spaces.elastic import ElasticConv2d, ElasticConvNormActivation
from nas_search.spaces.ops.base import BlockChoice, BlockKind, ChannelOrder, permute_conv_input, permute_norm, permute_rows
from nas_search.spaces.ops.costs import (
    Cost,
    LayerCost,
    TensorProgram,
    append_convolution,
    conv,
    conv_norm,
    elementwise,
    linear,
    output_size,
    pooling,
)
from nas_search.spaces.resolved import ResolvedBlock, scaled_channels
from nas_search.spaces.static_blocks import conv_norm_activation
from nas_search.spec import BLOCK_RULES, BlockSpec
from nas_search.utils import round_channels


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
        return x * cast(torch.Tensor, self.gate(self.expand(self.activation(self.reduce(self.pool(x))))))


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
        out: torch.Tensor = self.project(self.squeeze_excite(self.depthwise(self.expand(x))))
        return out + x if self.residual else out


class ElasticSqueezeExcite(nn.Module):
    """Elastic squeeze-and-excite; mirrors :class:`SqueezeExcite`."""

    def __init__(self, max_channels: int, max_reduced: int) -> None:
        super().__init__()
        self.reduce = ElasticConv2d(max_channels, max_reduced, bias=True)
        self.expand = ElasticConv2d(max_reduced, max_channels, bias=True)

    def forward(self, x: torch.Tensor, reduced: int) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1)
        gate = F.hardsigmoid(self.expand(F.relu(self.reduce(pooled, reduced)), x.size(1)))
        return x * gate

    @torch.no_grad()
    def copy_into(self, target: SqueezeExcite, channels: int, reduced: int) -> None:
        self.reduce.copy_into(target.reduce, reduced, channels)
        self.expand.copy_into(target.expand, channels, reduced)


class ElasticInvertedResidual(nn.Module):
    """Elastic MBConv: 1x1 expand -> depthwise kxk -> [SE] -> 1x1 project."""

    def __init__(self, max_in: int, max_out: int, stride: int, max_kernel: int, max_expansion: float) -> None:
        super().__init__()
        max_hidden = round_channels(max_in * max_expansion, 8)
        self.expand = ElasticConvNormActivation(max_in, max_hidden)
        self.depthwise = ElasticConvNormActivation(max_hidden, max_hidden, max_kernel, stride, depthwise=True)
        self.squeeze_excite = ElasticSqueezeExcite(max_hidden, round_channels(max_hidden / 4, 8))
        self.project = ElasticConvNormActivation(max_hidden, max_out, activation=False)

    def forward(self, x: torch.Tensor, block: ResolvedBlock) -> torch.Tensor:
        hidden = self.depthwise(self.expand(x, block.hidden_channels), kernel=block.spec.kernel)
        if block.squeeze_excite_channels:
            hidden = self.squeeze_excite(hidden, block.squeeze_excite_channels)
        out: torch.Tensor = self.project(hidden, block.out_channels)
        return out + x if block.residual else out

    @torch.no_grad()
    def copy_into(self, target: InvertedResidual, block: ResolvedBlock) -> None:
        hidden = block.hidden_channels
        self.expand.copy_into(target.expand, hidden, block.in_channels)
        self.depthwise.copy_into(target.depthwise, hidden, hidden, kernel=block.spec.kernel)
        if block.squeeze_excite_channels:
            self.squeeze_excite.copy_into(cast(SqueezeExcite, target.squeeze_excite), hidden, block.squeeze_excite_channels)
        self.project.copy_into(target.project, block.out_channels, hidden)


def hidden_channels(block: BlockSpec, in_channels: int, out_channels: int, divisor: int) -> int:
    """The expanded width: ``in * expansion`` rounded to the divisor."""
    return scaled_channels(in_channels * block.expansion, 1.0, divisor)


def cost(block: ResolvedBlock, size: int) -> tuple[Cost, int]:
    """FLOPs and parameters at input ``size``, and the output size."""
    hidden, out_size = block.hidden_channels, output_size(size, block.spec.kernel, block.stride)
    total = conv_norm(block.in_channels, hidden, 1, size)
    total += conv_norm(hidden, hidden, block.spec.kernel, out_size, groups=hidden)
    if block.squeeze_excite_channels:
        reduced = block.squeeze_excite_channels
        total += Cost(hidden * out_size * out_size, 0)  # adaptive average pool
        total += conv(hidden, reduced, 1, 1, bias=True)
        total += conv(reduced, hidden, 1, 1, bias=True)
    total += conv_norm(hidden, block.out_channels, 1, out_size)
    return total, out_size


def layers(block: ResolvedBlock, stage: int, size: int) -> tuple[list[LayerCost], int]:
    """The kernels a runtime launches, and the output size."""
    listing: list[LayerCost] = []
    hidden = block.hidden_channels
    append_convolution(listing, stage, block.in_channels, hidden, 1, size)
    out_size = append_convolution(listing, stage, hidden, hidden, block.spec.kernel, size, block.stride, groups=hidden)
    if block.squeeze_excite_channels:
        reduced = block.squeeze_excite_channels
        listing.append(pooling(stage=stage, channels=hidden, in_size=out_size, out_size=1))
        listing.append(linear(stage=stage, in_features=hidden, out_features=reduced))
        listing.append(linear(stage=stage, in_features=reduced, out_features=hidden))
        listing.append(elementwise("multiply", stage=stage, channels=hidden, size=out_size, inputs=2))
    append_convolution(listing, stage, hidden, block.out_channels, 1, out_size)
    if block.residual:
        listing.append(elementwise("add", stage=stage, channels=block.out_channels, size=out_size, inputs=2))
    return listing, out_size


def program(tensors: TensorProgram, block: ResolvedBlock, source: str, size: int, prefix: str) -> tuple[str, int]:
    """Append the fused layers to a tensor program; returns the output tensor and size."""
    hidden = block.hidden_channels
    out_size = output_size(size, block.spec.kernel, block.stride)
    expanded = tensors.add(f"{prefix}.expand", (source,), hidden * size * size)
    current = tensors.add(f"{prefix}.depthwise", (expanded,), hidden * out_size * out_size)
    if block.squeeze_excite_channels:
        pooled = tensors.add(f"{prefix}.se_pool", (current,), hidden)
        reduced = tensors.add(f"{prefix}.se_reduce", (pooled,), block.squeeze_excite_channels)
        gate = tensors.add(f"{prefix}.se_expand", (reduced,), hidden)
        current = tensors.add(f"{prefix}.se_scale", (current, gate), hidden * out_size * out_size)
    current = tensors.add(f"{prefix}.project", (current,), block.out_channels * out_size * out_size)
    if block.residual:
        current = tensors.add(f"{prefix}.add", (current, source), block.out_channels * out_size * out_size)
    return current, out_size


def sort_hidden(block: ElasticInvertedResidual) -> None:
    """Sort the hidden channels by the L1 norm of the projection weights that read them."""
    importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
    order = torch.argsort(importance, descending=True)
    permute_rows(block.expand.conv.weight, order)
    permute_norm(block.expand.norm, order)
    permute_rows(block.depthwise.conv.weight, order)
    permute_norm(block.depthwise.norm, order)
    permute_conv_input(block.squeeze_excite.reduce, order)
    permute_rows(block.squeeze_excite.expand.weight, order)
    permute_rows(cast(torch.Tensor, block.squeeze_excite.expand.bias), order)
    permute_conv_input(block.project.conv, order)


def _output_norm(block: ElasticInvertedResidual) -> nn.BatchNorm2d:
    return block.project.norm


def _permute_output(block: ElasticInvertedResidual, order: torch.Tensor) -> None:
    permute_rows(block.project.conv.weight, order)
    permute_norm(block.project.norm, order)


def _permute_input(block: ElasticInvertedResidual, order: torch.Tensor) -> None:
    permute_conv_input(block.expand.conv, order)


MBCONV = BlockKind(
    rules=BLOCK_RULES["mbconv"],
    cost_rank=3,
    hidden_channels=hidden_channels,
    elastic_block=ElasticInvertedResidual,
    static_block=InvertedResidual,
    cost=cost,
    layers=layers,
    program=program,
    choices=(
        BlockChoice("expansion", "expansion", lambda space, stage: stage.expansions, biased=True, neighbour_moves=True),
        BlockChoice("squeeze_excite", "se", lambda space, stage: space.squeeze_excite, biased=True),
    ),
    channel_order=ChannelOrder(_output_norm, _permute_output, _permute_input, sort_hidden),
)
