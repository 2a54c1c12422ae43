"""Analytic FLOPs and params of a detector, exactly equal to fvcore on ``DetectorCore``.

Counted at batch 1 on a square ``input_size`` (416 by default), with the same
convention as ``nas_search.hw_models.flops`` (1 multiply-add = 1 FLOP, eval-mode BN
counted, activations and additions not): the backbone's stem and stages up to the deepest
feature stage, the neck (laterals, nearest upsampling, which fvcore counts as one FLOP
per output element, the per-level blocks and the stride-2 extra levels) and the head (both towers at every level,
and the three predictor convolutions). The transform (resize, normalisation, padding),
the anchors and the post-processing (decoding, NMS) are not counted.

Parameters are those of the standalone detector: head convolutions once (they are shared
across levels), head BNs once per level.

Breakdown parts: ``stem``, ``stage0`` .. ``stageN``, ``neck``, ``head``.
"""

from __future__ import annotations

from typing import cast

from nas_search.hw_models.flops import Cost, CostBreakdown, batch_norm, block_cost, conv, conv_norm, output_size
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec
from nas_search.tasks.detect.resolved import ResolvedDetector, ResolvedHead, ResolvedNeck

#: Kernel of the depthwise convolutions in the neck blocks and head towers.
SEPARABLE_KERNEL = 3


def _separable(channels_in: int, channels_out: int, size: int) -> Cost:
    """Depthwise 3x3 + BN, then pointwise 1x1 + BN, at one ``size``."""
    cost = conv_norm(channels_in, channels_in, SEPARABLE_KERNEL, size, groups=channels_in)
    cost += conv_norm(channels_in, channels_out, 1, size)
    return cost


def extra_level_sizes(neck: ResolvedNeck, deepest: int) -> tuple[int, ...]:
    """Map sizes of the extra levels, each a stride-2 3x3 convolution of the previous one."""
    sizes, size = [], deepest
    for _ in range(neck.extra_levels):
        size = output_size(size, SEPARABLE_KERNEL, 2)
        sizes.append(size)
    return tuple(sizes)


def neck_cost(neck: ResolvedNeck, sizes: tuple[int, ...]) -> Cost:
    """Laterals, top-down upsampling (every backbone level but the deepest), per-level
    blocks and the extra levels; ``sizes`` are the map sizes of every pyramid level."""
    cost = Cost()
    backbone_levels = len(neck.in_channels)
    for level, (in_channels, size) in enumerate(zip(neck.in_channels, sizes)):
        cost += conv_norm(in_channels, neck.channels, 1, size)
        if level < backbone_levels - 1:
            cost += Cost(neck.channels * size * size, 0)  # nearest upsampling to this level
        for _ in range(neck.depth):
            cost += _separable(neck.channels, neck.channels, size)
    for size in sizes[backbone_levels:]:
        cost += _separable(neck.channels, neck.channels, size)
    return cost


def _shared_tower(head: ResolvedHead, sizes: tuple[int, ...]) -> Cost:
    """One tower: convolutions shared across levels, BNs per level."""
    flops = params = 0
    for layer in range(head.depth):
        channels_in = head.in_channels if layer == 0 else head.channels
        flops += sum(_separable(channels_in, head.channels, size).flops for size in sizes)
        params += conv(channels_in, channels_in, SEPARABLE_KERNEL, 1, groups=channels_in).params
        params += conv(channels_in, head.channels, 1, 1).params
        params += len(sizes) * (batch_norm(channels_in, 1).params + batch_norm(head.channels, 1).params)
    return Cost(flops, params)


def head_cost(head: ResolvedHead, sizes: tuple[int, ...]) -> Cost:
    """Classification and regression towers, then the 1x1 predictors (with bias) at every level."""
    cost = _shared_tower(head, sizes)
    cost += _shared_tower(head, sizes)
    for outputs in (head.num_classes, 4, 1):  # cls_logits, bbox_regression, bbox_ctrness
        cost += Cost(
            sum(conv(head.channels, outputs, 1, size).flops for size in sizes),
            conv(head.channels, outputs, 1, 1, bias=True).params,
        )
    return cost


def count_detector(detector: ResolvedDetector, input_size: int) -> CostBreakdown:
    """FLOPs and params of a resolved detector at a square ``input_size``."""
    backbone = detector.backbone
    parts: dict[str, Cost] = {}
    size = output_size(input_size, 3, backbone.stem_stride)
    parts["stem"] = conv_norm(backbone.input_channels, backbone.stem_channels, 3, size)
    sizes = []
    for stage_index, stage in enumerate(backbone.stages[: detector.used_stages]):
        stage_cost = Cost()
        for block in stage:
            cost, size = block_cost(block, size)
            stage_cost += cost
        parts[f"stage{stage_index}"] = stage_cost
        if stage_index in backbone.feature_stages:
            sizes.append(size)
    level_sizes = tuple(sizes) + extra_level_sizes(detector.neck, sizes[-1])
    parts["neck"] = neck_cost(detector.neck, level_sizes)
    parts["head"] = head_cost(detector.head, level_sizes)
    return CostBreakdown(
        flops=sum(cost.flops for cost in parts.values()),
        params=sum(cost.params for cost in parts.values()),
        parts=parts,
        input_size=input_size,
    )


def count_detection(spec: ArchSpec, space: SearchSpace, input_size: int, num_classes: int | None) -> CostBreakdown:
    """The ``detect`` task's whole-model counter (``num_classes`` = C, background excluded)."""
    return count_detector(cast(ResolvedDetector, space.resolve(spec, num_classes=num_classes)), input_size)


__all__ = ["count_detection", "count_detector", "extra_level_sizes", "head_cost", "neck_cost"]
