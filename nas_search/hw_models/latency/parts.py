"""The part catalogue: what a latency table times, and how each kind of part is built.

A *part* (:class:`BlockConfig`) is one distinct piece of a network at its input size: the
stem, a block, the head, or a detector's neck and head pieces. Each kind of part is a
:class:`PartKind` (how it is built as a standalone module, its analytic features and its
example input). A :class:`TableTask` tells the latency tables how the networks of a space
are cut into parts; a classifier's is :data:`CLASSIFIER_TABLE_TASK`, and a space whose
networks are something else carries its own in ``space.network_costs.latency_table``
(:class:`nas_search.hw_models.network.NetworkCosts`). Nothing here is filled at import
time by another module: every function that needs the valid part kinds takes the space.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from nas_search.errors import UserError
from nas_search.hw_models.flops import Cost, conv_norm, output_size
from nas_search.hw_models.memory import block_layer_stats
from nas_search.spaces.ops import BLOCK_KINDS, block_kind
from nas_search.spaces.resolved import ResolvedBlock, ResolvedNetwork, scaled_channels
from nas_search.spaces.space import SearchSpace, has_residual, hidden_channels
from nas_search.spec import ArchSpec, BlockSpec

# ====================================================================================
# Block configurations

#: Output size of the classifier parts whose output is not ``output_size(input, kernel, stride)``.
SIZE_OF_OUTPUT: dict[str, Callable[[BlockConfig], int]] = {"head": lambda config: 1}

#: Python type of each :class:`BlockConfig` field in a table file (default: ``int``).
FIELD_TYPES: dict[str, type] = {"op": str, "residual": bool, "expansion": float, "overlap": float}


@dataclass(frozen=True)
class BlockConfig:
    """One distinct part that is timed: a block, the stem or the head, at its input size.

    Attributes:
        op: the part kind: ``stem``, ``head``, a block op (``mbconv``, ``dsc``, ``scc``,
            ``slim``) or a kind of the space's own table task (a detector's ``lateral``, ...).
        in_channels / out_channels: channels after rounding to the channel divisor.
        input_size: spatial size of the part's input (square).
        kernel / stride: the depthwise kernel and stride (stem: its 3x3 conv; head: 1, 1).
        hidden_channels: expanded width (mbconv), squeeze width (slim), else input width.
        expansion: mbconv expansion ratio (1 for other parts).
        groups / overlap: SCC channel groups and overlap (1 and 0 for other parts).
        squeeze_excite_channels: reduced width of the squeeze-excite (0 when absent).
        residual: whether the block adds its input to its output.
        num_classes: classifier outputs (head only, else 0).
    """

    op: str
    in_channels: int
    out_channels: int
    input_size: int
    kernel: int = 1
    stride: int = 1
    hidden_channels: int = 0
    expansion: float = 1.0
    groups: int = 1
    overlap: float = 0.0
    squeeze_excite_channels: int = 0
    residual: bool = False
    num_classes: int = 0

    @property
    def key(self) -> str:
        """Stable lookup key, e.g. ``mbconv|in24|out24|hid96|k5|s1|e4|g1|o0|se0|res1|px56|cls0``."""
        return (
            f"{self.op}|in{self.in_channels}|out{self.out_channels}|hid{self.hidden_channels}|k{self.kernel}"
            f"|s{self.stride}|e{self.expansion:g}|g{self.groups}|o{self.overlap:g}|se{self.squeeze_excite_channels}"
            f"|res{int(self.residual)}|px{self.input_size}|cls{self.num_classes}"
        )

    @property
    def output_size(self) -> int:
        """Spatial size of a classifier part's output (1 for the head, which ends in the
        classifier). A space's own part kinds may mean ``stride`` differently (a detector's
        ``fuse``), so this is only defined for the classifier parts."""
        if self.op in SIZE_OF_OUTPUT:
            return SIZE_OF_OUTPUT[self.op](self)
        return output_size(self.input_size, self.kernel, self.stride)

    @classmethod
    def from_block(cls, block: ResolvedBlock, input_size: int) -> BlockConfig:
        """The configuration of a resolved block whose input is ``input_size`` pixels."""
        return cls(
            op=block.spec.op,
            in_channels=block.in_channels,
            out_channels=block.out_channels,
            input_size=input_size,
            kernel=block.spec.kernel,
            stride=block.stride,
            hidden_channels=block.hidden_channels,
            expansion=block.spec.expansion,
            groups=block.spec.groups,
            overlap=block.spec.overlap,
            squeeze_excite_channels=block.squeeze_excite_channels,
            residual=block.residual,
        )

    def resolved_block(self) -> ResolvedBlock:
        """The :class:`ResolvedBlock` of a block configuration (not for stem or head)."""
        spec = BlockSpec(
            op=self.op,
            kernel=self.kernel,
            width=1.0,
            expansion=self.expansion,
            groups=self.groups,
            overlap=self.overlap,
            squeeze_excite=self.squeeze_excite_channels > 0,
        )
        return ResolvedBlock(
            spec=spec,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            stride=self.stride,
            hidden_channels=self.hidden_channels,
            squeeze_excite_channels=self.squeeze_excite_channels,
            residual=self.residual,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (every field)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], kinds: Mapping[str, Any] | None = None) -> BlockConfig:
        """Build from :meth:`to_dict` output, checking field names and types.

        ``kinds`` are the valid part kinds (:func:`part_kinds` of the table's space); without
        them any non-empty ``op`` is accepted, and the kinds are checked when the table
        meets its space (:class:`~nas_search.hw_models.latency.model.LatencyModel`)."""
        known = {item.name: item for item in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UserError(f"block entry has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
        operation = data.get("op")
        if not isinstance(operation, str) or not operation or (kinds is not None and operation not in kinds):
            allowed = ", ".join(kinds) if kinds is not None else "a part kind name"
            raise UserError(f"block entry op={operation!r} is invalid; allowed: {allowed}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            expected = FIELD_TYPES.get(name, int)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise UserError(f"block entry {name}={value!r} is invalid; allowed: a value of type {expected.__name__}")
            values[name] = value
        config = cls(**values)
        if min(config.in_channels, config.out_channels, config.input_size) <= 0:
            raise UserError(f"block entry {config.key} has a non-positive channel count or size; allowed: positive")
        return config


# ====================================================================================
# Part kinds


@dataclass(frozen=True)
class PartKind:
    """One kind of timed part.

    Attributes:
        build: ``config -> nn.Module``, the part as a standalone module.
        cost: ``config -> (FLOPs and params, activation bytes moved, fused layers)``.
        example: ``config -> example input`` for a part taking more than one tensor (a
            tuple); ``None`` gives one random ``[1, C, S, S]`` tensor.
    """

    build: Callable[[BlockConfig], Any]
    cost: Callable[[BlockConfig], tuple[Cost, int, int]]
    example: Callable[[BlockConfig], Any] | None = None


def block_module(block: ResolvedBlock) -> Any:
    """The standalone module of a resolved block (the one place block parts are built):
    its op's ``BlockKind.static_block``."""
    return block_kind(block.spec.op).static_block(block)


def _build_stem(config: BlockConfig) -> Any:
    from nas_search.spaces.static import conv_norm_activation

    return conv_norm_activation(config.in_channels, config.out_channels, config.kernel, config.stride)


def _build_head(config: BlockConfig) -> Any:
    from torch import nn

    from nas_search.spaces.static import conv_norm_activation

    return nn.Sequential(
        conv_norm_activation(config.in_channels, config.out_channels),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(config.out_channels, config.num_classes),
    )


def _build_block(config: BlockConfig) -> Any:
    return block_module(config.resolved_block())


def _stem_cost(config: BlockConfig) -> tuple[Cost, int, int]:
    size = config.output_size
    cost = conv_norm(config.in_channels, config.out_channels, config.kernel, size)
    traffic = (config.in_channels * config.input_size**2 + config.out_channels * size * size) * 4
    return cost, traffic, 1


def _head_cost(config: BlockConfig) -> tuple[Cost, int, int]:
    size = config.input_size
    cost = conv_norm(config.in_channels, config.out_channels, 1, size)
    cost += Cost(config.out_channels * size * size, 0)
    cost += Cost(config.out_channels * config.num_classes, config.out_channels * config.num_classes + config.num_classes)
    traffic = (config.in_channels + 2 * config.out_channels) * size * size * 4 + config.out_channels * 4
    return cost, traffic, 3


def _block_cost(config: BlockConfig) -> tuple[Cost, int, int]:
    block = config.resolved_block()
    cost, _ = block_kind(config.op).cost(block, config.input_size)
    return (cost, *block_layer_stats(block, config.input_size))


#: The kind of every block part, whatever its op (built and costed through the op's tables).
BLOCK_PART_KIND = PartKind(_build_block, _block_cost)


class PartKinds(Mapping[str, PartKind]):
    """Named part kinds plus :data:`BLOCK_PART_KIND` for every block op of
    :data:`nas_search.spaces.ops.BLOCK_KINDS`, read at each lookup, so that an op the op
    table gains (``nas_search.spaces.ops``) is a valid part kind without any registration."""

    def __init__(self, named: Mapping[str, PartKind]) -> None:
        self._named = dict(named)

    def __getitem__(self, kind: str) -> PartKind:
        if kind in self._named:
            return self._named[kind]
        if kind in BLOCK_KINDS:
            return BLOCK_PART_KIND
        raise KeyError(kind)

    def __iter__(self) -> Iterator[str]:
        yield from self._named
        yield from (op for op in BLOCK_KINDS if op not in self._named)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def with_kinds(self, named: Mapping[str, PartKind]) -> PartKinds:
        """These kinds and ``named`` (a space's own parts, e.g. a detector's neck and head)."""
        return PartKinds({**self._named, **named})


#: The stem and every block op (a backbone, shared by every space's parts).
BACKBONE_PART_KINDS = PartKinds({"stem": PartKind(_build_stem, _stem_cost)})

#: The part kinds of a classifier: the backbone's and the head.
CLASSIFIER_PART_KINDS = BACKBONE_PART_KINDS.with_kinds({"head": PartKind(_build_head, _head_cost)})


# ====================================================================================
# Parts of a network


def backbone_parts(network: ResolvedNetwork, input_size: int, stages: int | None = None) -> tuple[list[BlockConfig], list[int]]:
    """The stem and every block of the first ``stages`` stages (default: all) of a
    resolved network, each with its input size, and each stage's output size."""
    size = output_size(input_size, 3, network.stem_stride)
    parts = [
        BlockConfig("stem", network.input_channels, network.stem_channels, input_size, kernel=3, stride=network.stem_stride)
    ]
    sizes = []
    for stage in network.stages[:stages]:
        for block in stage:
            parts.append(BlockConfig.from_block(block, size))
            size = output_size(size, block.spec.kernel, block.stride)
        sizes.append(size)
    return parts, sizes


def network_parts(network: ResolvedNetwork, input_size: int) -> list[BlockConfig]:
    """Stem, every block and the head of a resolved network, each with its input size."""
    parts, sizes = backbone_parts(network, input_size)
    parts.append(BlockConfig("head", network.last_channels, network.head_channels, sizes[-1], num_classes=network.num_classes))
    return parts


def restrict_widths(space: SearchSpace, widths: Sequence[float] | None) -> SearchSpace:
    """The same space (same name) with every block's width ratios limited to ``widths``,
    for a quick partial profile. ``None`` returns the space unchanged."""
    if not widths:
        return space
    wanted = set(float(width) for width in widths)
    stages = []
    for index, stage in enumerate(space.stages):
        kept = tuple(width for width in stage.widths if width in wanted)
        if not kept:
            raise UserError(
                f"--widths {','.join(f'{width:g}' for width in sorted(wanted))} leaves no width for stage {index} of "
                f"space {space.name!r}; allowed: some of {', '.join(f'{width:g}' for width in stage.widths)}"
            )
        stages.append(replace(stage, widths=kept))
    detector = getattr(space, "detector", None)
    if detector is None:
        return replace(space, stages=tuple(stages))
    narrowed = {}
    for name in ("neck_widths", "head_widths"):
        kept = tuple(width for width in getattr(detector, name) if width in wanted)
        if not kept:
            raise UserError(
                f"--widths {','.join(f'{width:g}' for width in sorted(wanted))} leaves no {name[:-1].replace('_', ' ')} "
                f"of space {space.name!r}; allowed: some of {', '.join(f'{width:g}' for width in getattr(detector, name))}"
            )
        narrowed[name] = kept
    return replace(space, stages=tuple(stages), detector=replace(detector, **narrowed))  # type: ignore[call-arg]


def _stage_blocks(
    space: SearchSpace, stage_index: int, position: int, inputs: list[int], channel_divisor: int
) -> list[ResolvedBlock]:
    """Every valid block at ``position`` (0: the stage's first, 1: any later one) of a stage
    whose input widths are ``inputs``; SCC choices whose groups do not divide the input
    channels are invalid in the space and skipped."""
    stage = space.stages[stage_index]
    stride = stage.stride if position == 0 else 1
    blocks = []
    for block_spec in space.block_choices(stage_index):
        out_channels = scaled_channels(stage.max_channels, block_spec.width, channel_divisor)
        for in_channels in inputs:
            if block_spec.op == "scc" and in_channels % block_spec.groups:
                continue
            hidden = hidden_channels(block_spec, in_channels, out_channels, channel_divisor)
            squeeze = scaled_channels(hidden / 4, 1.0, channel_divisor) if block_spec.squeeze_excite else 0
            blocks.append(
                ResolvedBlock(
                    spec=block_spec,
                    in_channels=in_channels,
                    out_channels=out_channels,
                    stride=stride,
                    hidden_channels=hidden,
                    squeeze_excite_channels=squeeze,
                    residual=has_residual(block_spec, position, in_channels, out_channels, stride),
                )
            )
    return blocks


def distinct_backbone_parts(
    space: SearchSpace, input_size: int, channel_divisor: int = 8, stages: int | None = None
) -> tuple[list[BlockConfig], list[tuple[list[int], int]]]:
    """Every distinct stem and block of the first ``stages`` stages (default: all) at
    ``input_size``, and each stage's possible output widths and its output size.

    A stage's first block sees any output width of the previous stage (or of the stem) and
    the stage's stride; later blocks see the stage's own widths and stride 1.
    """
    found: list[BlockConfig] = []
    stage_outputs: list[tuple[list[int], int]] = []
    size = output_size(input_size, 3, space.stem_stride)
    previous = sorted({scaled_channels(space.stem_channels, width, channel_divisor) for width in space.stem_widths})
    found += [BlockConfig("stem", 3, channels, input_size, kernel=3, stride=space.stem_stride) for channels in previous]
    for stage_index, stage in enumerate(space.stages[:stages]):
        outputs = sorted({scaled_channels(stage.max_channels, width, channel_divisor) for width in stage.widths})
        stage_output_size = output_size(size, 3, stage.stride)
        for position in [0] + ([1] if stage.max_depth > 1 else []):
            inputs = previous if position == 0 else outputs
            block_input_size = size if position == 0 else stage_output_size
            found += [
                BlockConfig.from_block(block, block_input_size)
                for block in _stage_blocks(space, stage_index, position, inputs, channel_divisor)
            ]
        previous, size = outputs, stage_output_size
        stage_outputs.append((outputs, size))
    return found, stage_outputs


def _distinct_classifier_parts(space: SearchSpace, input_size: int, channel_divisor: int, classes: int) -> list[BlockConfig]:
    parts, stage_outputs = distinct_backbone_parts(space, input_size, channel_divisor)
    last_widths, size = stage_outputs[-1]
    for last in last_widths:
        for width in space.head_widths:
            head = scaled_channels(space.head_channels, width, channel_divisor)
            parts.append(BlockConfig("head", last, head, size, num_classes=classes))
    return parts


def _build_classifier(space: SearchSpace, spec: ArchSpec, num_classes: int | None, input_size: int) -> Any:
    from nas_search.spaces.static import build_static_model

    return build_static_model(space.resolve(spec, num_classes=num_classes))


# ====================================================================================
# Table tasks


@dataclass(frozen=True)
class TableTask:
    """How latency tables handle the networks of one kind of space (classifiers, detectors).

    Attributes:
        part_kinds: every kind of part its networks are cut into, by name.
        parts: ``(resolved model, input size) -> parts``, in execution order.
        distinct: ``(space, input size, channel divisor, classes) -> every distinct part``.
        build: ``(space, spec, classes, input size) -> the whole standalone module``.
        extra_features: ``(resolved model, input size) -> (FLOPs, params, activation bytes,
            fused layers)`` of what runs outside the parts (e.g. a detector's final joins).
        check_input_size: raises :class:`UserError` for an input size the networks cannot
            take (a detector's must be a multiple of 32).
    """

    part_kinds: Mapping[str, PartKind]
    parts: Callable[[Any, int], list[BlockConfig]]
    distinct: Callable[[SearchSpace, int, int, int], list[BlockConfig]]
    build: Callable[[SearchSpace, ArchSpec, int | None, int], Any]
    extra_features: Callable[[Any, int], tuple[int, int, int, int]] | None = None
    check_input_size: Callable[[int], Any] | None = None


#: The table task of a classifier (a space whose ``network_costs`` is None).
CLASSIFIER_TABLE_TASK = TableTask(
    part_kinds=CLASSIFIER_PART_KINDS, parts=network_parts, distinct=_distinct_classifier_parts, build=_build_classifier
)


def has_table_support(space: SearchSpace) -> bool:
    """Whether latency tables can be profiled for ``space``: a classifier, or a space whose
    ``network_costs`` carry a ``latency_table``."""
    return space.network_costs is None or getattr(space.network_costs, "latency_table", None) is not None


def table_task(space: SearchSpace) -> TableTask:
    """How latency tables cut the networks of ``space`` into parts: the classifier's when
    ``space.network_costs`` is None, else the ``latency_table`` its network costs carry."""
    if space.network_costs is None:
        return CLASSIFIER_TABLE_TASK
    task = getattr(space.network_costs, "latency_table", None)
    if task is None:
        raise UserError(
            f"space {space.name!r} (task {space.task}) has no latency table support; accepted: a space "
            "whose network costs carry a latency_table (the classifier and detection spaces)"
        )
    return task  # type: ignore[no-any-return]


def part_kinds(space: SearchSpace | None = None) -> Mapping[str, PartKind]:
    """The part kinds of ``space``'s tables (``None``: a classifier's)."""
    return CLASSIFIER_PART_KINDS if space is None else table_task(space).part_kinds


def check_table_input_size(space: SearchSpace, input_size: int) -> None:
    """Raise :class:`UserError` when the space's networks cannot take ``input_size``."""
    task = table_task(space)
    if task.check_input_size is not None:
        task.check_input_size(input_size)


def model_parts(space: SearchSpace, model: Any, input_size: int) -> list[BlockConfig]:
    """The timed parts of a resolved model of ``space`` (any space with table support)."""
    return table_task(space).parts(model, input_size)


def distinct_blocks(
    space: SearchSpace, input_size: int | None = None, channel_divisor: int = 8, num_classes: int | None = None
) -> list[BlockConfig]:
    """Every distinct part (stem, blocks, head; a detector's neck and head parts) any
    subnet of ``space`` can contain at ``input_size`` (default: the deployment size), in
    network order."""
    input_size = space.input_size if input_size is None else input_size
    classes = space.num_classes if num_classes is None else num_classes
    found: dict[str, BlockConfig] = {}
    for config in table_task(space).distinct(space, input_size, channel_divisor, classes):
        found.setdefault(config.key, config)
    return list(found.values())


# ====================================================================================
# Building and describing parts


def _kind(config: BlockConfig, space: SearchSpace | None) -> PartKind:
    kinds = part_kinds(space)
    if config.op not in kinds:
        where = "a classifier" if space is None else f"space {space.name!r}"
        raise UserError(f"part {config.key} is not a part of {where}; allowed kinds: {', '.join(kinds)}")
    return kinds[config.op]


def _seeded(build: Callable[[], Any], seed: int = 0) -> Any:
    """Call ``build`` with torch's global generator seeded, leaving the caller's state alone."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_part(config: BlockConfig, space: SearchSpace | None = None) -> Any:
    """A (reproducibly) randomly initialised standalone ``nn.Module`` of a part of ``space``
    (default: a classifier's part), in eval mode."""
    from nas_search.spaces.static import initialise_weights

    kind = _kind(config, space)

    def build() -> Any:
        module = kind.build(config)
        initialise_weights(module)
        return module.eval()

    return _seeded(build)


def part_example(config: BlockConfig, space: SearchSpace | None = None) -> Any:
    """A random batch-1 input of a part (a tuple of tensors for a part with several inputs)."""
    import torch

    kind = _kind(config, space)
    if kind.example is not None:
        return kind.example(config)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, config.in_channels, config.input_size, config.input_size, generator=generator)


def build_subnet(space: SearchSpace, spec: ArchSpec, num_classes: int | None = None, input_size: int | None = None) -> Any:
    """A (reproducibly) randomly initialised standalone model of ``spec`` (what a
    deployment runtime runs: a detector without pre- and post-processing), in eval mode."""
    size = space.input_size if input_size is None else input_size
    builder = table_task(space).build
    return _seeded(lambda: builder(space, spec, num_classes, size).eval())


@dataclass(frozen=True)
class PartFeatures:
    """Analytic features of one part: FLOPs (= MACs), parameters, activation traffic
    (bytes read plus written) and the number of fused layers (kernel launches)."""

    flops: int
    params: int
    traffic_bytes: int
    layers: int


#: Features by part key (a key names its kind, so one cache serves every space).
_FEATURE_CACHE: dict[str, PartFeatures] = {}


def part_features(config: BlockConfig, space: SearchSpace | None = None) -> PartFeatures:
    """Features of a part of ``space`` (default: a classifier's part), cached by key."""
    cached = _FEATURE_CACHE.get(config.key)
    if cached is None:
        cost, traffic, layers = _kind(config, space).cost(config)
        cached = _FEATURE_CACHE[config.key] = PartFeatures(cost.flops, cost.params, traffic, layers)
    return cached


__all__ = [
    "BACKBONE_PART_KINDS",
    "BLOCK_PART_KIND",
    "CLASSIFIER_PART_KINDS",
    "CLASSIFIER_TABLE_TASK",
    "BlockConfig",
    "PartFeatures",
    "PartKind",
    "PartKinds",
    "TableTask",
    "backbone_parts",
    "block_module",
    "build_part",
    "build_subnet",
    "check_table_input_size",
    "distinct_backbone_parts",
    "distinct_blocks",
    "has_table_support",
    "model_parts",
    "network_parts",
    "part_example",
    "part_features",
    "part_kinds",
    "restrict_widths",
    "table_task",
]
