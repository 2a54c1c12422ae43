"""``dsc``: the depthwise-separable block, depthwise kxk -> dense pointwise 1x1: its
standalone and elastic block classes (also ``scc``'s, with a sliding-channel pointwise)
and its ``BlockKind``.

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

from nas_search.spaces.elastic import ElasticBatchNorm2d, ElasticConv2d, ElasticConvNormActivation, ElasticSlidingChannelConv2d
from nas_search.spaces.ops.base import BlockKind, ChannelOrder, permute_conv_input, permute_norm, permute_rows
from nas_search.spaces.ops.costs import Cost, LayerCost, TensorProgram, append_convolution, conv_norm, elementwise, output_size
from nas_search.spaces.resolved import ResolvedBlock
from nas_search.spaces.scc.conv import SlidingChannelConv2d
from nas_search.spaces.static_blocks import Activation, conv_norm_activation
from nas_search.spec import BLOCK_RULES, BlockSpec


class SeparableBlock(nn.Module):
    """Depthwise kxk -> pointwise: a dense 1x1 (``dsc``), or with ``sliding`` a
    sliding-channel conv of the block's channel groups and overlap (``scc``)."""

    def __init__(self, block: ResolvedBlock, sliding: bool = False) -> None:
        super().__init__()
        channels = block.in_channels
        self.depthwise = conv_norm_activation(channels, channels, block.spec.kernel, block.stride, groups=channels)
        if sliding:
            pointwise: nn.Module = SlidingChannelConv2d(channels, block.out_channels, block.spec.groups, block.spec.overlap)
        else:
            pointwise = nn.Conv2d(channels, block.out_channels, 1, bias=False)
        self.pointwise = nn.Sequential(pointwise, nn.BatchNorm2d(block.out_channels), Activation(inplace=True))
        self.residual = block.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.pointwise(self.depthwise(x))
        return out + x if self.residual else out


class ElasticSeparable(nn.Module):
    """Elastic depthwise kxk -> pointwise; the pointwise is a dense 1x1 (``dsc``) or a
    sliding-channel conv (``scc``)."""

    def __init__(self, max_in: int, max_out: int, stride: int, max_kernel: int, sliding: bool) -> None:
        super().__init__()
        self.sliding = sliding
        self.depthwise = ElasticConvNormActivation(max_in, max_in, max_kernel, stride, depthwise=True)
        self.pointwise: ElasticSlidingChannelConv2d | ElasticConv2d = (
            ElasticSlidingChannelConv2d(max_in, max_out) if sliding else ElasticConv2d(max_in, max_out)
        )
        self.norm = ElasticBatchNorm2d(max_out)

    def share_weights_with(self, dense: ElasticSeparable) -> None:
        """Make this sliding-channel block a structured pruning of the dense block ``dense``
        at the same position: one depthwise conv, one norm, and windows of one 1x1 weight."""
        if not self.sliding or dense.sliding:
            raise ValueError("only a sliding-channel block shares the weights of a dense separable block")
        self.depthwise = dense.depthwise
        self.norm = dense.norm
        cast(ElasticSlidingChannelConv2d, self.pointwise).share_dense_weight(cast(ElasticConv2d, dense.pointwise))

    def _pointwise(self, x: torch.Tensor, block: ResolvedBlock) -> torch.Tensor:
        if self.sliding:
            return cast(torch.Tensor, self.pointwise(x, block.out_channels, block.spec.groups, block.spec.overlap))
        return cast(torch.Tensor, self.pointwise(x, block.out_channels))

    def forward(self, x: torch.Tensor, block: ResolvedBlock) -> torch.Tensor:
        out = F.relu(self.norm(self._pointwise(self.depthwise(x, kernel=block.spec.kernel), block)), inplace=True)
        return out + x if block.residual else out

    @torch.no_grad()
    def copy_into(self, target: SeparableBlock, block: ResolvedBlock) -> None:
        channels = block.in_channels
        self.depthwise.copy_into(target.depthwise, channels, channels, kernel=block.spec.kernel)
        if self.sliding:
            cast(ElasticSlidingChannelConv2d, self.pointwise).copy_into(
                target.pointwise[0], channels, block.out_channels, block.spec.groups, block.spec.overlap
            )
        else:
            cast(ElasticConv2d, self.pointwise).copy_into(cast(nn.Conv2d, target.pointwise[0]), block.out_channels, channels)
        self.norm.copy_into(cast(nn.BatchNorm2d, target.pointwise[1]), block.out_channels)


def input_width(block: BlockSpec, in_channels: int, out_channels: int, divisor: int) -> int:
    """A separable block's hidden width is its input width (the depthwise conv's)."""
    return in_channels


def cost(block: ResolvedBlock, size: int) -> tuple[Cost, int]:
    """FLOPs and parameters at input ``size``, and the output size."""
    channels, out_size = block.in_channels, output_size(size, block.spec.kernel, block.stride)
    total = conv_norm(channels, channels, block.spec.kernel, out_size, groups=channels)
    total += conv_norm(channels, block.out_channels, 1, out_size)
    return total, out_size


def layers(block: ResolvedBlock, stage: int, size: int) -> tuple[list[LayerCost], int]:
    """The kernels a runtime launches, and the output size."""
    listing: list[LayerCost] = []
    channels = block.in_channels
    out_size = append_convolution(listing, stage, channels, channels, block.spec.kernel, size, block.stride, groups=channels)
    append_convolution(listing, stage, channels, block.out_channels, 1, out_size)
    if block.residual:
        listing.append(elementwise("add", stage=stage, channels=block.out_channels, size=out_size, inputs=2))
    return listing, out_size


def program(tensors: TensorProgram, block: ResolvedBlock, source: str, size: int, prefix: str) -> tuple[str, int]:
    """Append the fused layers to a tensor program (also the ``scc`` block's: the same
    tensors, whatever its pointwise computes); returns the output tensor and size."""
    out_size = output_size(size, block.spec.kernel, block.stride)
    current = tensors.add(f"{prefix}.depthwise", (source,), block.in_channels * out_size * out_size)
    current = tensors.add(f"{prefix}.pointwise", (current,), block.out_channels * out_size * out_size)
    if block.residual:
        current = tensors.add(f"{prefix}.add", (current, source), block.out_channels * out_size * out_size)
    return current, out_size


def elastic_block(max_in: int, max_out: int, stride: int, max_kernel: int, max_expansion: float) -> nn.Module:
    """The elastic block with a dense pointwise."""
    return ElasticSeparable(max_in, max_out, stride, max_kernel, False)


def _output_norm(block: ElasticSeparable) -> nn.BatchNorm2d:
    return block.norm


def _permute_output(block: ElasticSeparable, order: torch.Tensor) -> None:
    permute_rows(block.pointwise.weight, order)
    permute_norm(block.norm, order)


def _permute_input(block: ElasticSeparable, order: torch.Tensor) -> None:
    permute_rows(block.depthwise.conv.weight, order)
    permute_norm(block.depthwise.norm, order)
    permute_conv_input(block.pointwise, order)


DSC = BlockKind(
    rules=BLOCK_RULES["dsc"],
    cost_rank=1,
    hidden_channels=input_width,
    elastic_block=elastic_block,
    static_block=SeparableBlock,
    cost=cost,
    layers=layers,
    program=program,
    channel_order=ChannelOrder(_output_norm, _permute_output, _permute_input),
)
