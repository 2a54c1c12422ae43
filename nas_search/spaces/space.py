"""Search-space definitions: a table of stages and the choices allowed in each.

A :class:`SearchSpace` is pure data.  It knows the maximum channel count, stride and depth
range of every stage and which block choices are allowed, and it turns an
:class:`~nas_search.spec.ArchSpec` into concrete channel counts with :meth:`resolve`.
Everything downstream (the supernet, the extracted model, the analytic cost model) works
from the resolved network, so they cannot disagree about shapes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from nas_search.errors import UserError
from nas_search.spaces.ops import block_kind
from nas_search.spaces.ops.costs import output_size
from nas_search.spaces.resolved import WIDTH_RATIOS, ResolvedBlock, ResolvedNetwork, StageChoices, scaled_channels
from nas_search.spec import ArchSpec, BlockSpec, StageSpec


def hidden_channels(block: BlockSpec, in_channels: int, out_channels: int, divisor: int) -> int:
    """Hidden width of a block, by its op's rule (``BlockKind.hidden_channels``): the
    expanded width of mbconv, the squeeze width ``f`` of a slim module (``out / 8``, so its
    two expand branches of ``4f`` concatenate to ``out``), and the input width for the
    separable blocks."""
    return block_kind(block.op).hidden_channels(block, in_channels, out_channels, divisor)


def has_residual(block: BlockSpec, block_index: int, in_channels: int, out_channels: int, stride: int) -> bool:
    """Identity residual where shapes allow, inside a stage (never across stages, whose
    channels are sorted independently); the slim module carries its own projected skip."""
    return block_kind(block.op).identity_residual and block_index > 0 and stride == 1 and in_channels == out_channels


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
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
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
                _check_channels(block, in_channels, f"stage {stage_index} block {block_index}")
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
                for field_name, value, allowed in block_kind(block.op).choice_checks(block, self, choices):
                    _check_choice(f"{where} {field_name}", value, allowed)

    # ------------------------------------------------------------------ named specs
    def block_choices(self, stage_index: int) -> list[BlockSpec]:
        """Every distinct block this stage allows (used for profiling and enumeration)."""
        choices = self.stages[stage_index]
        blocks: list[BlockSpec] = []
        for op in choices.operations:
            for kernel in choices.kernels:
                for width in choices.widths:
                    for extra in block_kind(op).variants(self, choices):
                        blocks.append(BlockSpec(op=op, kernel=kernel, width=width, **extra))
        return blocks

    def largest(self, op: str | None = None) -> ArchSpec:
        """The most expensive subnet: full depth, full width, the costliest op (highest
        ``BlockKind.cost_rank``, the first of equals) with its costliest choices, and the
        largest kernel. ``op`` puts that op in every block instead (it must be allowed in
        every stage)."""
        stages = []
        for choices in self.stages:
            block_op = op or max(choices.operations, key=_cost_rank)
            extra = block_kind(block_op).largest_choices(self, choices)
            block = BlockSpec(op=block_op, kernel=max(choices.kernels), width=max(choices.widths), **extra)
            stages.append(StageSpec((block,) * max(choices.depths)))
        return ArchSpec(self.name, tuple(stages), stem_width=max(self.stem_widths), head_width=max(self.head_widths))

    def smallest(self) -> ArchSpec:
        """The cheapest subnet: minimum depth and width, the cheapest op, smallest kernel.

        Per stage, every block at minimum width and kernel is tried at minimum depth (the
        stages before it already chosen, the ones after it the largest) and the one whose
        network has the fewest block FLOPs wins: the stem, the head and the other stages
        cost the same for every candidate, since all of them have the same output width,
        stride and kernel."""
        largest = self.largest()
        stages: list[StageSpec] = []
        for stage_index, choices in enumerate(self.stages):
            candidates = [block for block in self.block_choices(stage_index) if block.width == min(choices.widths)]
            candidates = [block for block in candidates if block.kernel == min(choices.kernels)]
            best = None
            for block in candidates:
                trial_stages = stages + [StageSpec((block,) * min(choices.depths))]
                trial_stages += list(largest.stages[stage_index + 1 :])
                trial = ArchSpec(self.name, tuple(trial_stages), stem_width=min(self.stem_widths))
                try:
                    cost = self._block_flops(trial)
                except UserError:
                    continue
                if best is None or cost < best[0]:
                    best = (cost, block)
            stages.append(StageSpec((cast(tuple[int, BlockSpec], best)[1],) * min(choices.depths)))
        return ArchSpec(self.name, tuple(stages), stem_width=min(self.stem_widths), head_width=min(self.head_widths))

    def _block_flops(self, spec: ArchSpec) -> int:
        """FLOPs of every block of ``spec`` as a classifier at the deployment size (each
        op's ``BlockKind.cost``; ``nas_search.hw_models.flops`` adds stem and head)."""
        network = self.resolve(spec)
        size = output_size(self.input_size, 3, network.stem_stride)
        total = 0
        for stage in network.stages:
            for block in stage:
                cost, size = block_kind(block.spec.op).cost(block, size)
                total += cost.flops
        return total

    # ------------------------------------------------------------------ sampling
    def suggest_head_choices(self, trial: Any) -> dict[str, Any]:
        """The :class:`~nas_search.spec.ArchSpec` fields this space searches after the
        stages and the stem, drawn through ``trial.suggest_categorical`` (an Optuna trial or
        anything with that method): the classifier head's width. A space with another kind
        of network (a detector's neck and head) overrides this."""
        return {"head_width": trial.suggest_categorical("head_width", list(self.head_widths))}

    def sample(
        self, rng: random.Random, bias: float | None = None, operations: Mapping[tuple[int, int], str] | None = None
    ) -> ArchSpec:
        """A random spec. ``bias`` in [0, 1] skews every ordered choice (depth, width,
        kernel, expansion) toward its small (0) or large (1) end, which lets budget-aware
        sampling reach the whole FLOPs range; ``None`` samples uniformly. ``operations``
        fixes the op of block positions ``(stage, block)`` it names (fair sampling, see
        ``nas_search.training.sandwich``); the other choices are drawn as usual."""
        fixed = operations or {}

        def pick(options: Sequence[Any], key: Callable[[Any], Any] | None = None) -> Any:
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
                op = pick(choices.operations, key=_cost_rank)
                op = fixed.get((stage_index, block_index), op)
                extra = block_kind(op).sample_choices(pick, rng, self, choices)
                blocks.append(BlockSpec(op=op, kernel=pick(choices.kernels), width=pick(choices.widths), **extra))
            stages.append(StageSpec(tuple(blocks)))
        return ArchSpec(self.name, tuple(stages), stem_width=pick(self.stem_widths), head_width=pick(self.head_widths))


def _check_choice(name: str, value: Any, allowed: Collection[Any]) -> None:
    if value not in allowed:
        shown = ", ".join(str(option) for option in allowed)
        raise UserError(f"{name}={value!r} is outside the space; allowed: {shown}")


def _cost_rank(op: str) -> int:
    """Sort key of ops for biased sampling: the op's typical cost rank."""
    return block_kind(op).cost_rank


def _check_channels(block: BlockSpec, in_channels: int, where: str) -> None:
    check = block_kind(block.op).check_channels
    problem = None if check is None else check(block, in_channels)
    if problem is not None:
        raise UserError(f"{where}: {problem}")


__all__ = [
    "WIDTH_RATIOS",
    "ResolvedBlock",
    "ResolvedNetwork",
    "SearchSpace",
    "StageChoices",
    "has_residual",
    "hidden_channels",
    "scaled_channels",
]
