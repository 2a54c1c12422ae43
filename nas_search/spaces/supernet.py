"""The weight-sharing supernet (supergraph).

Every block position of every stage holds one elastic block per allowed op (slim module,
depthwise-separable, sliding-channel, inverted residual); each is elastic in kernel and
width. The sliding-channel block of a position is the depthwise-separable block with its
1x1 pruned to windows: the two share every weight (``BlockKind.shares_weights_with``).
:meth:`Supernet.activate` selects a subnet by its :class:`ArchSpec`, ``forward`` runs it,
and :meth:`Supernet.extract` returns a standalone static network holding copies of the
active weights.

Example::

    space = get_space("cifar")
    supernet = Supernet(space)
    spec = space.sample(random.Random(0))
    supernet.activate(spec)
    logits = supernet(images)
    model = supernet.extract(spec)          # plain nn.Module, same outputs in eval mode
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nas_search.spaces.elastic import ElasticConvNormActivation, ElasticLinear
from nas_search.spaces.ops import block_kind
from nas_search.spaces.ops.base import ChannelOrder, permute_conv_input
from nas_search.spaces.space import ResolvedNetwork, SearchSpace
from nas_search.spaces.static import StaticNetwork
from nas_search.spec import ArchSpec


def elastic_block_choices(
    operations: tuple[str, ...], max_in: int, max_out: int, stride: int, max_kernel: int, max_expansion: float
) -> nn.ModuleDict:
    """The elastic blocks of one supernet position, one per allowed op (``BlockKind.elastic_block``),
    each op built on the weights of the op it shares them with (``BlockKind.shares_weights_with``)
    when that op is allowed too: a sliding-channel block is a depthwise-separable block whose
    1x1 keeps only its windows, so ``scc`` and ``dsc`` train one depthwise, norm and 1x1
    weight. Without this, every op of a position is a separate network, and a subnet that
    mixes ops inherits weights that were never trained together (see benchmarks/RESULTS.md)."""
    blocks = {op: block_kind(op).elastic_block(max_in, max_out, stride, max_kernel, max_expansion) for op in operations}
    for op, block in blocks.items():
        base = block_kind(op).shares_weights_with
        if base is not None and base in blocks:
            cast(Any, block).share_weights_with(blocks[base])  # an op with `shares_weights_with` has the method
    return nn.ModuleDict(blocks)


class Supernet(nn.Module):
    """A supernet for one :class:`SearchSpace`.

    Args:
        space: the search space.
        num_classes: classifier outputs (defaults to the space's).
        dropout: dropout before the classifier.
    """

    def __init__(self, space: SearchSpace, num_classes: int | None = None, dropout: float | None = None) -> None:
        super().__init__()
        self.space = space
        self.num_classes = space.num_classes if num_classes is None else num_classes
        self.dropout = space.dropout if dropout is None else dropout
        self.stem = ElasticConvNormActivation(3, space.stem_channels, 3, space.stem_stride)
        stages: list[nn.ModuleList] = [nn.ModuleList() for _ in space.stages]
        for stage_index, block_index, max_in, max_out in space.max_block_channels():
            choices = space.stages[stage_index]
            stride = choices.stride if block_index == 0 else 1
            stages[stage_index].append(
                elastic_block_choices(
                    choices.operations, max_in, max_out, stride, max(choices.kernels), max(choices.expansions)
                )
            )
        self.stages = nn.ModuleList(stages)
        self.head = ElasticConvNormActivation(space.stages[-1].max_channels, space.head_channels)
        self.classifier = ElasticLinear(space.head_channels, self.num_classes)
        self.active: ResolvedNetwork | None = None
        self.activate(space.largest())

    # ------------------------------------------------------------------ subnet selection
    def activate(self, spec: ArchSpec) -> ResolvedNetwork:
        """Make ``spec`` the active subnet (validated against the space) and return its
        resolved shapes."""
        self.active = self.space.resolve(spec, num_classes=self.num_classes)
        return self.active

    def _run_stages(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        network = cast(ResolvedNetwork, self.active)  # set by `activate` in __init__
        x = self.stem(x, network.stem_channels)
        features = []
        for stage_index, blocks in enumerate(network.stages):
            for block_index, block in enumerate(blocks):
                x = cast(nn.ModuleDict, cast(nn.ModuleList, self.stages[stage_index])[block_index])[block.spec.op](x, block)
            if collect and stage_index in network.feature_stages:
                features.append(x)
        return x, features

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features of the active subnet (the feature stages' outputs)."""
        return self._run_stages(x, collect=True)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self._run_stages(x, collect=False)
        x = self.head(x, cast(ResolvedNetwork, self.active).head_channels)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        x = F.dropout(x, self.dropout, self.training)
        return cast(torch.Tensor, self.classifier(x))

    # ------------------------------------------------------------------ extraction
    @torch.no_grad()
    def extract(self, spec: ArchSpec | None = None) -> StaticNetwork:
        """A standalone static network for ``spec`` (default: the active one) holding
        copies of the shared weights, in the same train/eval mode as the supernet."""
        network = (
            self.space.resolve(spec, num_classes=self.num_classes) if spec is not None else cast(ResolvedNetwork, self.active)
        )
        model = StaticNetwork(network, dropout=self.dropout)
        device = next(self.parameters()).device
        model.to(device)
        self.stem.copy_into(model.stem, network.stem_channels, network.input_channels)
        for stage_index, blocks in enumerate(network.stages):
            for block_index, block in enumerate(blocks):
                elastic: Any = cast(nn.ModuleDict, cast(nn.ModuleList, self.stages[stage_index])[block_index])[block.spec.op]
                elastic.copy_into(cast(nn.Sequential, model.stages[stage_index])[block_index], block)
        self.head.copy_into(model.head, network.head_channels, network.last_channels)
        self.classifier.copy_into(cast(nn.Linear, model.classifier[-1]), network.head_channels)
        model.train(self.training)
        return model

    # ------------------------------------------------------------------ channel sorting
    @torch.no_grad()
    def sort_channels(self) -> int:
        """Reorder channels by importance so that the first k are the best k (OFA's
        channel sorting). The function of the full network is unchanged.

        Sorted, through each op's ``BlockKind.channel_order``: the hidden channels of
        every block whose op sorts them (the inverted residual: importance is the L1 norm
        of the projection weights that read them) and the output channels of every stage
        whose blocks, and whose consumers, can all be permuted (importance: mean |gamma| of
        the producing BNs). Stages holding an op without a channel order (the
        sliding-channel block, whose windows depend on channel positions) are left
        alone. Returns the number of channel groups sorted.
        """
        sorted_groups = 0
        for stage in self.stages:
            for choices in cast(nn.ModuleList, stage):
                for op, block in cast(nn.ModuleDict, choices).items():
                    order = block_kind(op).channel_order
                    if order is not None and order.sort_hidden is not None:
                        order.sort_hidden(block)
                        sorted_groups += 1
        for stage_index in range(len(self.stages)):
            if self._sort_stage_outputs(stage_index):
                sorted_groups += 1
        return sorted_groups

    def _sort_stage_outputs(self, stage_index: int) -> bool:
        stage = cast(nn.ModuleList, self.stages[stage_index])
        next_stage = cast(nn.ModuleList, self.stages[stage_index + 1]) if stage_index + 1 < len(self.stages) else None
        members = [pair for choices in stage for pair in _channel_orders(cast(nn.ModuleDict, choices))]
        consumers_of_next = _channel_orders(cast(nn.ModuleDict, next_stage[0])) if next_stage is not None else []
        if any(order is None for _, order in members + consumers_of_next):
            return False
        # every order is a ChannelOrder from here on (checked just above)
        producers = [cast(ChannelOrder, order).output_norm(block) for block, order in members]
        importance = torch.stack([norm.weight.abs() / (norm.weight.abs().mean() + 1e-12) for norm in producers]).mean(0)
        permutation = torch.argsort(importance, descending=True)
        for block, order in members:
            cast(ChannelOrder, order).permute_output(block, permutation)
        for block, order in members[len(cast(nn.ModuleDict, stage[0])) :]:  # blocks after the first read this stage's channels
            cast(ChannelOrder, order).permute_input(block, permutation)
        for block, order in consumers_of_next:
            cast(ChannelOrder, order).permute_input(block, permutation)
        if next_stage is None:
            permute_conv_input(self.head.conv, permutation)
        return True


def _channel_orders(blocks: nn.ModuleDict) -> list[tuple[nn.Module, ChannelOrder | None]]:
    """Each elastic block of a position with its op's channel order."""
    return [(block, block_kind(op).channel_order) for op, block in blocks.items()]
