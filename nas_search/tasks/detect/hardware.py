"""Device costs of detectors: the tensor program (peak activation memory) and the kernel
listing (analytic latency devices) of a :class:`ResolvedDetector`.

Both follow :class:`nas_search.tasks.detect.static.DetectorCore`, the network a deployment
runtime runs (the ONNX file: backbone, neck and head, no post-processing), layer by layer
in its execution order:

* the backbone body: stem and the blocks of the stages up to the deepest feature stage
  (the same per-block programs and listings as a classifier); each feature stage's output
  is held until its lateral reads it;
* the neck: one lateral 1x1 conv per backbone level (shallow to deep), top-down fusion
  from the deepest level (nearest upsampling, then an add), the per-level residual
  separable blocks, then the extra stride-2 levels;
* the head, level by level: the classification tower, then the regression tower (the
  level's input is held for both), then the ``cls_logits``, ``bbox_reg`` (clamp and
  ``exp``) and ``bbox_ctrness`` 1x1 predictors; the raw maps of every level are held
  until the end, where each output is flattened level by level (a copy, except for a
  one-channel map, whose flattening is a view) and concatenated.

Batch norm is folded and activations are fused, as in ``nas_search.hw_models.memory``.
Importing this module registers both with ``nas_search.hw_models`` for the ``detect`` task.
"""

from __future__ import annotations

from nas_search.hw_models.features import LayerCost
from nas_search.hw_models.flops import output_size
from nas_search.hw_models.memory import INPUT_TENSOR, TensorProgram, block_program
from nas_search.spaces.ops import block_kind
from nas_search.spaces.ops.costs import append_convolution, elementwise
from nas_search.tasks.detect.cost import SEPARABLE_KERNEL, extra_level_sizes
from nas_search.tasks.detect.resolved import ResolvedDetector

#: Outputs of one level's predictors in ``HEAD_OUTPUTS`` order: (name, channels or None
#: for the class count).
PREDICTORS: tuple[tuple[str, int | None], ...] = (("cls_logits", None), ("bbox_regression", 4), ("bbox_ctrness", 1))


def level_sizes(detector: ResolvedDetector, input_size: int) -> tuple[int, ...]:
    """Map sizes of every pyramid level (backbone feature stages, then extra levels)."""
    backbone = detector.backbone
    size = output_size(input_size, 3, backbone.stem_stride)
    sizes = []
    for stage_index, stage in enumerate(backbone.stages[: detector.used_stages]):
        for block in stage:
            size = output_size(size, block.spec.kernel, block.stride)
        if stage_index in backbone.feature_stages:
            sizes.append(size)
    return tuple(sizes) + extra_level_sizes(detector.neck, sizes[-1])


# ---------------------------------------------------------------------------- tensor program
def detector_program(detector: ResolvedDetector, input_size: int) -> TensorProgram:
    """The tensor program of a detector's raw-output network at ``input_size``."""
    backbone = detector.backbone
    program = TensorProgram()
    current = program.add_input(INPUT_TENSOR, backbone.input_channels * input_size * input_size)
    size = output_size(input_size, 3, backbone.stem_stride)
    current = program.add("stem", (current,), backbone.stem_channels * size * size)
    features: list[str] = []
    for stage_index, stage in enumerate(backbone.stages[: detector.used_stages]):
        for block_index, block in enumerate(stage):
            current, size = block_program(program, block, current, size, f"stage{stage_index}.block{block_index}")
        if stage_index in backbone.feature_stages:
            features.append(current)
    _neck_and_head(program, detector, features, level_sizes(detector, input_size))
    return program


def neck_and_head_program(detector: ResolvedDetector, input_size: int) -> TensorProgram:
    """The tensor program of the neck and head alone, reading the backbone features
    (``feature0``, ... shallow to deep) as inputs."""
    program = TensorProgram()
    sizes = level_sizes(detector, input_size)
    features = [
        program.add_input(f"feature{level}", channels * sizes[level] * sizes[level])
        for level, channels in enumerate(detector.neck.in_channels)
    ]
    _neck_and_head(program, detector, features, sizes)
    return program


