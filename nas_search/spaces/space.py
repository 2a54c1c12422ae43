"""Search-space definitions: a table of stages and the choices allowed in each.

A :class:`SearchSpace` is pure data.  It knows the maximum channel count, stride and depth
range of every stage and which block choices are allowed, and it turns an
:class:`~nas_search.spec.ArchSpec` into concrete channel counts with :meth:`resolve`.
Everything downstream (the supernet, the extracted model, the analytic cost model) works
from the resolved network, so they cannot disagree about shapes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from nas_search.errors import UserError
from nas_search.spec import ArchSpec, BlockSpec, StageSpec
from nas_search.utils import round_channels

WIDTH_RATIOS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)

#: Typical cost order of the block ops at equal width (cheapest first), used to bias sampling.
OPERATION_COST_RANK = {"scc": 0, "dsc": 1, "slim": 2, "mbconv": 3}


@dataclass(frozen=True)
class StageChoices:
    """One stage of a space: its fixed shape and the choices open to each of its blocks.

    Attributes:
        max_channels: output channels of every block at width ratio 1.
        stride: stride of the first block (the others use stride 1).
        depths: allowed active depths; the active blocks are the first ``depth`` ones.
        operations: allowed block ops (see ``nas_search.spec.BLOCK_OPERATIONS``).
        kernels: allowed depthwise kernel sizes.
        expansions: allowed ``mbconv`` expansion ratios.
        widths: allowed output width ratios (per-layer pruning ratios).
        feature: whether the stage output is one of the backbone's multi-scale features.
    """

    max_channels: int
    stride: int
    depths: tuple[int, ...]
    operations: tuple[str, ...] = ("mbconv", "dsc", "scc", "slim")
    kernels: tuple[int, ...] = (3, 5, 7)
    expansions: tuple[float, ...] = (3.0, 4.0, 6.0)
    widths: tuple[float, ...] = WIDTH_RATIOS
    feature: bool = False

    @property
    def max_depth(self) -> int:
        """Number of block positions the supernet holds for this stage."""
        return max(self.depths)


@dataclass(frozen=True)
class ResolvedBlock:
    """A block with every channel count decided: what the supernet activates, what the
    extracted model is built from and what the cost model counts."""

    spec: BlockSpec
    in_channels: int
    out_channels: int
    stride: int
    hidden_channels: int
    squeeze_excite_channels: int
    residual: bool


@dataclass(frozen=True)
class ResolvedNetwork:
    """An architecture as concrete layer shapes."""

    spec: ArchSpec
    input_channels: int
    stem_channels: int
    stem_stride: int
    stages: tuple[tuple[ResolvedBlock, ...], ...]
    head_channels: int
    num_classes: int
    feature_stages: tuple[int, ...]

    @property
    def last_channels(self) -> int:
        """Channels entering the head."""
        return self.stages[-1][-1].out_channels


def scaled_channels(full: float, ratio: float, divisor: int) -> int:
    """Channels of a layer whose full width is ``full`` at width ``ratio``: rounded to a
    multiple of ``divisor`` but never above the supernet capacity (``full`` rounded to 8)."""
    capacity = round_channels(full, 8)
    ceiling = max(divisor, capacity // divisor * divisor)
    return min(round_channels(full * ratio, divisor), ceiling)


def hidden_channels(block: BlockSpec, in_channels: int, out_channels: int, divisor: int) -> int:
    """Hidden width of a block: the expanded width of mbconv, the squeeze width ``f`` of a
    slim module (``out / 8``, so its two expand branches of ``4f`` concatenate to ``out``),
    and the input width for the separable blocks."""
    rules = {
        "mbconv": lambda: scaled_channels(in_channels * block.expansion, 1.0, divisor),
        "slim": lambda: out_channels // 8,
        "dsc": lambda: in_channels,
        "scc": lambda: in_channels,
    }
    return rules[block.op]()


def has_residual(block: BlockSpec, block_index: int, in_channels: int, out_channels: int, stride: int) -> bool:
    """Identity residual where shapes allow, inside a stage (never across stages, whose
    channels are sorted independently); the slim module carries its own projected skip."""
    return block.op != "slim" and block_index > 0 and stride == 1 and in_channels == out_channels


@dataclass(frozen=True)
class SearchSpace:
    """A registered search space.

    Attributes:
        name: registry name.
        task: ``classify`` (detection spaces wrap a classification backbone).
        description: one line for ``nas-search spaces``.
        input_size: default deployment input size (square), at which FLOPs are counted.
        train_input_size: default proxy size for one-shot supernet training.
        stem_channels: stem output channels at width 1.
        stem_stride: stride of the stem convolution.
        head_channels: channels of the last 1x1 convolution at width 1.
        num_classes: default number of classes (the data decides in practice).
        stages: the stage table.
        stem_widths / head_widths: allowed width ratios of stem and head.
        scc_groups / scc_overlaps: allowed SCC choices.
        squeeze_excite: allowed squeeze-excite choices for mbconv.
        network_costs: how the cost models count this space's networks, an object
            implementing ``nas_search.hw_models.network.NetworkCosts``; ``None`` (the
            default) means a classifier made of the space's stages. A detection space
            carries its detector's costs here, so nothing registers at import time.
    """

    name: str
    task: str
    description: str
    input_size: int
    train_input_size: int
    stem_channels: int
    stem_stride: int
    head_channels: int
    stages: tuple[StageChoices, ...]
    num_classes: int = 10
    stem_widths: tuple[float, ...] = (0.5, 0.75, 1.0)
    head_widths: tuple[float, ...] = (0.5, 0.75, 1.0)
    scc_groups: tuple[int, ...] = (2, 4, 8)
    scc_overlaps: tuple[float, ...] = (0.25, 0.33, 0.5)
    squeeze_excite: tuple[bool, ...] = (False, True)
    dropout: float = 0.1
    metadata: dict = field(default_factory=dict, compare=False, hash=False)
    network_costs: Any = field(default=None, compare=False, hash=False, repr=False)

    # ------------------------------------------------------------------ resolution
    def resolve(self, spec: ArchSpec, num_classes: int | None = None) -> ResolvedNetwork:
        """Validate ``spec`` against this space and compute every channel count."""
        self.validate(spec)
        divisor = spec.channel_divisor
        stem_channels = scaled_channels(self.stem_channels, spec.stem_width, divisor)
        in_channels = stem_channels
        stages: list[tuple[ResolvedBlock, ...]] = []
        for stage_index, (stage_choices, stage_spec) in enumerate(zip(self.stages, spec.stages)):
            resolved_blocks = []
            for block_index, block in enumerate(stage_spec.blocks):
                stride = stage_choices.stride if block_index == 0 else 1
                out_channels = scaled_channels(stage_choices.max_channels, block.width, divisor)
                hidden = hidden_channels(block, in_channels, out_channels, divisor)
                if block.op == "scc" and in_channels % block.groups:
                    raise UserError(
                        f"stage {stage_index} block {block_index}: scc groups={block.groups} does not divide "
                        f"its {in_channels} input channels; allowed: a groups value dividing {in_channels}"
                    )
                squeeze_excite = scaled_channels(hidden / 4, 1.0, divisor) if block.squeeze_excite else 0
                resolved_blocks.append(
                    ResolvedBlock(
                        spec=block,
                        in_channels=in_channels,
                        out_channels=out_channels,
                        stride=stride,
                        hidden_channels=hidden,
                        squeeze_excite_channels=squeeze_excite,
                        residual=has_residual(block, block_index, in_channels, out_channels, stride),
                    )
                )
                in_channels = out_channels
            stages.append(tuple(resolved_blocks))
        return ResolvedNetwork(
            spec=spec,
            input_channels=3,
            stem_channels=stem_channels,
            stem_stride=self.stem_stride,
            stages=tuple(stages),
            head_channels=scaled_channels(self.head_channels, spec.head_width, divisor),
            num_classes=self.num_classes if num_classes is None else num_classes,
            feature_stages=tuple(index for index, stage in enumerate(self.stages) if stage.feature),
        )

    def max_block_channels(self) -> Iterator[tuple[int, int, int, int]]:
        """(stage, block, max input channels, max output channels) for every supernet block
        position; the supernet allocates its weights from these."""
        in_channels = self.stem_channels
        for stage_index, stage in enumerate(self.stages):
            for block_index in range(stage.max_depth):
                yield stage_index, block_index, in_channels, stage.max_channels
                in_channels = stage.max_channels

    # ------------------------------------------------------------------ validation
    def validate(self, spec: ArchSpec) -> None:
        """Raise :class:`UserError` naming the first choice of ``spec`` outside this space."""
        if spec.space != self.name:
            raise UserError(f"architecture is for space {spec.space!r}, not {self.name!r}")
        if len(spec.stages) != len(self.stages):
            raise UserError(f"space {self.name!r} has {len(self.stages)} stages, the spec has {len(spec.stages)}")
        _check_choice("stem_width", spec.stem_width, self.stem_widths)
        _check_choice("head_width", spec.head_width, self.head_widths)
        for stage_index, (choices, stage) in enumerate(zip(self.stages, spec.stages)):
            prefix = f"stage {stage_index}"
            _check_choice(f"{prefix} depth", stage.depth, choices.depths)
            for block_index, block in enumerate(stage.blocks):
                where = f"{prefix} block {block_index}"
                _check_choice(f"{where} op", block.op, choices.operations)
                _check_choice(f"{where} kernel", block.kernel, choices.kernels)
                _check_choice(f"{where} width", block.width, choices.widths)
                if block.op == "mbconv":
                    _check_choice(f"{where} expansion", block.expansion, choices.expansions)
                    _check_choice(f"{where} squeeze_excite", block.squeeze_excite, self.squeeze_excite)
                if block.op == "scc":
                    _check_choice(f"{where} groups", block.groups, self.scc_groups)
                    _check_choice(f"{where} overlap", block.overlap, self.scc_overlaps)

    # ------------------------------------------------------------------ named specs
    def block_choices(self, stage_index: int) -> list[BlockSpec]:
        """Every distinct block this stage allows (used for profiling and enumeration)."""
        choices = self.stages[stage_index]
        blocks: list[BlockSpec] = []
        for op in choices.operations:
            for kernel in choices.kernels:
                for width in choices.widths:
                    for extra in self._op_variants(op, choices):
                        blocks.append(BlockSpec(op=op, kernel=kernel, width=width, **extra))
        return blocks

    def _op_variants(self, op: str, choices: StageChoices) -> list[dict]:
        variants = {
            "mbconv": lambda: [
                {"expansion": expansion, "squeeze_excite": se}
                for expansion in choices.expansions
                for se in self.squeeze_excite
            ],
            "scc": lambda: [
                {"groups": groups, "overlap": overlap} for groups in self.scc_groups for overlap in self.scc_overlaps
            ],
            "dsc": lambda: [{}],
            "slim": lambda: [{}],
        }
        return variants[op]()

    def largest(self, op: str | None = None) -> ArchSpec:
        """The most expensive subnet: full depth, full width, the costliest op and kernel.
        ``op`` puts that op in every block instead (it must be allowed in every stage)."""
        extras = {
            "mbconv": lambda choices: {"expansion": max(choices.expansions), "squeeze_excite": max(self.squeeze_excite)},
            "scc": lambda choices: {"groups": min(self.scc_groups), "overlap": max(self.scc_overlaps)},
        }
        stages = []
        for choices in self.stages:
            block_op = op or ("mbconv" if "mbconv" in choices.operations else choices.operations[0])
            extra = extras[block_op](choices) if block_op in extras else {}
            block = BlockSpec(op=block_op, kernel=max(choices.kernels), width=max(choices.widths), **extra)
            stages.append(StageSpec((block,) * max(choices.depths)))
        return ArchSpec(self.name, tuple(stages), stem_width=max(self.stem_widths), head_width=max(self.head_widths))

    def smallest(self) -> ArchSpec:
        """The cheapest subnet: minimum depth and width, the cheapest op, smallest kernel."""
        from nas_search.hw_models.flops import count_flops

        stages = []
        for stage_index, choices in enumerate(self.stages):
            candidates = [block for block in self.block_choices(stage_index) if block.width == min(choices.widths)]
            candidates = [block for block in candidates if block.kernel == min(choices.kernels)]
            best = None
            for block in candidates:
                trial_stages = stages + [StageSpec((block,) * min(choices.depths))]
                trial_stages += list(self.largest().stages[stage_index + 1 :])
                trial = ArchSpec(self.name, tuple(trial_stages), stem_width=min(self.stem_widths))
                try:
                    cost = count_flops(trial, self).total
                except UserError:
                    continue
                if best is None or cost < best[0]:
                    best = (cost, block)
            stages.append(StageSpec((best[1],) * min(choices.depths)))
        return ArchSpec(self.name, tuple(stages), stem_width=min(self.stem_widths), head_width=min(self.head_widths))

    # ------------------------------------------------------------------ sampling
    def sample(
        self, rng: random.Random, bias: float | None = None, operations: Mapping[tuple[int, int], str] | None = None
    ) -> ArchSpec:
        """A random spec. ``bias`` in [0, 1] skews every ordered choice (depth, width,
        kernel, expansion) toward its small (0) or large (1) end, which lets budget-aware
        sampling reach the whole FLOPs range; ``None`` samples uniformly. ``operations``
        fixes the op of block positions ``(stage, block)`` it names (fair sampling, see
        ``nas_search.training.sandwich``); the other choices are drawn as usual."""
        fixed = operations or {}

        def pick(options, key=None):
            options = sorted(options, key=key)
            if bias is None or len(options) == 1:
                return rng.choice(options)
            position = min(max(rng.gauss(bias, 0.22), 0.0), 1.0)
            return options[min(int(position * len(options)), len(options) - 1)]

        stages = []
        for stage_index, choices in enumerate(self.stages):
            depth = pick(choices.depths)
            blocks = []
            for block_index in range(depth):
                op = pick(choices.operations, key=OPERATION_COST_RANK.get)
                op = fixed.get((stage_index, block_index), op)
                extra: dict = {}
                if op == "mbconv":
                    extra = {"expansion": pick(choices.expansions), "squeeze_excite": pick(self.squeeze_excite)}
                elif op == "scc":
                    extra = {"groups": rng.choice(self.scc_groups), "overlap": rng.choice(self.scc_overlaps)}
                blocks.append(BlockSpec(op=op, kernel=pick(choices.kernels), width=pick(choices.widths), **extra))
            stages.append(StageSpec(tuple(blocks)))
        return ArchSpec(self.name, tuple(stages), stem_width=pick(self.stem_widths), head_width=pick(self.head_widths))


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        shown = ", ".join(str(option) for option in allowed)
        raise UserError(f"{name}={value!r} is outside the space; allowed: {shown}")
