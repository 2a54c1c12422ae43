"""Layer-wise features of architectures from three published search spaces.

The latency tables in ``shared/data/latency`` (HELP, NeurIPS'21) measure architectures of
three spaces: FBNet on CIFAR-100, Once-for-All MobileNetV3 (width 1.2) on ImageNet, and the
NAS-Bench-201 cell on CIFAR-10.  This module rebuilds each network as a list of layers by
pure shape arithmetic from the published space definitions, and turns the layers into
features a latency predictor can use (in the spirit of nn-Meter's kernel-level model and
HELP's layer-wise encodings):

* one :class:`LayerCost` per kernel the runtime launches: multiply-adds, parameters,
  activation elements read and written, and the kind of kernel (dense conv, depthwise,
  1x1, grouped 1x1, pooling, element-wise, linear, ...);
* totals per kind and per stage of those costs, the number of kernels, and
* positional one-hots of the choices (operation per layer, per edge or per block).

FLOPs convention: one multiply-add counts as one FLOP (FLOPs = MACs), as in fvcore; only
convolutions and linear layers have multiply-adds here.  BatchNorm, activations, pooling and
element-wise adds count zero FLOPs but do count as kernels with memory traffic.

Space definitions (checked against the public model code):

* **FBNet-CIFAR** (HW-NAS-Bench ``FBNet_Infer`` with a CIFAR dataset): stem 3x3 conv 3->16
  at 32x32, 7 stages of ``(layers, channels, stride)`` = (1,16,1) (4,24,1) (4,32,2) (4,64,2)
  (4,112,1) (4,184,2) (1,352,1), head 1x1 conv 352->1504, average pool, linear 1504->100.
  ``kK_eE[_g2]`` is 1x1 conv (C_in -> E*C_in, groups g) -> depthwise KxK (stride) ->
  1x1 conv (-> C_out, groups g), plus an add when C_in == C_out and stride 1; ``_g2`` also
  shuffles channels.  ``skip`` is the identity, or a 1x1 conv when the shape changes.
* **OFA MobileNetV3 w1.2** (``ofa_mbv3_d234_e346_k357_w1.2``, the one HELP searched): stem
  3x3 conv 3->24 stride 2, first block depthwise 3x3 + 1x1 24->24 with a residual, 5 stages
  of widths 32/48/96/136/192, strides 2/2/2/1/2, squeeze-excite in stages 2, 4, 5, depth
  2-4 blocks each (kernel 3/5/7, expansion 3/4/6, hidden width rounded to a multiple of 8),
  final 1x1 conv 192->1152, pool, 1x1 conv 1152->1536, linear 1536->1000.
* **NAS-Bench-201**: stem 3x3 conv 3->16 at 32x32, 3 stages of 5 cells with 16/32/64
  channels at 32/16/8 pixels, joined by a residual reduction block (3x3 conv stride 2,
  3x3 conv, avg-pool 2x2 + 1x1 conv shortcut), head BN-ReLU, pool, linear 64->10.  A cell
  has 4 nodes and 6 edges, each ``none``, ``skip_connect``, ``nor_conv_1x1``,
  ``nor_conv_3x3`` (ReLU-conv-BN) or ``avg_pool_3x3``; every node sums its inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from nas_search.errors import UserError
from nas_search.spaces.ops.costs import (  # the layer records, below hw_models so that each op can list its layers
    LAYER_KINDS,
    Block,
    LayerCost,
    convolution,
    elementwise,
    linear,
    pooling,
)

# --------------------------------------------------------------------------------------
# Layer costs


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet channel rounding: nearest multiple of ``divisor``, never 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


# --------------------------------------------------------------------------------------
# FBNet on CIFAR-100


@dataclass(frozen=True)
class FbnetOperation:
    """One FBNet layer choice: an inverted-residual block, or ``skip`` when kernel is 0."""

    kernel: int
    expansion: int
    groups: int


FBNET_OPERATIONS: dict[str, FbnetOperation] = {
    "k3_e1": FbnetOperation(3, 1, 1),
    "k3_e1_g2": FbnetOperation(3, 1, 2),
    "k3_e3": FbnetOperation(3, 3, 1),
    "k3_e6": FbnetOperation(3, 6, 1),
    "k5_e1": FbnetOperation(5, 1, 1),
    "k5_e1_g2": FbnetOperation(5, 1, 2),
    "k5_e3": FbnetOperation(5, 3, 1),
    "k5_e6": FbnetOperation(5, 6, 1),
    "skip": FbnetOperation(0, 0, 1),
}
#: ``(layers, channels, stride)`` per stage, FBNet v1 with the CIFAR strides.
FBNET_CIFAR_STAGES: tuple[tuple[int, int, int], ...] = (
    (1, 16, 1),
    (4, 24, 1),
    (4, 32, 2),
    (4, 64, 2),
    (4, 112, 1),
    (4, 184, 2),
    (1, 352, 1),
)
FBNET_CIFAR_STEM_CHANNELS = 16
FBNET_CIFAR_HEAD_CHANNELS = 1504
FBNET_CIFAR_CLASSES = 100
FBNET_CIFAR_RESOLUTION = 32
FBNET_LAYER_COUNT = sum(stage[0] for stage in FBNET_CIFAR_STAGES)
FBNET_STAGE_COUNT = len(FBNET_CIFAR_STAGES) + 2  # stem, 7 stages, head


def parse_fbnet(text: str) -> tuple[str, ...]:
    """Parse ``'k5_e6-skip-...'`` (22 operation names joined by ``-``)."""
    operations = tuple(text.strip().split("-"))
    unknown = [name for name in operations if name not in FBNET_OPERATIONS]
    if len(operations) != FBNET_LAYER_COUNT or unknown:
        raise UserError(
            f"FBNet architecture {text!r} is invalid; expected {FBNET_LAYER_COUNT} operations joined by '-', "
            f"each one of {', '.join(FBNET_OPERATIONS)}"
        )
    return operations


def fbnet_blocks(operations: Sequence[str]) -> list[Block]:
    """The kernels of an FBNet-CIFAR network, one tuple per block; stage 0 = stem, 8 = head."""
    stem, size = convolution(
        stage=0, in_channels=3, out_channels=FBNET_CIFAR_STEM_CHANNELS, kernel=3, in_size=FBNET_CIFAR_RESOLUTION
    )
    blocks: list[Block] = [(stem,)]
    channels = FBNET_CIFAR_STEM_CHANNELS
    position = 0
    for stage_index, (depth, out_channels, first_stride) in enumerate(FBNET_CIFAR_STAGES, start=1):
        for block_index in range(depth):
            stride = first_stride if block_index == 0 else 1
            block, size = _fbnet_block(operations[position], stage_index, channels, out_channels, size, stride)
            blocks.append(block)
            channels = out_channels
            position += 1
    head_stage = len(FBNET_CIFAR_STAGES) + 1
    head, size = convolution(
        stage=head_stage, in_channels=channels, out_channels=FBNET_CIFAR_HEAD_CHANNELS, kernel=1, in_size=size
    )
    pool = pooling(stage=head_stage, channels=FBNET_CIFAR_HEAD_CHANNELS, in_size=size, out_size=1)
    classifier = linear(stage=head_stage, in_features=FBNET_CIFAR_HEAD_CHANNELS, out_features=FBNET_CIFAR_CLASSES)
    blocks.append((head, pool, classifier))
    return blocks


def fbnet_layers(operations: Sequence[str]) -> list[LayerCost]:
    """All kernels of an FBNet-CIFAR network in order."""
    return [layer for block in fbnet_blocks(operations) for layer in block]


@functools.cache
def _fbnet_block(name: str, stage: int, in_channels: int, out_channels: int, size: int, stride: int) -> tuple[Block, int]:
    operation = FBNET_OPERATIONS[name]
    if operation.kernel == 0:  # skip: identity, or a 1x1 conv when the shape changes
        if stride == 1 and in_channels == out_channels:
            return (), size
        cost, out_size = convolution(
            stage=stage, in_channels=in_channels, out_channels=out_channels, kernel=1, in_size=size, stride=stride
        )
        return (cost,), out_size
    hidden = in_channels * operation.expansion
    groups = operation.groups
    expand, _ = convolution(stage=stage, in_channels=in_channels, out_channels=hidden, kernel=1, in_size=size, groups=groups)
    block = [expand]
    if groups > 1:
        block.append(elementwise("shuffle", stage=stage, channels=hidden, size=size, inputs=1))
    depthwise, out_size = convolution(
        stage=stage,
        in_channels=hidden,
        out_channels=hidden,
        kernel=operation.kernel,
        in_size=size,
        stride=stride,
        groups=hidden,
    )
    project, _ = convolution(
        stage=stage, in_channels=hidden, out_channels=out_channels, kernel=1, in_size=out_size, groups=groups
    )
    block.extend([depthwise, project])
    if in_channels == out_channels and stride == 1:
        block.append(elementwise("add", stage=stage, channels=out_channels, size=out_size, inputs=2))
    return tuple(block), out_size


def fbnet_positional(operations: Sequence[str]) -> list[float]:
    """One-hot of the operation at each of the 22 layers (22 x 9 values)."""
    names = list(FBNET_OPERATIONS)
    encoding = [0.0] * (len(operations) * len(names))
    for position, name in enumerate(operations):
        encoding[position * len(names) + names.index(name)] = 1.0
    return encoding


FBNET_POSITIONAL_NAMES: tuple[str, ...] = tuple(
    f"layer{position:02d}={name}" for position in range(FBNET_LAYER_COUNT) for name in FBNET_OPERATIONS
)


# --------------------------------------------------------------------------------------
# Once-for-All MobileNetV3, width multiplier 1.2


@dataclass(frozen=True)
class OfaStage:
    """One elastic stage of OFA MobileNetV3."""

    channels: int
    stride: int
    squeeze_excite: bool


OFA_WIDTH_MULTIPLIER = 1.2
OFA_STEM_CHANNELS = make_divisible(16 * OFA_WIDTH_MULTIPLIER)  # 24
OFA_STAGES: tuple[OfaStage, ...] = (
    OfaStage(make_divisible(24 * OFA_WIDTH_MULTIPLIER), 2, False),  # 32
    OfaStage(make_divisible(40 * OFA_WIDTH_MULTIPLIER), 2, True),  # 48
    OfaStage(make_divisible(80 * OFA_WIDTH_MULTIPLIER), 2, False),  # 96
    OfaStage(make_divisible(112 * OFA_WIDTH_MULTIPLIER), 1, True),  # 136
    OfaStage(make_divisible(160 * OFA_WIDTH_MULTIPLIER), 2, True),  # 192
)
OFA_FINAL_EXPAND_CHANNELS = make_divisible(960 * OFA_WIDTH_MULTIPLIER)  # 1152
OFA_FEATURE_MIX_CHANNELS = make_divisible(1280 * OFA_WIDTH_MULTIPLIER)  # 1536
OFA_CLASSES = 1000
OFA_MAX_DEPTH = 4
OFA_BLOCK_SLOTS = OFA_MAX_DEPTH * len(OFA_STAGES)
OFA_KERNELS = (3, 5, 7)
OFA_EXPANSIONS = (3, 4, 6)
OFA_DEPTHS = (2, 3, 4)
OFA_SQUEEZE_REDUCTION = 4
OFA_STAGE_COUNT = len(OFA_STAGES) + 2  # stem with first block, 5 stages, head


@dataclass(frozen=True)
class OfaArchitecture:
    """An OFA MobileNetV3 subnet: 20 kernel/expansion slots (4 per stage), 5 depths, resolution."""

    kernels: tuple[int, ...]
    expansions: tuple[int, ...]
    depths: tuple[int, ...]
    resolution: int

    def active_blocks(self) -> list[tuple[int, int, int, int]]:
        """``(stage, slot, kernel, expansion)`` of each block in use (the first ``depth`` slots)."""
        blocks = []
        for stage, depth in enumerate(self.depths):
            for offset in range(depth):
                slot = stage * OFA_MAX_DEPTH + offset
                blocks.append((stage, slot, self.kernels[slot], self.expansions[slot]))
        return blocks


def parse_ofa(kernels: str, expansions: str, depths: str, resolution: str) -> OfaArchitecture:
    """Parse the four OFA columns (``'7-5-...'`` x20, ``'6-4-...'`` x20, ``'2-3-4-3-4'``, ``'204'``)."""
    try:
        architecture = OfaArchitecture(
            tuple(int(value) for value in kernels.split("-")),
            tuple(int(value) for value in expansions.split("-")),
            tuple(int(value) for value in depths.split("-")),
            int(float(resolution)),
        )
    except ValueError:
        architecture = None
    if (
        architecture is None
        or len(architecture.kernels) != OFA_BLOCK_SLOTS
        or len(architecture.expansions) != OFA_BLOCK_SLOTS
        or len(architecture.depths) != len(OFA_STAGES)
        or not set(architecture.kernels) <= set(OFA_KERNELS)
        or not set(architecture.expansions) <= set(OFA_EXPANSIONS)
        or not set(architecture.depths) <= set(OFA_DEPTHS)
        or architecture.resolution < 32
    ):
        raise UserError(
            f"OFA architecture kernels={kernels!r} expansions={expansions!r} depths={depths!r} "
            f"resolution={resolution!r} is invalid; expected {OFA_BLOCK_SLOTS} kernels in {OFA_KERNELS}, "
            f"{OFA_BLOCK_SLOTS} expansions in {OFA_EXPANSIONS}, {len(OFA_STAGES)} depths in {OFA_DEPTHS}, "
            "an integer resolution >= 32"
        )
    return architecture


def ofa_blocks(architecture: OfaArchitecture) -> list[Block]:
    """The kernels of an OFA MobileNetV3 w1.2 subnet, one tuple per block; stage 0 = stem, 6 = head."""
    stem, size = convolution(
        stage=0, in_channels=3, out_channels=OFA_STEM_CHANNELS, kernel=3, in_size=architecture.resolution, stride=2
    )
    first_depthwise, _ = convolution(
        stage=0, in_channels=OFA_STEM_CHANNELS, out_channels=OFA_STEM_CHANNELS, kernel=3, in_size=size, groups=OFA_STEM_CHANNELS
    )
    first_project, _ = convolution(
        stage=0, in_channels=OFA_STEM_CHANNELS, out_channels=OFA_STEM_CHANNELS, kernel=1, in_size=size
    )
    first_add = elementwise("add", stage=0, channels=OFA_STEM_CHANNELS, size=size, inputs=2)
    blocks: list[Block] = [(stem,), (first_depthwise, first_project, first_add)]
    channels = OFA_STEM_CHANNELS
    previous_stage = -1
    for stage, _slot, kernel, expansion in architecture.active_blocks():
        stride = OFA_STAGES[stage].stride if stage != previous_stage else 1
        previous_stage = stage
        block, size = _ofa_block(stage, channels, kernel, expansion, size, stride)
        blocks.append(block)
        channels = OFA_STAGES[stage].channels
    head_stage = len(OFA_STAGES) + 1
    final_expand, size = convolution(
        stage=head_stage, in_channels=channels, out_channels=OFA_FINAL_EXPAND_CHANNELS, kernel=1, in_size=size
    )
    pool = pooling(stage=head_stage, channels=OFA_FINAL_EXPAND_CHANNELS, in_size=size, out_size=1)
    feature_mix, _ = convolution(
        stage=head_stage, in_channels=OFA_FINAL_EXPAND_CHANNELS, out_channels=OFA_FEATURE_MIX_CHANNELS, kernel=1, in_size=1
    )
    classifier = linear(stage=head_stage, in_features=OFA_FEATURE_MIX_CHANNELS, out_features=OFA_CLASSES)
    blocks.append((final_expand, pool, feature_mix, classifier))
    return blocks


def ofa_layers(architecture: OfaArchitecture) -> list[LayerCost]:
    """All kernels of an OFA MobileNetV3 w1.2 subnet in order."""
    return [layer for block in ofa_blocks(architecture) for layer in block]


@functools.cache
def _ofa_block(stage_index: int, in_channels: int, kernel: int, expansion: int, size: int, stride: int) -> tuple[Block, int]:
    definition = OFA_STAGES[stage_index]
    stage = stage_index + 1
    hidden = make_divisible(round(in_channels * expansion))
    expand, _ = convolution(stage=stage, in_channels=in_channels, out_channels=hidden, kernel=1, in_size=size)
    depthwise, out_size = convolution(
        stage=stage, in_channels=hidden, out_channels=hidden, kernel=kernel, in_size=size, stride=stride, groups=hidden
    )
    block = [expand, depthwise]
    if definition.squeeze_excite:
        squeezed = make_divisible(hidden // OFA_SQUEEZE_REDUCTION)
        block.append(pooling(stage=stage, channels=hidden, in_size=out_size, out_size=1))
        block.append(linear(stage=stage, in_features=hidden, out_features=squeezed))
        block.append(linear(stage=stage, in_features=squeezed, out_features=hidden))
        block.append(elementwise("multiply", stage=stage, channels=hidden, size=out_size, inputs=2))
    project, _ = convolution(stage=stage, in_channels=hidden, out_channels=definition.channels, kernel=1, in_size=out_size)
    block.append(project)
    if stride == 1 and in_channels == definition.channels:
        block.append(elementwise("add", stage=stage, channels=definition.channels, size=out_size, inputs=2))
    return tuple(block), out_size


def ofa_positional(architecture: OfaArchitecture) -> list[float]:
    """Per slot: active flag, kernel one-hot, expansion one-hot (zeros when inactive); depths; resolution."""
    active = {slot for _stage, slot, _kernel, _expansion in architecture.active_blocks()}
    encoding: list[float] = []
    for slot in range(OFA_BLOCK_SLOTS):
        is_active = slot in active
        encoding.append(float(is_active))
        encoding.extend(float(is_active and architecture.kernels[slot] == kernel) for kernel in OFA_KERNELS)
        encoding.extend(float(is_active and architecture.expansions[slot] == value) for value in OFA_EXPANSIONS)
    encoding.extend(float(depth) for depth in architecture.depths)
    encoding.append(float(architecture.resolution))
    return encoding


OFA_POSITIONAL_NAMES: tuple[str, ...] = (
    *(
        name
        for slot in range(OFA_BLOCK_SLOTS)
        for name in (
            f"block{slot:02d}_active",
            *(f"block{slot:02d}_kernel={kernel}" for kernel in OFA_KERNELS),
            *(f"block{slot:02d}_expansion={value}" for value in OFA_EXPANSIONS),
        )
    ),
    *(f"stage{stage + 1}_depth" for stage in range(len(OFA_STAGES))),
    "resolution",
)


# --------------------------------------------------------------------------------------
# NAS-Bench-201


NB201_OPERATIONS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: ``(target node, source node)`` of the 6 edges, in ``arch_str`` order.
NB201_EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NB201_STAGE_CHANNELS: tuple[int, ...] = (16, 32, 64)
NB201_CELLS_PER_STAGE = 5
NB201_RESOLUTION = 32
NB201_CLASSES = 10
NB201_STAGE_COUNT = len(NB201_STAGE_CHANNELS) + 2  # stem, 3 stages, head


def parse_nb201(text: str) -> tuple[str, ...]:
    """Parse ``'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'`` into the 6 edge operations."""
    operations: list[str] = []
    sources: list[tuple[int, int]] = []
    for node, group in enumerate(text.strip().strip("+").split("+"), start=1):
        for token in filter(None, group.split("|")):
            name, _, source = token.partition("~")
            operations.append(name)
            sources.append((node, int(source) if source.isdigit() else -1))
    if tuple(sources) != NB201_EDGES or not set(operations) <= set(NB201_OPERATIONS):
        raise UserError(
            f"NAS-Bench-201 architecture {text!r} is invalid; expected "
            f"'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with each op one of {', '.join(NB201_OPERATIONS)}"
        )
    return tuple(operations)


def nb201_blocks(operations: Sequence[str]) -> list[Block]:
    """The kernels of a NAS-Bench-201 network, one tuple per cell or fixed block.

    Every edge runs, as in the benchmark's ``InferCell``; stage 0 = stem, 4 = head.
    """
    stem, size = convolution(stage=0, in_channels=3, out_channels=NB201_STAGE_CHANNELS[0], kernel=3, in_size=NB201_RESOLUTION)
    blocks: list[Block] = [(stem,)]
    channels = NB201_STAGE_CHANNELS[0]
    operations = tuple(operations)
    for stage_index, stage_channels in enumerate(NB201_STAGE_CHANNELS, start=1):
        if stage_channels != channels:
            reduction, size = _nb201_reduction(stage_index, channels, stage_channels, size)
            blocks.append(reduction)
            channels = stage_channels
        cell = _nb201_cell(operations, stage_index, channels, size)
        blocks.extend([cell] * NB201_CELLS_PER_STAGE)
    head_stage = len(NB201_STAGE_CHANNELS) + 1
    pool = pooling(stage=head_stage, channels=channels, in_size=size, out_size=1)
    blocks.append((pool, linear(stage=head_stage, in_features=channels, out_features=NB201_CLASSES)))
    return blocks


def nb201_layers(operations: Sequence[str]) -> list[LayerCost]:
    """All kernels of a NAS-Bench-201 network in order."""
    return [layer for block in nb201_blocks(operations) for layer in block]


@functools.cache
def _nb201_reduction(stage: int, in_channels: int, out_channels: int, size: int) -> tuple[Block, int]:
    first, out_size = convolution(
        stage=stage, in_channels=in_channels, out_channels=out_channels, kernel=3, in_size=size, stride=2
    )
    second, _ = convolution(stage=stage, in_channels=out_channels, out_channels=out_channels, kernel=3, in_size=out_size)
    shortcut_pool = pooling(stage=stage, channels=in_channels, in_size=size, out_size=out_size)
    shortcut_conv, _ = convolution(stage=stage, in_channels=in_channels, out_channels=out_channels, kernel=1, in_size=out_size)
    add = elementwise("add", stage=stage, channels=out_channels, size=out_size, inputs=2)
    return (first, second, shortcut_pool, shortcut_conv, add), out_size


NB201_EDGE_COSTS: dict[str, Callable[[int, int, int], Block]] = {
    # NAS-Bench-201's Zero op still runs ``x.mul(0.)`` on the tensor
    "none": lambda stage, channels, size: (elementwise("multiply", stage=stage, channels=channels, size=size, inputs=1),),
    "skip_connect": lambda stage, channels, size: (),
    "nor_conv_1x1": lambda stage, channels, size: (
        convolution(stage=stage, in_channels=channels, out_channels=channels, kernel=1, in_size=size)[0],
    ),
    "nor_conv_3x3": lambda stage, channels, size: (
        convolution(stage=stage, in_channels=channels, out_channels=channels, kernel=3, in_size=size)[0],
    ),
    "avg_pool_3x3": lambda stage, channels, size: (pooling(stage=stage, channels=channels, in_size=size, out_size=size),),
}


@functools.cache
def _nb201_edge(name: str, stage: int, channels: int, size: int) -> Block:
    return NB201_EDGE_COSTS[name](stage, channels, size)


@functools.cache
def _nb201_node_sums(stage: int, channels: int, size: int) -> Block:
    """Each node sums the outputs of all its incoming edges ("none" edges give zero tensors)."""
    sums: list[LayerCost] = []
    for node in (1, 2, 3):
        inputs = sum(1 for target, _source in NB201_EDGES if target == node)
        sums.extend(elementwise("add", stage=stage, channels=channels, size=size, inputs=2) for _ in range(inputs - 1))
    return tuple(sums)


def _nb201_cell(operations: tuple[str, ...], stage: int, channels: int, size: int) -> Block:
    edges = tuple(layer for name in operations for layer in _nb201_edge(name, stage, channels, size))
    return edges + _nb201_node_sums(stage, channels, size)


def nb201_positional(operations: Sequence[str]) -> list[float]:
    """One-hot of the operation on each of the 6 edges (6 x 5 values)."""
    encoding = [0.0] * (len(NB201_EDGES) * len(NB201_OPERATIONS))
    for edge, name in enumerate(operations):
        encoding[edge * len(NB201_OPERATIONS) + NB201_OPERATIONS.index(name)] = 1.0
    return encoding


NB201_POSITIONAL_NAMES: tuple[str, ...] = tuple(
    f"edge{target}{source}={name}" for target, source in NB201_EDGES for name in NB201_OPERATIONS
)


# --------------------------------------------------------------------------------------
# Feature matrices


@dataclass(frozen=True)
class ArchitectureFeatures:
    """Feature matrices of a set of architectures (one row each).

    Attributes:
        flops: total multiply-adds per architecture (the FLOPs-only baseline feature).
        aggregate: totals per kernel kind and per stage (MACs, memory, kernel count), and
            network totals; continuous, meant for linear models.
        aggregate_names: column names of ``aggregate``.
        positional: one-hot choices per position (layer, edge or block slot).
        positional_names: column names of ``positional``.
    """

    flops: np.ndarray
    aggregate: np.ndarray
    aggregate_names: tuple[str, ...]
    positional: np.ndarray
    positional_names: tuple[str, ...]

    @property
    def combined(self) -> np.ndarray:
        """``aggregate`` and ``positional`` side by side."""
        return np.hstack([self.aggregate, self.positional])

    @property
    def combined_names(self) -> tuple[str, ...]:
        """Column names of :attr:`combined`."""
        return self.aggregate_names + self.positional_names


def aggregate_features(layers: Sequence[LayerCost], stage_count: int) -> np.ndarray:
    """Totals of one network: overall, per kernel kind and per stage (see :func:`aggregate_names`).

    Per kind and per stage: MACs, memory elements, kernel count.  Overall: MACs, params,
    memory elements, activation elements, kernel count.
    """
    kinds = np.fromiter((KIND_INDEX[layer.kind] for layer in layers), dtype=np.int64, count=len(layers))
    stages = np.fromiter((layer.stage for layer in layers), dtype=np.int64, count=len(layers))
    macs = np.fromiter((layer.macs for layer in layers), dtype=np.float64, count=len(layers))
    params = np.fromiter((layer.params for layer in layers), dtype=np.float64, count=len(layers))
    activations = np.fromiter((layer.activation_elements for layer in layers), dtype=np.float64, count=len(layers))
    memory = activations + params
    totals = np.array([macs.sum(), params.sum(), memory.sum(), activations.sum(), float(len(layers))])
    parts = [totals]
    for groups, group_count in ((kinds, len(LAYER_KINDS)), (stages, stage_count)):
        per_group = np.stack(
            [
                np.bincount(groups, weights=macs, minlength=group_count),
                np.bincount(groups, weights=memory, minlength=group_count),
                np.bincount(groups, minlength=group_count).astype(np.float64),
            ],
            axis=1,
        )
        parts.append(per_group.reshape(-1))
    return np.concatenate(parts)


def aggregate_names(stage_count: int) -> tuple[str, ...]:
    """Column names of :func:`aggregate_features`."""
    names = ["total_macs", "total_params", "total_memory", "total_activations", "kernel_count"]
    for group in (*LAYER_KINDS, *(f"stage{stage}" for stage in range(stage_count))):
        names.extend([f"{group}_macs", f"{group}_memory", f"{group}_count"])
    return tuple(names)


KIND_INDEX: dict[str, int] = {kind: index for index, kind in enumerate(LAYER_KINDS)}


def build_features(
    block_lists: Sequence[Sequence[Block]],
    positional_rows: Sequence[Sequence[float]],
    positional_names: Sequence[str],
    stage_count: int,
) -> ArchitectureFeatures:
    """Stack per-architecture blocks and positional encodings into :class:`ArchitectureFeatures`.

    Aggregate features are sums over layers, so they are summed over blocks, each block's
    totals computed once.  ``stage_count`` is the number of stages of the space (stem and
    head included), so that the columns do not depend on which architectures are in the set.
    """
    names = aggregate_names(stage_count)
    aggregate = np.zeros((len(block_lists), len(names)))
    block_totals: dict[Block, np.ndarray] = {}
    for row, blocks in enumerate(block_lists):
        for block in blocks:
            totals = block_totals.get(block)
            if totals is None:
                totals = block_totals[block] = aggregate_features(block, stage_count)
            aggregate[row] += totals
    positional = np.asarray(positional_rows, dtype=np.float64).reshape(len(block_lists), len(positional_names))
    return ArchitectureFeatures(
        flops=aggregate[:, 0].copy(),
        aggregate=aggregate,
        aggregate_names=names,
        positional=positional,
        positional_names=tuple(positional_names),
    )


def total_macs(layers: Sequence[LayerCost]) -> int:
    """Total multiply-adds (FLOPs in the fvcore convention) of a list of layers."""
    return sum(layer.macs for layer in layers)


__all__ = [
    "Block",
    "ArchitectureFeatures",
    "FBNET_OPERATIONS",
    "LayerCost",
    "NB201_OPERATIONS",
    "OfaArchitecture",
    "build_features",
    "fbnet_blocks",
    "fbnet_layers",
    "fbnet_positional",
    "nb201_blocks",
    "nb201_layers",
    "nb201_positional",
    "ofa_blocks",
    "ofa_layers",
    "ofa_positional",
    "parse_fbnet",
    "parse_nb201",
    "parse_ofa",
    "total_macs",
]