def _neck_and_head(program: TensorProgram, detector: ResolvedDetector, features: list[str], sizes: tuple[int, ...]) -> None:
    neck, head = detector.neck, detector.head
    width = neck.channels
    laterals = [
        program.add(f"neck.lateral{level}", (feature,), width * sizes[level] * sizes[level])
        for level, feature in enumerate(features)
    ]
    fused = [laterals[-1]]
    for level in reversed(range(len(laterals) - 1)):
        pixels = sizes[level] * sizes[level]
        upsampled = program.add(f"neck.upsample{level}", (fused[0],), width * pixels)
        fused.insert(0, program.add(f"neck.fuse{level}", (laterals[level], upsampled), width * pixels))
    levels = []
    for level, tensor in enumerate(fused):
        pixels = sizes[level] * sizes[level]
        for block in range(neck.depth):
            prefix = f"neck.level{level}.block{block}"
            depthwise = program.add(f"{prefix}.depthwise", (tensor,), width * pixels)
            pointwise = program.add(f"{prefix}.pointwise", (depthwise,), width * pixels)
            tensor = program.add(f"{prefix}.add", (tensor, pointwise), width * pixels)
        levels.append(tensor)
    for extra, extra_size in enumerate(sizes[len(fused) :]):
        pixels = extra_size * extra_size
        depthwise = program.add(f"neck.extra{extra}.depthwise", (levels[-1],), width * pixels)
        levels.append(program.add(f"neck.extra{extra}.pointwise", (depthwise,), width * pixels))
    raw: list[dict[str, str]] = []
    channels: int | None  # a tower's input width, then a predictor's outputs (None: the class count)
    for level, source in enumerate(levels):
        pixels = sizes[level] * sizes[level]
        towers = {}
        for tower in ("classification", "regression"):
            tensor = source
            for layer in range(head.depth):
                channels = head.in_channels if layer == 0 else head.channels
                prefix = f"head.level{level}.{tower}{layer}"
                tensor = program.add(f"{prefix}.depthwise", (tensor,), channels * pixels)
                tensor = program.add(f"{prefix}.pointwise", (tensor,), head.channels * pixels)
            towers[tower] = tensor
        prefix = f"head.level{level}"  # predictors in DetectionHead.predict_level's order
        logits = program.add(f"{prefix}.cls_logits", (towers["classification"],), head.num_classes * pixels)
        box = program.add(f"{prefix}.bbox_reg", (towers["regression"],), 4 * pixels)
        box = program.add(f"{prefix}.bbox_clamp", (box,), 4 * pixels)
        raw.append(
            {
                "cls_logits": logits,
                "bbox_regression": program.add(f"{prefix}.bbox_exp", (box,), 4 * pixels),
                "bbox_ctrness": program.add(f"{prefix}.bbox_ctrness", (towers["regression"],), pixels),
            }
        )
    for name, channels in PREDICTORS:
        channels = head.num_classes if channels is None else channels
        flattened = [
            outputs[name]
            if channels == 1
            else program.add(f"head.level{level}.{name}.flatten", (outputs[name],), channels * sizes[level] * sizes[level])
            for level, outputs in enumerate(raw)
        ]
        total = sum(channels * size * size for size in sizes)
        program.add(f"head.{name}", tuple(flattened), total)


# ---------------------------------------------------------------------------- kernel listing
# One listing per kind of neck and head part; :func:`detector_layers` chains them, and the
# latency tables (``nas_search.tasks.detect.latency``) time the same parts one by one.
def _separable(stage: int, in_channels: int, out_channels: int, size: int, stride: int = 1) -> list[LayerCost]:
    layers: list[LayerCost] = []
    append_convolution(layers, stage, in_channels, in_channels, SEPARABLE_KERNEL, size, stride, groups=in_channels)
    append_convolution(layers, stage, in_channels, out_channels, 1, output_size(size, SEPARABLE_KERNEL, stride))
    return layers


def lateral_layers(stage: int, in_channels: int, width: int, size: int) -> list[LayerCost]:
    """A lateral 1x1 conv (BN folded) from a backbone feature to the neck width."""
    layers: list[LayerCost] = []
    append_convolution(layers, stage, in_channels, width, 1, size)
    return layers


def fuse_layers(stage: int, width: int, size: int) -> list[LayerCost]:
    """Top-down fusion at a level of ``size`` pixels: nearest upsampling of the coarser
    level, then the add of this level's lateral."""
    return [
        elementwise("shuffle", stage=stage, channels=width, size=size, inputs=0),
        elementwise("add", stage=stage, channels=width, size=size, inputs=2),
    ]


