"""``slim``: the Slim-CNN slim module, two SSE blocks (1x1 squeeze to ``f``, then a 1x1 and
a depthwise-separable 3x3 expand branch of ``4f`` each, concatenated) plus a projected 1x1
skip, then a depthwise-separable kxk conv that carries the stride: its standalone and
elastic block classes and its ``BlockKind``.

Elastic blocks take the input tensor and a :class:`~nas_search.spaces.resolved.ResolvedBlock`
(the active choice with its channel counts) in ``forward`` and copy their active weights
into the standalone block with ``copy_into``; the standalone block is a plain module with
physically sized tensors (what an extracted network is made of, and a latency part).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from nas_search.spaces.elastic import ElasticConvNormActivation, Selection, concat_selection
from nas_search.spaces.ops.base import BlockKind, ChannelOrder, permute_conv_input, permute_norm, permute_rows
from nas_search.spaces.ops.costs import Cost, LayerCost, TensorProgram, append_convolution, conv_norm, elementwise, output_size
from nas_search.spaces.resolved import ResolvedBlock
from nas_search.spaces.static_blocks import conv_norm_activation
from nas_search.spec import BLOCK_RULES, BlockSpec


class SqueezeExpand(nn.Module):
    """Slim-CNN SSE block: 1x1 squeeze to f, then two parallel expand branches to 4f each
    (a 1x1 conv and a depthwise-separable 3x3), concatenated to 8f."""

    def __init__(self, in_channels: int, squeeze: int) -> None:
        super().__init__()
        self.squeeze = conv_norm_activation(in_channels, squeeze)
        self.expand_pointwise = conv_norm_activation(squeeze, 4 * squeeze)
        self.expand_separable = nn.Sequential(
            conv_norm_activation(squeeze, squeeze, 3, groups=squeeze), conv_norm_activation(squeeze, 4 * squeeze)
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
        return cast(torch.Tensor, self.pointwise(self.depthwise(out)))


class ElasticSqueezeExpand(nn.Module):
    """Elastic SSE block. Its output concatenates two branches of ``4f`` channels; in the
    shared weights each branch owns ``4 * max_f`` positions, so the active output channels
    are ``concat_selection(4f, 4 * max_f)``."""

    def __init__(self, max_in: int, max_squeeze: int) -> None:
        super().__init__()
        self.squeeze = ElasticConvNormActivation(max_in, max_squeeze)
        self.expand_pointwise = ElasticConvNormActivation(max_squeeze, 4 * max_squeeze)
        self.expand_depthwise = ElasticConvNormActivation(max_squeeze, max_squeeze, 3, depthwise=True)
        self.expand_separable = ElasticConvNormActivation(max_squeeze, 4 * max_squeeze)

    def forward(self, x: torch.Tensor, squeeze: int, in_selection: Selection | None = None) -> torch.Tensor:
        squeezed = self.squeeze(x, squeeze, in_selection)
        separable = self.expand_separable(self.expand_depthwise(squeezed, kernel=3), 4 * squeeze)
        return torch.cat([self.expand_pointwise(squeezed, 4 * squeeze), separable], dim=1)

    @torch.no_grad()
    def copy_into(self, target: SqueezeExpand, squeeze: int, in_selection: Selection) -> None:
        self.squeeze.copy_into(target.squeeze, squeeze, in_selection)
        self.expand_pointwise.copy_into(target.expand_pointwise, 4 * squeeze, squeeze)
        self.expand_depthwise.copy_into(cast(nn.Sequential, target.expand_separable[0]), squeeze, squeeze, kernel=3)
        self.expand_separable.copy_into(cast(nn.Sequential, target.expand_separable[1]), 4 * squeeze, squeeze)


class ElasticSlimModule(nn.Module):
    """Elastic Slim-CNN slim module; mirrors :class:`SlimModule`."""

    def __init__(self, max_in: int, max_out: int, stride: int, max_kernel: int) -> None:
        super().__init__()
        self.max_squeeze = max_out // 8
        concat = 8 * self.max_squeeze
        self.first = ElasticSqueezeExpand(max_in, self.max_squeeze)
        self.second = ElasticSqueezeExpand(concat, self.max_squeeze)
        self.skip = ElasticConvNormActivation(max_in, concat, activation=False)
        self.depthwise = ElasticConvNormActivation(concat, concat, max_kernel, stride, depthwise=True)
        self.pointwise = ElasticConvNormActivation(concat, max_out)

    def _concat(self, squeeze: int) -> torch.Tensor:
        return concat_selection(4 * squeeze, 4 * self.max_squeeze)

    def forward(self, x: torch.Tensor, block: ResolvedBlock) -> torch.Tensor:
        squeeze = block.hidden_channels
        concat = self._concat(squeeze)
        out = self.second(self.first(x, squeeze), squeeze, concat) + self.skip(x, concat)
        out = self.depthwise(out, in_selection=concat, kernel=block.spec.kernel)
        return cast(torch.Tensor, self.pointwise(out, block.out_channels, concat))

    @torch.no_grad()
    def copy_into(self, target: SlimModule, block: ResolvedBlock) -> None:
        squeeze = block.hidden_channels
        concat = self._concat(squeeze)
        self.first.copy_into(target.first, squeeze, block.in_channels)
        self.second.copy_into(target.second, squeeze, concat)
        self.skip.copy_into(target.skip, concat, block.in_channels)
        self.depthwise.copy_into(target.depthwise, concat, concat, kernel=block.spec.kernel)
        self.pointwise.copy_into(target.pointwise, block.out_channels, concat)


def hidden_channels(block: BlockSpec, in_channels: int, out_channels: int, divisor: int) -> int:
    """The squeeze width ``f = out / 8``, so that the two ``4f`` branches concatenate to ``out``."""
    return out_channels // 8


def _squeeze_expand_cost(in_channels: int, squeeze: int, size: int) -> Cost:
    total = conv_norm(in_channels, squeeze, 1, size)
    total += conv_norm(squeeze, 4 * squeeze, 1, size)
    total += conv_norm(squeeze, squeeze, 3, size, groups=squeeze)
    total += conv_norm(squeeze, 4 * squeeze, 1, size)
    return total


def cost(block: ResolvedBlock, size: int) -> tuple[Cost, int]:
    """FLOPs and parameters at input ``size``, and the output size."""
    squeeze, out_channels = block.hidden_channels, block.out_channels
    out_size = output_size(size, block.spec.kernel, block.stride)
    total = _squeeze_expand_cost(block.in_channels, squeeze, size)
    total += _squeeze_expand_cost(8 * squeeze, squeeze, size)
    total += conv_norm(block.in_channels, out_channels, 1, size)
    total += conv_norm(out_channels, out_channels, block.spec.kernel, out_size, groups=out_channels)
    total += conv_norm(out_channels, out_channels, 1, out_size)
    return total, out_size


def _squeeze_expand_layers(listing: list[LayerCost], stage: int, in_channels: int, squeeze: int, size: int) -> None:
    append_convolution(listing, stage, in_channels, squeeze, 1, size)
    append_convolution(listing, stage, squeeze, 4 * squeeze, 1, size)
    append_convolution(listing, stage, squeeze, squeeze, 3, size, groups=squeeze)
    append_convolution(listing, stage, squeeze, 4 * squeeze, 1, size)
    listing.append(elementwise("shuffle", stage=stage, channels=8 * squeeze, size=size, inputs=0))  # concatenation


def layers(block: ResolvedBlock, stage: int, size: int) -> tuple[list[LayerCost], int]:
    """The kernels a runtime launches, and the output size."""
    listing: list[LayerCost] = []
    squeeze, out_channels = block.hidden_channels, block.out_channels
    _squeeze_expand_layers(listing, stage, block.in_channels, squeeze, size)
    _squeeze_expand_layers(listing, stage, 8 * squeeze, squeeze, size)
    append_convolution(listing, stage, block.in_channels, out_channels, 1, size)
    listing.append(elementwise("add", stage=stage, channels=out_channels, size=size, inputs=2))
    out_size = append_convolution(
        listing, stage, out_channels, out_channels, block.spec.kernel, size, block.stride, groups=out_channels
    )
    append_convolution(listing, stage, out_channels, out_channels, 1, out_size)
    return listing, out_size


def _squeeze_expand_program(tensors: TensorProgram, source: str, squeeze: int, size: int, prefix: str) -> str:
    pixels = size * size
    squeezed = tensors.add(f"{prefix}.squeeze", (source,), squeeze * pixels)
    pointwise = tensors.add(f"{prefix}.expand_pointwise", (squeezed,), 4 * squeeze * pixels)
    depthwise = tensors.add(f"{prefix}.expand_depthwise", (squeezed,), squeeze * pixels)
    separable = tensors.add(f"{prefix}.expand_separable", (depthwise,), 4 * squeeze * pixels)
    return tensors.add(f"{prefix}.concat", (pointwise, separable), 8 * squeeze * pixels)


def program(tensors: TensorProgram, block: ResolvedBlock, source: str, size: int, prefix: str) -> tuple[str, int]:
    """Append the fused layers to a tensor program; returns the output tensor and size."""
    squeeze, out_channels = block.hidden_channels, block.out_channels
    out_size = output_size(size, block.spec.kernel, block.stride)
    first = _squeeze_expand_program(tensors, source, squeeze, size, f"{prefix}.first")
    second = _squeeze_expand_program(tensors, first, squeeze, size, f"{prefix}.second")
    skip = tensors.add(f"{prefix}.skip", (source,), out_channels * size * size)
    current = tensors.add(f"{prefix}.add", (second, skip), out_channels * size * size)
    current = tensors.add(f"{prefix}.depthwise", (current,), out_channels * out_size * out_size)
    current = tensors.add(f"{prefix}.pointwise", (current,), out_channels * out_size * out_size)
    return current, out_size


def elastic_block(max_in: int, max_out: int, stride: int, max_kernel: int, max_expansion: float) -> nn.Module:
    """The elastic slim module (it has no expansion)."""
    return ElasticSlimModule(max_in, max_out, stride, max_kernel)


def _output_norm(block: ElasticSlimModule) -> nn.BatchNorm2d:
    return block.pointwise.norm


def _permute_output(block: ElasticSlimModule, order: torch.Tensor) -> None:
    permute_rows(block.pointwise.conv.weight, order)
    permute_norm(block.pointwise.norm, order)


def _permute_input(block: ElasticSlimModule, order: torch.Tensor) -> None:
    permute_conv_input(block.first.squeeze.conv, order)
    permute_conv_input(block.skip.conv, order)


SLIM = BlockKind(
    rules=BLOCK_RULES["slim"],
    cost_rank=2,
    hidden_channels=hidden_channels,
    elastic_block=elastic_block,
    static_block=SlimModule,
    cost=cost,
    layers=layers,
    program=program,
    identity_residual=False,
    channel_order=ChannelOrder(_output_norm, _permute_output, _permute_input),
)
