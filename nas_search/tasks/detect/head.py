"""Elastic FCOS head: the supernet's head, elastic in tower width and depth.

Mirrors :class:`nas_search.tasks.detect.static.DetectionHead` (both subclass torchvision's
``FCOSHead`` through :class:`~nas_search.tasks.detect.static.PyramidHead`, so FCOS's loss
and post-processing apply unchanged). The towers' convolutions are shared across pyramid
levels and each level has its own BNs; a tower runs its first ``depth`` layers at the
active width; the 1x1 predictors read any active width. Weights are sliced only by the
ops of ``nas_search.spaces.elastic``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from nas_search.spaces.elastic import ElasticBatchNorm2d, ElasticConv2d, ElasticDepthwiseConv2d
from nas_search.tasks.detect.space import ResolvedHead
from nas_search.tasks.detect.static import (
    DetectionHead,
    PyramidHead,
    SeparableTower,
    SharedSeparableLayer,
    box_distances,
    initialise_predictors,
)


class ElasticSharedSeparableLayer(nn.Module):
    """Elastic depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU with one pair
    of BNs per level; mirrors :class:`~nas_search.tasks.detect.static.SharedSeparableLayer`."""

    def __init__(self, max_in: int, max_out: int, levels: int) -> None:
        super().__init__()
        self.depthwise = ElasticDepthwiseConv2d(max_in, 3)
        self.depthwise_norms = nn.ModuleList(ElasticBatchNorm2d(max_in) for _ in range(levels))
        self.pointwise = ElasticConv2d(max_in, max_out)
        self.pointwise_norms = nn.ModuleList(ElasticBatchNorm2d(max_out) for _ in range(levels))

    def forward(self, x: torch.Tensor, out_channels: int, level: int) -> torch.Tensor:
        x = F.relu(self.depthwise_norms[level](self.depthwise(x, 3)))
        return F.relu(self.pointwise_norms[level](self.pointwise(x, out_channels)))

    @torch.no_grad()
    def copy_into(self, target: SharedSeparableLayer, in_channels: int, out_channels: int) -> None:
        """Copy the active slice into a static layer."""
        self.depthwise.copy_into(target.depthwise, in_channels, 3)
        self.pointwise.copy_into(target.pointwise, out_channels, in_channels)
        for norm, static in zip(cast("Iterable[ElasticBatchNorm2d]", self.depthwise_norms), target.depthwise_norms):
            norm.copy_into(cast(nn.BatchNorm2d, static), in_channels)
        for norm, static in zip(cast("Iterable[ElasticBatchNorm2d]", self.pointwise_norms), target.pointwise_norms):
            norm.copy_into(cast(nn.BatchNorm2d, static), out_channels)


class ElasticSeparableTower(nn.Module):
    """``max_depth`` elastic shared separable layers; the first reads the neck width."""

    def __init__(self, max_in: int, max_channels: int, max_depth: int, levels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ElasticSharedSeparableLayer(max_in if index == 0 else max_channels, max_channels, levels)
            for index in range(max_depth)
        )

    def forward(self, x: torch.Tensor, head: ResolvedHead, level: int) -> torch.Tensor:
        for layer in self.layers[: head.depth]:
            x = layer(x, head.channels, level)
        return x

    @torch.no_grad()
    def copy_into(self, target: SeparableTower, head: ResolvedHead) -> None:
        """Copy the active layers into a static tower."""
        for index, (layer, static) in enumerate(
            zip(cast("Iterable[ElasticSharedSeparableLayer]", self.layers[: head.depth]), target.layers)
        ):
            layer.copy_into(
                cast(SharedSeparableLayer, static), head.in_channels if index == 0 else head.channels, head.channels
            )


class ElasticDetectionHead(PyramidHead):
    """Elastic FCOS head.

    Args:
        max_in: the largest neck width.
        max_channels: the largest tower width.
        max_depth: the largest tower depth.
        num_classes: classification outputs, background included (C + 1).
        levels: pyramid levels.

    Set :attr:`active` (a :class:`ResolvedHead`) before running it.
    """

    def __init__(self, max_in: int, max_channels: int, max_depth: int, num_classes: int, levels: int) -> None:
        super().__init__(num_classes)
        self.classification_tower = ElasticSeparableTower(max_in, max_channels, max_depth, levels)
        self.regression_tower = ElasticSeparableTower(max_in, max_channels, max_depth, levels)
        self.cls_logits = ElasticConv2d(max_channels, num_classes, bias=True)
        self.bbox_reg = ElasticConv2d(max_channels, 4, bias=True)
        self.bbox_ctrness = ElasticConv2d(max_channels, 1, bias=True)
        initialise_predictors(self)
        self.active: ResolvedHead | None = None

    def predict_level(self, x: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        head = cast(ResolvedHead, self.active)
        classification = self.classification_tower(x, head, level)
        regression = self.regression_tower(x, head, level)
        return (
            self.cls_logits(classification, head.num_classes),
            box_distances(self.bbox_reg(regression, 4)),
            self.bbox_ctrness(regression, 1),
        )

    @torch.no_grad()
    def copy_into(self, target: DetectionHead, head: ResolvedHead) -> None:
        """Copy the active slices into a static :class:`DetectionHead`."""
        self.classification_tower.copy_into(target.classification_tower, head)
        self.regression_tower.copy_into(target.regression_tower, head)
        for name, outputs in (("cls_logits", head.num_classes), ("bbox_reg", 4), ("bbox_ctrness", 1)):
            getattr(self, name).copy_into(getattr(target, name), outputs, head.channels)


__all__ = ["ElasticDetectionHead", "ElasticSeparableTower", "ElasticSharedSeparableLayer"]
