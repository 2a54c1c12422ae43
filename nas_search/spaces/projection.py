"""Budget-aware sampling by projection onto the FLOPs band.

The sampler proposes every choice freely; the proposal is then projected onto
``[lower, upper]`` FLOPs: first all widths (the per-layer pruning ratios) move together
by whole steps of their choice lists, then single choices move one step at a time (a
block's width, kernel or expansion, a stage's depth), preferring the in-band neighbour
closest to the proposal, until the spec lands in the band. Ops stay as proposed, unless
everything else is at its largest and the spec is still below the band: then one block at
a time takes a dearer op. The projection is deterministic, so the
objective stays a function of the trial's parameters and the sampler can still learn;
the evaluated (projected) architecture is what the trial records. A proposal whose
depths and ops cannot fit even at the narrowest widths stays infeasible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, cast

from nas_search.spaces.ops import block_kind
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec, BlockSpec, StageSpec


def _shift_width(options: Sequence[float], value: float, steps: int) -> float:
    ordered = sorted(options)
    index = ordered.index(value) if value in ordered else min(range(len(ordered)), key=lambda i: abs(ordered[i] - value))
    return ordered[min(max(index + steps, 0), len(ordered) - 1)]


def _detector_choices(space: SearchSpace, spec: ArchSpec) -> Any:
    """The space's detector choices (neck and head) when ``spec`` is a detector of a
    detection space, else None. Read by attribute, so that this module (imported by
    supernet training of every task) depends on no task."""
    return getattr(space, "detector", None) if spec.detector is not None else None


def shift_all_widths(spec: ArchSpec, space: SearchSpace, steps: int) -> ArchSpec:
    """Every width (blocks, stem, head; a detector's neck and head) moved ``steps``
    places along its choice list."""
    stages = tuple(
        StageSpec(tuple(replace(block, width=_shift_width(choices.widths, block.width, steps)) for block in stage.blocks))
        for choices, stage in zip(space.stages, spec.stages)
    )
    detector, choices = spec.detector, _detector_choices(space, spec)
    if choices is not None:
        detector = choices.shift_widths(detector, steps)
    return replace(
        spec,
        stages=stages,
        stem_width=_shift_width(space.stem_widths, spec.stem_width, steps),
        head_width=_shift_width(space.head_widths, spec.head_width, steps),
        detector=detector,
    )


def _with_stage(spec: ArchSpec, stage_index: int, blocks: list[BlockSpec]) -> ArchSpec:
    stages = list(spec.stages)
    stages[stage_index] = StageSpec(tuple(blocks))
    return replace(spec, stages=tuple(stages))


def _single_moves(spec: ArchSpec, space: SearchSpace, direction: int) -> list[ArchSpec]:
    """Neighbours one step cheaper (``direction=-1``) or dearer (``+1``): one block's
    width, kernel or ordered op choice (``BlockChoice.neighbour_moves``: mbconv's
    expansion) moved one choice, one stage one block shorter or longer (a longer stage
    repeats its last block), the stem or head width moved, or one choice of a detector's
    neck or head moved."""
    moves = []
    for stage_index, (choices, stage) in enumerate(zip(space.stages, spec.stages)):
        for block_index, block in enumerate(stage.blocks):
            changes: dict[str, Any] = {
                "width": _shift_width(choices.widths, block.width, direction),
                "kernel": int(_shift_width(choices.kernels, block.kernel, direction)),
            }
            for choice in block_kind(block.op).choices:
                if choice.neighbour_moves:
                    options = choice.options(space, choices)
                    changes[choice.field] = _shift_width(options, getattr(block, choice.field), direction)
            for name, value in changes.items():
                if value != getattr(block, name):
                    blocks = list(stage.blocks)
                    blocks[block_index] = replace(block, **{name: value})
                    moves.append(_with_stage(spec, stage_index, blocks))
        depth = stage.depth + direction
        if depth in choices.depths:
            blocks = list(stage.blocks[:depth]) if direction < 0 else list(stage.blocks) + [stage.blocks[-1]]
            moves.append(_with_stage(spec, stage_index, blocks))
    for name, options in (("stem_width", space.stem_widths), ("head_width", space.head_widths)):
        width = _shift_width(options, getattr(spec, name), direction)
        if width != getattr(spec, name):
            moves.append(replace(spec, **cast(dict[str, Any], {name: width})))
    detector_choices = _detector_choices(space, spec)
    if detector_choices is not None:
        moves += [replace(spec, detector=detector) for detector in detector_choices.neighbours(spec.detector, direction)]
    return moves


def _cheapest(choice: Any, options: Sequence[Any]) -> Any:
    """The cheapest option of an op's extra choice (the opposite of its ``largest``)."""
    return min(options) if choice.largest is max else max(options)


def _op_moves(spec: ArchSpec, space: SearchSpace) -> list[ArchSpec]:
    """Neighbours with one block's op replaced by another op of its position (same kernel
    and width, the new op's cheapest extra choices): the last resort of an upward
    projection, when widths, kernels and depths are all at their largest and the
    proposal's ops are too cheap for the band."""
    moves = []
    for stage_index, (choices, stage) in enumerate(zip(space.stages, spec.stages)):
        for block_index, block in enumerate(stage.blocks):
            for op in choices.operations:
                if op == block.op:
                    continue
                kind = block_kind(op)
                extra = {choice.field: _cheapest(choice, choice.options(space, choices)) for choice in kind.choices}
                blocks = list(stage.blocks)
                blocks[block_index] = BlockSpec(op=op, kernel=block.kernel, width=block.width, **extra)
                moves.append(_with_stage(spec, stage_index, blocks))
    return moves


def project_to_band(
    spec: ArchSpec, space: SearchSpace, flops: Callable[[ArchSpec], float], lower: float, upper: float, max_moves: int = 200
) -> ArchSpec:
    """The spec with widths adjusted so that ``lower <= flops(spec) <= upper`` where
    possible (otherwise as close below ``upper`` as widths allow)."""
    cost = flops(spec)
    if lower <= cost <= upper:
        return spec
    direction = -1 if cost > upper else 1
    best = spec
    for steps in range(1, 7):  # coarse: all widths together
        candidate = shift_all_widths(spec, space, direction * steps)
        candidate_cost = flops(candidate)
        if direction < 0:
            best = candidate
            if candidate_cost <= upper:
                break
        else:
            if candidate_cost > upper:
                break
            best = candidate
            if candidate_cost >= lower:
                break
    cost = flops(best)
    for _ in range(max_moves):  # fine: one block at a time
        if lower <= cost <= upper:
            break
        direction = -1 if cost > upper else 1
        moves = [(flops(move), move) for move in _single_moves(best, space, direction)]
        if direction > 0 and not any(cost < item[0] <= upper for item in moves):  # nothing left to grow but ops
            moves += [(flops(move), move) for move in _op_moves(best, space)]
            moves = [item for item in moves if item[0] > cost]
        in_band = [item for item in moves if lower <= item[0] <= upper]
        if in_band:  # the widest in-band neighbour stays closest to the proposal
            cost, best = max(in_band, key=lambda item: item[0])
        elif direction < 0 and moves:  # still too big: take the largest reduction
            cost, best = min(moves, key=lambda item: item[0])
        else:
            allowed = [item for item in moves if item[0] <= upper]
            if not allowed:
                break
            cost, best = max(allowed, key=lambda item: item[0])
    return best
