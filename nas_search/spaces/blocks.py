"""Elastic blocks: compositions of elastic ops, one class per block op.

Every block takes the input tensor and a :class:`~nas_search.spaces.space.ResolvedBlock`
(the active choice with its channel counts) in ``forward``, and copies its active weights
into the matching static block (``nas_search.spaces.static``) with ``copy_into``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas_search.spaces.elastic import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticConvNormActivation,
    ElasticSlidingChannelConv2d,
    concat_selection,
)
from nas_search.spaces.space import ResolvedBlock
from nas_search.utils import round_channels


class ElasticSqueezeExcite(nn.Module):
    """Elastic squeeze-and-excite; mirrors ``static.SqueezeExcite``."""

    def __init__(self, max_channels: int, max_reduced: int) -> None:
        super().__init__()
        self.reduce = ElasticConv2d(max_channels, max_reduced, bias=True)
        self.expand = ElasticConv2d(max_reduced, max_channels, bias=True)

    def forward(self, x: torch.Tensor, reduced: int) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1)
        gate = F.hardsigmoid(self.expand(F.relu(self.reduce(pooled, reduced)), x.size(1)))
        return x * gate

    @torch.no_grad()
    def copy_into(self, target: nn.Module, channels: int, reduced: int) -> None:
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
        out = self.project(hidden, block.out_channels)
        return out + x if block.residual else out

    @torch.no_grad()
    def copy_into(self, target: nn.Module, block: ResolvedBlock) -> None:
        hidden = block.hidden_channels
        self.expand.copy_into(target.expand, hidden, block.in_channels)
        self.depthwise.copy_into(target.depthwise, hidden, hidden, kernel=block.spec.kernel)
        if block.squeeze_excite_channels:
            self.squeeze_excite.copy_into(target.squeeze_excite, hidden, block.squeeze_excite_channels)
        self.project.copy_into(target.project, block.out_channels, hidden)


class ElasticSeparable(nn.Module):
    """Elastic depthwise kxk -> pointwise; the pointwise is a dense 1x1 (``dsc``) or a
    sliding-channel conv (``scc``)."""

    def __init__(self, max_in: int, max_out: int, stride: int, max_kernel: int, sliding: bool) -> None:
        super().__init__()
        self.sliding = sliding
        self.depthwise = ElasticConvNormActivation(max_in, max_in, max_kernel, stride, depthwise=True)
        self.pointwise: nn.Module = ElasticSlidingChannelConv2d(max_in, max_out) if sliding else ElasticConv2d(max_in, max_out)
        self.norm = ElasticBatchNorm2d(max_out)

    def share_weights_with(self, dense: "ElasticSeparable") -> None:
        """Make this sliding-channel block a structured pruning of the dense block ``dense``
        at the same position: one depthwise conv, one norm, and windows of one 1x1 weight."""
        if not self.sliding or dense.sliding:
            raise ValueError("only a sliding-channel block shares the weights of a dense separable block")
        self.depthwise = dense.depthwise
        self.norm = dense.norm
        self.pointwise.share_dense_weight(dense.pointwise)

    def _pointwise(self, x: torch.Tensor, block: ResolvedBlock) -> torch.Tensor:
        if self.sliding:
            return self.pointwise(x, block.out_channels, block.spec.groups, block.spec.overlap)
        return self.pointwise(x, block.out_channels)

    def forward(self, x: torch.Tensor, block: ResolvedBlock) -> torch.Tensor:
        out = F.relu(self.norm(self._pointwise(self.depthwise(x, kernel=block.spec.kernel), block)), inplace=True)
        return out + x if block.residual else out

    @torch.no_grad()
    def copy_into(self, target: nn.Module, block: ResolvedBlock) -> None:
        channels = block.in_channels
        self.depthwise.copy_into(target.depthwise, channels, channels, kernel=block.spec.kernel)
        if self.sliding:
            self.pointwise.copy_into(target.pointwise[0], channels, block.out_channels, block.spec.groups, block.spec.overlap)
        else:
            self.pointwise.copy_into(target.pointwise[0], block.out_channels, channels)
        self.norm.copy_into(target.pointwise[1], block.out_channels)


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

    def forward(self, x: torch.Tensor, squeeze: int, in_selection=None) -> torch.Tensor:
        squeezed = self.squeeze(x, squeeze, in_selection)
        separable = self.expand_separable(self.expand_depthwise(squeezed, kernel=3), 4 * squeeze)
        return torch.cat([self.expand_pointwise(squeezed, 4 * squeeze), separable], dim=1)

    @torch.no_grad()
    def copy_into(self, target: nn.Module, squeeze: int, in_selection) -> None:
        self.squeeze.copy_into(target.squeeze, squeeze, in_selection)
        self.expand_pointwise.copy_into(target.expand_pointwise, 4 * squeeze, squeeze)
        self.expand_depthwise.copy_into(target.expand_separable[0], squeeze, squeeze, kernel=3)
        self.expand_separable.copy_into(target.expand_separable[1], 4 * squeeze, squeeze)


class ElasticSlimModule(nn.Module):
    """Elastic Slim-CNN slim module; mirrors ``static.SlimModule``."""

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
        return self.pointwise(out, block.out_channels, concat)

    @torch.no_grad()
    def copy_into(self, target: nn.Module, block: ResolvedBlock) -> None:
        squeeze = block.hidden_channels
        concat = self._concat(squeeze)
        self.first.copy_into(target.first, squeeze, block.in_channels)
        self.second.copy_into(target.second, squeeze, concat)
        self.skip.copy_into(target.skip, concat, block.in_channels)
        self.depthwise.copy_into(target.depthwise, concat, concat, kernel=block.spec.kernel)
        self.pointwise.copy_into(target.pointwise, block.out_channels, concat)


#: Block kinds that are built on the weights of another kind at the same position
#: (``kind: base``): a sliding-channel block is a depthwise-separable block whose 1x1 keeps
#: only its windows, so ``scc`` and ``dsc`` train one depthwise, norm and 1x1 weight. Without
#: this, every kind of a position is a separate network, and a subnet that mixes kinds
#: inherits weights that were never trained together (see benchmarks/RESULTS.md).
SHARED_BLOCK_WEIGHTS: dict[str, str] = {"scc": "dsc"}


def elastic_block_choices(
    operations: tuple[str, ...], max_in: int, max_out: int, stride: int, max_kernel: int, max_expansion: float
) -> nn.ModuleDict:
    """The elastic blocks of one supernet position, one per allowed op, with the weight
    sharing of :data:`SHARED_BLOCK_WEIGHTS` applied."""
    blocks = {op: ELASTIC_BLOCKS[op](max_in, max_out, stride, max_kernel, max_expansion) for op in operations}
    for kind, base in SHARED_BLOCK_WEIGHTS.items():
        if kind in blocks and base in blocks:
            blocks[kind].share_weights_with(blocks[base])
    return nn.ModuleDict(blocks)


#: Elastic block factory per op: (max_in, max_out, stride, max_kernel, max_expansion) -> module.
ELASTIC_BLOCKS: dict[str, Callable[[int, int, int, int, float], nn.Module]] = {
    "mbconv": lambda max_in, max_out, stride, kernel, expansion: ElasticInvertedResidual(
        max_in, max_out, stride, kernel, expansion
    ),
    "dsc": lambda max_in, max_out, stride, kernel, expansion: ElasticSeparable(max_in, max_out, stride, kernel, False),
    "scc": lambda max_in, max_out, stride, kernel, expansion: ElasticSeparable(max_in, max_out, stride, kernel, True),
    "slim": lambda max_in, max_out, stride, kernel, expansion: ElasticSlimModule(max_in, max_out, stride, kernel),
}