def neck_block_layers(stage: int, width: int, size: int) -> list[LayerCost]:
    """A residual separable neck block: depthwise, pointwise, add."""
    return [*_separable(stage, width, width, size), elementwise("add", stage=stage, channels=width, size=size, inputs=2)]


def extra_level_layers(stage: int, width: int, size: int) -> list[LayerCost]:
    """An extra pyramid level from the previous one (``size`` pixels): a stride-2 separable block."""
    return _separable(stage, width, width, size, stride=2)


def tower_layer_layers(stage: int, in_channels: int, out_channels: int, size: int) -> list[LayerCost]:
    """One separable layer of a head tower at one level."""
    return _separable(stage, in_channels, out_channels, size)


def predictor_layers(stage: int, channels: int, num_classes: int, size: int) -> list[LayerCost]:
    """One level's 1x1 predictors (``num_classes`` with background, box, centerness), the
    box output's clamp and ``exp``, and the flattening copy of each output with more than
    one channel."""
    layers: list[LayerCost] = []
    for _, outputs in PREDICTORS:
        append_convolution(layers, stage, channels, num_classes if outputs is None else outputs, 1, size, bias=True)
    for _ in ("clamp", "exp"):
        layers.append(elementwise("multiply", stage=stage, channels=4, size=size, inputs=1))
    for _, outputs in PREDICTORS:
        outputs = num_classes if outputs is None else outputs
        if outputs > 1:
            layers.append(elementwise("shuffle", stage=stage, channels=outputs, size=size, inputs=1))
    return layers


def join_layers(stage: int, num_classes: int, sizes: tuple[int, ...]) -> list[LayerCost]:
    """The concatenation of each output's flattened levels."""
    return [
        elementwise(
            "shuffle",
            stage=stage,
            channels=sum((num_classes if outputs is None else outputs) * size * size for size in sizes),
            size=1,
            inputs=1,
        )
        for _, outputs in PREDICTORS
    ]


def detector_layers(detector: ResolvedDetector, input_size: int) -> list[LayerCost]:
    """Every kernel a runtime launches for the detector's raw-output network (batch norm
    folded, activations fused), grouped by part: backbone, neck (laterals, top-down
    fusions, blocks, extra levels), then the head level by level (both towers, the
    predictors with their flattening copies), then the final joins. The neck is stage
    ``S + 1`` and the head ``S + 2`` for ``S`` backbone stages."""
    backbone, neck, head = detector.backbone, detector.neck, detector.head
    layers: list[LayerCost] = []
    size = output_size(input_size, 3, backbone.stem_stride)
    append_convolution(layers, 0, backbone.input_channels, backbone.stem_channels, 3, input_size, backbone.stem_stride)
    for stage_index, stage in enumerate(backbone.stages[: detector.used_stages], start=1):
        for block in stage:
            block_layers, size = block_kind(block.spec.op).layers(block, stage_index, size)
            layers.extend(block_layers)
    sizes = level_sizes(detector, input_size)
    neck_stage, head_stage = len(backbone.stages) + 1, len(backbone.stages) + 2
    width, backbone_levels = neck.channels, len(neck.in_channels)
    for in_channels, level_size in zip(neck.in_channels, sizes):
        layers += lateral_layers(neck_stage, in_channels, width, level_size)
    for level_size in sizes[: backbone_levels - 1]:
        layers += fuse_layers(neck_stage, width, level_size)
    for level_size in sizes[:backbone_levels]:
        for _ in range(neck.depth):
            layers += neck_block_layers(neck_stage, width, level_size)
    for previous in sizes[backbone_levels - 1 : -1][: neck.extra_levels]:
        layers += extra_level_layers(neck_stage, width, previous)
    for level_size in sizes:
        for _ in ("classification", "regression"):
            for layer in range(head.depth):
                layers += tower_layer_layers(
                    head_stage, head.in_channels if layer == 0 else head.channels, head.channels, level_size
                )
        layers += predictor_layers(head_stage, head.channels, head.num_classes, level_size)
    return layers + join_layers(head_stage, head.num_classes, sizes)


__all__ = [
    "PREDICTORS",
    "level_sizes",
    "detector_layers",
    "detector_program",
    "extra_level_layers",
    "fuse_layers",
    "join_layers",
    "lateral_layers",
    "neck_and_head_program",
    "neck_block_layers",
    "predictor_layers",
    "tower_layer_layers",
]
