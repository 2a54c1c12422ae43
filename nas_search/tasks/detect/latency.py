"""Latency tables for detectors: the neck and head parts a ``detect`` table times.

A detector's latency on a profiled device (``nas-search profile --space detect``) is
predicted the same way as a classifier's (:mod:`nas_search.hw_models.latency`): the sum of
its timed parts plus a learned correction fitted on measured whole detectors. The parts,
in :class:`~nas_search.tasks.detect.static.DetectorCore`'s execution order:

* the backbone: stem and blocks up to the deepest feature stage (the classifier parts);
* ``lateral``: a feature's 1x1 conv + BN to the neck width, at the feature's size;
* ``fuse``: the top-down step at a level, nearest upsampling of the coarser level (``stride``
  times smaller) and the add of the level's lateral; the part takes both tensors;
* ``neck_block``: one residual separable neck block at a level;
* ``extra_level``: a stride-2 separable block making an extra coarser level;
* ``tower_layer``: one separable layer of a head tower at a level (each level runs both
  towers);
* ``predictors``: a level's ``cls_logits`` (``num_classes`` = C + 1), ``bbox_reg`` with its
  clamp and ``exp``, and ``bbox_ctrness``, each flattened as the head lays them out.

The final concatenation of the levels' outputs is not a part: its cost (three copies of
the outputs) enters the correction's features. Every part's analytic features come from
the same per-part kernel listings as the analytic devices
(:mod:`nas_search.tasks.detect.hardware`), and every part is built from the modules of
:mod:`nas_search.tasks.detect.static`, so a part times exactly what the detector runs.

Nothing is registered: :data:`DETECTOR_TABLE_TASK` (the part kinds with their builders
and features, the parts of a detector, its distinct parts, the whole module, the final
joins' features and the input-size rule) reaches :mod:`nas_search.hw_models.latency`
through ``space.network_costs.latency_table``
(:class:`~nas_search.tasks.detect.costs.DetectorCosts`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas_search.hw_models.features import LayerCost
from nas_search.hw_models.flops import Cost, output_size
from nas_search.hw_models.latency.parts import (
    BACKBONE_PART_KINDS,
    BlockConfig,
    PartKind,
    TableTask,
    backbone_parts,
    distinct_backbone_parts,
)
from nas_search.spaces.resolved import scaled_channels
from nas_search.spec import ArchSpec
from nas_search.tasks.detect.cost import SEPARABLE_KERNEL
from nas_search.tasks.detect.hardware import (
    extra_level_layers,
    fuse_layers,
    join_layers,
    lateral_layers,
    level_sizes,
    neck_block_layers,
    predictor_layers,
    tower_layer_layers,
)
from nas_search.tasks.detect.resolved import ResolvedDetector

#: Bytes per activation element (fp32), as in the classifier parts' traffic.
BYTES_PER_ELEMENT = 4


# ---------------------------------------------------------------------------- the parts
def coarse_size(config: BlockConfig) -> int:
    """Map size of the coarser level a ``fuse`` part upsamples (its ``stride`` is the
    ratio of the two levels' strides; each stride-2 step rounds up)."""
    return -(-config.input_size // config.stride)


#: Kernel listing of each detector part kind (stage index 0: only the sums are used).
PART_LISTINGS: dict[str, Callable[[BlockConfig], list[LayerCost]]] = {
    "lateral": lambda config: lateral_layers(0, config.in_channels, config.out_channels, config.input_size),
    "fuse": lambda config: fuse_layers(0, config.out_channels, config.input_size),
    "neck_block": lambda config: neck_block_layers(0, config.out_channels, config.input_size),
    "extra_level": lambda config: extra_level_layers(0, config.out_channels, config.input_size),
    "tower_layer": lambda config: tower_layer_layers(0, config.in_channels, config.out_channels, config.input_size),
    "predictors": lambda config: predictor_layers(0, config.in_channels, config.num_classes, config.input_size),
}


def _listing_features(layers: list[LayerCost]) -> tuple[Cost, int, int]:
    """(FLOPs and params, activation bytes moved, kernels) of a kernel listing."""
    cost = Cost(sum(layer.macs for layer in layers), sum(layer.params for layer in layers))
    return cost, sum(layer.activation_elements for layer in layers) * BYTES_PER_ELEMENT, len(layers)


def _fuse_module(config: BlockConfig):
    from torch import nn

    from nas_search.tasks.detect.static import top_down

    class Fuse(nn.Module):
        def forward(self, lateral, coarser):
            return top_down([lateral, coarser])[0]

    return Fuse()


def _tower_layer_module(config: BlockConfig):
    from torch import nn

    from nas_search.tasks.detect.static import SharedSeparableLayer

    class TowerLayer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = SharedSeparableLayer(config.in_channels, config.out_channels, levels=1)

        def forward(self, x):
            return self.layer(x, 0)

    return TowerLayer()


def _predictors_module(config: BlockConfig):
    from torch import nn

    from nas_search.tasks.detect.static import box_distances, flatten_level, initialise_predictors

    class Predictors(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls_logits = nn.Conv2d(config.in_channels, config.num_classes, 1)
            self.bbox_reg = nn.Conv2d(config.in_channels, 4, 1)
            self.bbox_ctrness = nn.Conv2d(config.in_channels, 1, 1)
            initialise_predictors(self)

        def forward(self, x):
            return (
                flatten_level(self.cls_logits(x)),
                flatten_level(box_distances(self.bbox_reg(x))),
                flatten_level(self.bbox_ctrness(x)),
            )

    return Predictors()


def _lateral_module(config: BlockConfig):
    from nas_search.spaces.static import conv_norm_activation

    return conv_norm_activation(config.in_channels, config.out_channels, activation=False)


def _neck_block_module(config: BlockConfig):
    from nas_search.tasks.detect.static import NeckBlock

    return NeckBlock(config.out_channels)


def _extra_level_module(config: BlockConfig):
    from nas_search.tasks.detect.static import ExtraLevel

    return ExtraLevel(config.out_channels)


def _fuse_example(config: BlockConfig):
    import torch

    generator = torch.Generator().manual_seed(0)
    coarser = coarse_size(config)
    return (
        torch.randn(1, config.out_channels, config.input_size, config.input_size, generator=generator),
        torch.randn(1, config.out_channels, coarser, coarser, generator=generator),
    )


#: How each detector part kind is built as a standalone module.
PART_MODULES: dict[str, Callable[[BlockConfig], Any]] = {
    "lateral": _lateral_module,
    "fuse": _fuse_module,
    "neck_block": _neck_block_module,
    "extra_level": _extra_level_module,
    "tower_layer": _tower_layer_module,
    "predictors": _predictors_module,
}


# ---------------------------------------------------------------------------- parts of a detector
def lateral_part(in_channels: int, width: int, size: int) -> BlockConfig:
    """The ``lateral`` part from a feature of ``in_channels`` at ``size`` pixels."""
    return BlockConfig("lateral", in_channels, width, size)


def fuse_part(width: int, size: int, ratio: int) -> BlockConfig:
    """The ``fuse`` part at a level of ``size`` pixels whose coarser level is ``ratio`` times smaller."""
    return BlockConfig("fuse", width, width, size, stride=ratio)


def neck_block_part(width: int, size: int) -> BlockConfig:
    """One ``neck_block`` at ``size`` pixels."""
    return BlockConfig("neck_block", width, width, size, kernel=SEPARABLE_KERNEL, residual=True)


def extra_level_part(width: int, size: int) -> BlockConfig:
    """The ``extra_level`` part reading a level of ``size`` pixels."""
    return BlockConfig("extra_level", width, width, size, kernel=SEPARABLE_KERNEL, stride=2)


def tower_layer_part(in_channels: int, channels: int, size: int) -> BlockConfig:
    """One ``tower_layer`` at ``size`` pixels."""
    return BlockConfig("tower_layer", in_channels, channels, size, kernel=SEPARABLE_KERNEL)


def predictors_part(channels: int, num_classes: int, size: int) -> BlockConfig:
    """A level's ``predictors`` (``num_classes`` includes background)."""
    return BlockConfig("predictors", channels, num_classes, size, num_classes=num_classes)


def detector_parts(detector: ResolvedDetector, input_size: int) -> list[BlockConfig]:
    """The timed parts of a resolved detector at ``input_size``, in execution order."""
    neck, head = detector.neck, detector.head
    parts, _ = backbone_parts(detector.backbone, input_size, detector.used_stages)
    sizes = level_sizes(detector, input_size)
    backbone_levels, width = len(neck.in_channels), neck.channels
    parts += [lateral_part(channels, width, size) for channels, size in zip(neck.in_channels, sizes)]
    parts += [
        fuse_part(width, sizes[level], detector.strides[level + 1] // detector.strides[level])
        for level in range(backbone_levels - 1)
    ]
    parts += [neck_block_part(width, size) for size in sizes[:backbone_levels] for _ in range(neck.depth)]
    parts += [extra_level_part(width, previous) for previous in sizes[backbone_levels - 1 : -1][: neck.extra_levels]]
    for size in sizes:
        for _ in ("classification", "regression"):
            parts += [
                tower_layer_part(head.in_channels if layer == 0 else head.channels, head.channels, size)
                for layer in range(head.depth)
            ]
        parts.append(predictors_part(head.channels, head.num_classes, size))
    return parts


def join_features(detector: ResolvedDetector, input_size: int) -> tuple[int, int, int, int]:
    """(FLOPs, params, activation bytes, kernels) of the final joins, outside every part."""
    cost, traffic, kernels = _listing_features(join_layers(0, detector.head.num_classes, level_sizes(detector, input_size)))
    return cost.flops, cost.params, traffic, kernels


def distinct_detector_parts(space: Any, input_size: int, channel_divisor: int, classes: int) -> list[BlockConfig]:
    """Every distinct part of any detector of ``space`` (a ``DetectionSpace``) at
    ``input_size`` (``classes`` object classes, background excluded)."""
    feature_stages = [index for index, stage in enumerate(space.stages) if stage.feature]
    parts, stage_outputs = distinct_backbone_parts(space, input_size, channel_divisor, max(feature_stages) + 1)
    choices = space.detector
    features = [stage_outputs[index] for index in feature_stages]
    sizes = [size for _, size in features]
    for _ in range(choices.extra_levels):
        sizes.append(output_size(sizes[-1], SEPARABLE_KERNEL, 2))
    strides = space.level_strides()
    necks = sorted({scaled_channels(choices.neck_channels, width, channel_divisor) for width in choices.neck_widths})
    heads = sorted({scaled_channels(choices.head_channels, width, channel_divisor) for width in choices.head_widths})
    backbone_levels = len(features)
    for width in necks:
        parts += [lateral_part(channels, width, size) for channels_list, size in features for channels in channels_list]
        parts += [fuse_part(width, sizes[level], strides[level + 1] // strides[level]) for level in range(backbone_levels - 1)]
        if max(choices.neck_depths) > 0:
            parts += [neck_block_part(width, size) for size in sizes[:backbone_levels]]
        parts += [extra_level_part(width, previous) for previous in sizes[backbone_levels - 1 : -1]]
    for size in sizes:
        parts += [tower_layer_part(neck, head, size) for neck in necks for head in heads]
        if max(choices.head_depths) > 1:
            parts += [tower_layer_part(head, head, size) for head in heads]
        parts += [predictors_part(head, classes + 1, size) for head in heads]
    return parts


def _build_detector_core(space: Any, spec: ArchSpec, num_classes: int | None, input_size: int) -> Any:
    """The whole detector as a deployment runtime runs it (no pre- and post-processing),
    built from ``space`` itself (what ``build_detector`` makes, without a space lookup)."""
    from nas_search.tasks.detect.static import StaticDetector, initialise_detector

    classes = space.num_classes if num_classes is None else num_classes
    model = StaticDetector(space.resolve(spec, num_classes=classes), input_size)
    initialise_detector(model)
    return model.eval().core()


def _check_input_size(size: int) -> None:
    from nas_search.tasks.detect.static import check_image_size

    check_image_size(size)


def _part_cost(config: BlockConfig) -> tuple[Cost, int, int]:
    return _listing_features(PART_LISTINGS[config.op](config))


#: How each detector part kind that takes more than one tensor is given its example inputs.
PART_EXAMPLES: dict[str, Callable[[BlockConfig], Any]] = {"fuse": _fuse_example}

#: Every kind of part a detector is cut into: the backbone's, then the neck's and head's.
DETECTOR_PART_KINDS = BACKBONE_PART_KINDS.with_kinds(
    {kind: PartKind(build, _part_cost, PART_EXAMPLES.get(kind)) for kind, build in PART_MODULES.items()}
)

#: How latency tables handle detectors; carried by every detection space's
#: ``network_costs`` (:attr:`~nas_search.tasks.detect.costs.DetectorCosts.latency_table`).
DETECTOR_TABLE_TASK = TableTask(
    part_kinds=DETECTOR_PART_KINDS,
    parts=detector_parts,
    distinct=distinct_detector_parts,
    build=_build_detector_core,
    extra_features=join_features,
    check_input_size=_check_input_size,
)


__all__ = [
    "DETECTOR_PART_KINDS",
    "DETECTOR_TABLE_TASK",
    "PART_EXAMPLES",
    "PART_LISTINGS",
    "PART_MODULES",
    "coarse_size",
    "detector_parts",
    "distinct_detector_parts",
    "join_features",
]
