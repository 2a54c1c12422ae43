"""Analytic FLOPs and parameter counts, exactly equal to fvcore on the extracted model.

Convention (fvcore's): one multiply-add is one FLOP, so FLOPs = MACs. Counted, as fvcore
counts them at batch 1 on a model in eval mode:

* convolution: ``out_channels * in_channels / groups * k * k * out_height * out_width``
  (bias not counted); the sliding-channel conv counts ``out * (in / cg) * H * W``;
* batch norm (eval): ``2 * channels * height * width`` (scale and shift);
* adaptive average pooling: the number of input elements;
* linear: ``in_features * out_features`` (bias not counted).

Not counted, as fvcore skips them: activations (ReLU, hard-sigmoid), the residual and
skip additions, the squeeze-excite multiplication, concatenation. They are cheap
elementwise ops; the latency models (not FLOPs) are the place to account for them.

Parameters are ``sum(p.numel())`` of the extracted model: conv weights, conv biases where
present (squeeze-excite), BN weight and bias, linear weight and bias.

Each block op's pure cost function is its ``BlockKind.cost`` (``nas_search.spaces.ops``),
as are the records and arithmetic it uses (:class:`Cost`, :func:`conv`, ...), re-exported
here; :func:`block_cost` dispatches through the op table and an unknown op raises.
:func:`count_flops` counts a classifier here; a space whose networks are something else
(a detector) carries its own counter in ``space.network_costs``
(:class:`nas_search.hw_models.network.NetworkCosts`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nas_search.spaces.ops import BLOCK_KINDS, KindTable
from nas_search.spaces.ops.costs import Cost, batch_norm, conv, conv_norm, output_size
from nas_search.spaces.space import ResolvedBlock, ResolvedNetwork, SearchSpace
from nas_search.spec import ArchSpec


@dataclass(frozen=True)
class CostBreakdown:
    """Whole-network cost with a per-part breakdown (stem, stage 0..n-1, head)."""

    flops: int
    params: int
    parts: dict[str, Cost] = field(default_factory=dict)
    input_size: int = 0

    @property
    def total(self) -> int:
        """Total FLOPs (alias of ``flops``)."""
        return self.flops

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "flops": self.flops,
            "params": self.params,
            "input_size": self.input_size,
            "breakdown": {name: {"flops": cost.flops, "params": cost.params} for name, cost in self.parts.items()},
        }


#: The cost function of each block op: a live view of ``BLOCK_KINDS[op].cost``,
#: (block, input size) -> (cost, output size).
BLOCK_COSTS: KindTable[Callable[[ResolvedBlock, int], tuple[Cost, int]]] = KindTable("cost")


def block_cost(block: ResolvedBlock, size: int) -> tuple[Cost, int]:
    """Cost of one resolved block at input ``size``; unknown ops raise ``KeyError``."""
    if block.spec.op not in BLOCK_KINDS:
        raise KeyError(f"no cost function for block op {block.spec.op!r}; known: {', '.join(BLOCK_KINDS)}")
    return BLOCK_KINDS[block.spec.op].cost(block, size)


def count_network(network: ResolvedNetwork, input_size: int) -> CostBreakdown:
    """FLOPs and params of a resolved network at a square ``input_size``."""
    parts: dict[str, Cost] = {}
    size = output_size(input_size, 3, network.stem_stride)
    parts["stem"] = conv_norm(network.input_channels, network.stem_channels, 3, size)
    for stage_index, stage in enumerate(network.stages):
        stage_cost = Cost()
        for block in stage:
            cost, size = block_cost(block, size)
            stage_cost += cost
        parts[f"stage{stage_index}"] = stage_cost
    head = conv_norm(network.last_channels, network.head_channels, 1, size)
    head += Cost(network.head_channels * size * size, 0)  # adaptive average pool
    head += Cost(network.head_channels * network.num_classes, network.head_channels * network.num_classes + network.num_classes)
    parts["head"] = head
    return CostBreakdown(
        flops=sum(cost.flops for cost in parts.values()),
        params=sum(cost.params for cost in parts.values()),
        parts=parts,
        input_size=input_size,
    )


def count_classifier(spec: ArchSpec, space: SearchSpace, input_size: int, num_classes: int | None) -> CostBreakdown:
    """Analytic FLOPs and params of a classifier spec at ``input_size``."""
    return count_network(space.resolve(spec, num_classes=num_classes), input_size)


def count_flops(
    spec: ArchSpec, space: SearchSpace, input_size: int | None = None, num_classes: int | None = None
) -> CostBreakdown:
    """Analytic FLOPs and params of ``spec`` at ``input_size`` (default: the space's
    deployment size). ``num_classes`` is the classifier's outputs, or a detector's object
    classes C without background."""
    size = space.input_size if input_size is None else input_size
    if space.network_costs is not None:  # a space whose networks are not plain classifiers
        breakdown: CostBreakdown = space.network_costs.count(spec, space, size, num_classes)
        return breakdown
    return count_classifier(spec, space, size, num_classes)


__all__ = [
    "BLOCK_COSTS",
    "Cost",
    "CostBreakdown",
    "batch_norm",
    "block_cost",
    "conv",
    "conv_norm",
    "count_classifier",
    "count_flops",
    "count_network",
    "output_size",
]
