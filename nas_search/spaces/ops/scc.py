"""``scc``: the sliding-channel block (DSXplore), the ``dsc`` block with its 1x1 pruned to
cyclic windows of ``in / groups`` channels; in the supernet it shares every weight of the
``dsc`` block at the same position."""

from __future__ import annotations

import functools

from torch import nn

from nas_search.spaces.ops.base import BlockChoice, BlockKind
from nas_search.spaces.ops.costs import Cost, LayerCost, append_convolution, batch_norm, conv_norm, elementwise, output_size
from nas_search.spaces.ops.dsc import ElasticSeparable, SeparableBlock, input_width
from nas_search.spaces.ops.dsc import program as separable_program
from nas_search.spaces.resolved import ResolvedBlock
from nas_search.spec import BLOCK_RULES, BlockSpec


def cost(block: ResolvedBlock, size: int) -> tuple[Cost, int]:
    """FLOPs and parameters at input ``size`` (the sliding 1x1 counts ``out * in / cg``
    weights), and the output size."""
    channels, out_size = block.in_channels, output_size(size, block.spec.kernel, block.stride)
    total = conv_norm(channels, channels, block.spec.kernel, out_size, groups=channels)
    window = channels // block.spec.groups
    total += Cost(block.out_channels * window * out_size * out_size, block.out_channels * window)
    total += batch_norm(block.out_channels, out_size)
    return total, out_size


def layers(block: ResolvedBlock, stage: int, size: int) -> tuple[list[LayerCost], int]:
    """The kernels a runtime launches (the sliding 1x1 as a grouped pointwise), and the output size."""
    listing: list[LayerCost] = []
    channels = block.in_channels
    out_size = append_convolution(listing, stage, channels, channels, block.spec.kernel, size, block.stride, groups=channels)
    window = channels // block.spec.groups
    listing.append(
        LayerCost(
            "grouped_pointwise",
            stage,
            block.out_channels * window * out_size * out_size,
            block.out_channels * window,
            (channels + block.out_channels) * out_size * out_size,
        )
    )
    if block.residual:
        listing.append(elementwise("add", stage=stage, channels=block.out_channels, size=out_size, inputs=2))
    return listing, out_size


def elastic_block(max_in: int, max_out: int, stride: int, max_kernel: int, max_expansion: float) -> nn.Module:
    """The elastic block with a sliding-channel pointwise."""
    return ElasticSeparable(max_in, max_out, stride, max_kernel, True)


def check_channels(block: BlockSpec, in_channels: int) -> str | None:
    """The channel groups must divide the input width."""
    if in_channels % block.groups:
        return (
            f"scc groups={block.groups} does not divide its {in_channels} input channels; "
            f"allowed: a groups value dividing {in_channels}"
        )
    return None


SCC = BlockKind(
    rules=BLOCK_RULES["scc"],
    cost_rank=0,
    hidden_channels=input_width,
    elastic_block=elastic_block,
    static_block=functools.partial(SeparableBlock, sliding=True),
    cost=cost,
    layers=layers,
    program=separable_program,
    choices=(
        BlockChoice("groups", "groups", lambda space, stage: space.scc_groups, largest=min),
        BlockChoice("overlap", "overlap", lambda space, stage: space.scc_overlaps),
    ),
    shares_weights_with="dsc",
    check_channels=check_channels,
)
