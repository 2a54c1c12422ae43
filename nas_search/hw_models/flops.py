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

Each block op has one pure cost function in :data:`BLOCK_COSTS`; an unknown op raises.
:func:`count_flops` counts a classifier here; a space whose networks are something else
(a detector) carries its own counter in ``space.network_costs``
(:class:`nas_search.hw_models.network.NetworkCosts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from nas_search.spaces.space import ResolvedBlock, ResolvedNetwork, SearchSpace
from nas_search.spec import ArchSpec


@dataclass
class Cost:
    """FLOPs and parameters of a part of a network."""

    flops: int = 0
    params: int = 0

    def __iadd__(self, other: "Cost") -> "Cost":
        self.flops += other.flops
        self.params += other.params
        return self


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

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "flops": self.flops,
            "params": self.params,
            "input_size": self.input_size,
            "breakdown": {name: {"flops": cost.flops, "params": cost.params} for name, cost in self.parts.items()},
        }


def output_size(size: int, kernel: int, stride: int) -> int:
    """Spatial output size of a 'same'-padded convolution."""
    padding = kernel // 2
    return (size + 2 * padding - kernel) // stride + 1


def conv(in_channels: int, out_channels: int, kernel: int, size: int, groups: int = 1, bias: bool = False) -> Cost:
    """Cost of a convolution whose output is ``size x size``."""
    weights = out_channels * (in_channels // groups) * kernel * kernel
    return Cost(weights * size * size, weights + (out_channels if bias else 0))


def batch_norm(channels: int, size: int) -> Cost:
    """Cost of an eval-mode BN over ``channels x size x size``."""
    return Cost(2 * channels * size * size, 2 * channels)


def conv_norm(in_channels: int, out_channels: int, kernel: int, size: int, groups: int = 1) -> Cost:
    """Conv followed by BN."""
    cost = conv(in_channels, out_channels, kernel, size, groups)
    cost += batch_norm(out_channels, size)
    return cost


def _inverted_residual(block: ResolvedBlock, size: int) -> tuple[Cost, int]:
    hidden, out_size = block.hidden_channels, output_size(size, block.spec.kernel, block.stride)
    cost = conv_norm(block.in_channels, hidden, 1, size)
    cost += conv_norm(hidden, hidden, block.spec.kernel, out_size, groups=hidden)
    if block.squeeze_excite_channels:
        reduced = block.squeeze_excite_channels
        cost += Cost(hidden * out_size * out_size, 0)  # adaptive average pool
        cost += conv(hidden, reduced, 1, 1, bias=True)
        cost += conv(reduced, hidden, 1, 1, bias=True)
    cost += conv_norm(hidden, block.out_channels, 1, out_size)
    return cost, out_size


def _separable(block: ResolvedBlock, size: int) -> tuple[Cost, int]:
    channels, out_size = block.in_channels, output_size(size, block.spec.kernel, block.stride)
    cost = conv_norm(channels, channels, block.spec.kernel, out_size, groups=channels)
    cost += conv_norm(channels, block.out_channels, 1, out_size)
    return cost, out_size


def _sliding_channel(block: ResolvedBlock, size: int) -> tuple[Cost, int]:
    channels, out_size = block.in_channels, output_size(size, block.spec.kernel, block.stride)
    cost = conv_norm(channels, channels, block.spec.kernel, out_size, groups=channels)
    window = channels // block.spec.groups
    cost += Cost(block.out_channels * window * out_size * out_size, block.out_channels * window)
    cost += batch_norm(block.out_channels, out_size)
    return cost, out_size


def _squeeze_expand(in_channels: int, squeeze: int, size: int) -> Cost:
    cost = conv_norm(in_channels, squeeze, 1, size)
    cost += conv_norm(squeeze, 4 * squeeze, 1, size)
    cost += conv_norm(squeeze, squeeze, 3, size, groups=squeeze)
    cost += conv_norm(squeeze, 4 * squeeze, 1, size)
    return cost


def _slim(block: ResolvedBlock, size: int) -> tuple[Cost, int]:
    squeeze, out_channels = block.hidden_channels, block.out_channels
    out_size = output_size(size, block.spec.kernel, block.stride)
    cost = _squeeze_expand(block.in_channels, squeeze, size)
    cost += _squeeze_expand(8 * squeeze, squeeze, size)
    cost += conv_norm(block.in_channels, out_channels, 1, size)
    cost += conv_norm(out_channels, out_channels, block.spec.kernel, out_size, groups=out_channels)
    cost += conv_norm(out_channels, out_channels, 1, out_size)
    return cost, out_size


#: One pure cost function per block op: (block, input size) -> (cost, output size).
BLOCK_COSTS: dict[str, Callable[[ResolvedBlock, int], tuple[Cost, int]]] = {
    "mbconv": _inverted_residual,
    "dsc": _separable,
    "scc": _sliding_channel,
    "slim": _slim,
}


def block_cost(block: ResolvedBlock, size: int) -> tuple[Cost, int]:
    """Cost of one resolved block at input ``size``; unknown ops raise ``KeyError``."""
    if block.spec.op not in BLOCK_COSTS:
        raise KeyError(f"no cost function for block op {block.spec.op!r}; known: {', '.join(BLOCK_COSTS)}")
    return BLOCK_COSTS[block.spec.op](block, size)


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
        return space.network_costs.count(spec, space, size, num_classes)
    return count_classifier(spec, space, size, num_classes)
