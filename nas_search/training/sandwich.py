"""The subnets of one sandwich-rule step, for classification and detection supernets alike.

Each step trains the largest subnet, the smallest and ``count`` random ones. The choice is
deterministic: the random subnets come from ``random.Random`` seeded by the run's seed and
the global step, so a resumed run (and every DDP rank) draws the same subnets.

Budget-aware training: given ``max_flops`` and a ``spec -> FLOPs`` model, the "largest"
subnet (the teacher) is chosen within the budget (:func:`budget_extremes`, rules in
:data:`TEACHER_RULES`), and the random subnets are drawn among those within it. The search
never looks above the budget, so the supernet spends none of its capacity or compute
there; on a CPU this makes a step several times cheaper when the budget is far below the
space's largest subnet.

Fair operations (FairNAS, Chu et al. 2021): the block kinds of one position share no
weights, so with independent draws a kind is trained only when a random subnet happens to
pick it, and the positions' kinds meet in ever new combinations. With
``fair_operations=True`` every group of ``len(operations)`` random subnets holds each
kind of each position exactly once (a fresh permutation per position and group), so every
kind of every first block is trained once per step when ``count`` equals the number of
kinds. Deeper positions are trained as often as the drawn depths reach them, and under a
budget tight enough that a plan's dear kinds cannot fit, that subnet's ops are drawn freely
(see :func:`sandwich_specs`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, cast

from nas_search.errors import UserError

#: Rejection-sampling attempts per random subnet before falling back to the smallest.
SAMPLING_ATTEMPTS = 50


def budget_flops_model(space: Any, max_flops: float | None, input_size: int | None, num_classes: int):
    """The ``spec -> FLOPs`` model a budget is checked with (at ``input_size``, default the
    space's deployment size), or ``None`` without a budget."""
    if max_flops is None:
        return None
    from nas_search.hw_models import FlopsModel

    return FlopsModel(space, input_size or space.input_size, num_classes)


def projected_largest(space: Any, max_flops: float, flops: Callable[[Any], float]) -> Any:
    """The space's largest subnet projected into the budget: all widths shrink together
    first, then single choices (``nas_search.spaces.projection``). Under a tight budget
    this leaves the largest depths, kernels and expansions at the narrowest widths."""
    from nas_search.spaces.projection import project_to_band

    return project_to_band(space.largest(), space, flops, 0.0, float(max_flops))


def _whole_network_moves(spec: Any, space: Any) -> list:
    """One step cheaper, applied to every block at once (squeeze-excite off, expansion,
    kernel, all widths) or to one stage (one block shorter)."""
    from dataclasses import replace

    from nas_search.spaces.ops import BLOCK_KINDS, block_kind
    from nas_search.spaces.projection import _shift_width, shift_all_widths
    from nas_search.spec import StageSpec

    def every_block(change) -> Any:
        stages = tuple(
            StageSpec(tuple(change(block, choices) for block in stage.blocks))
            for choices, stage in zip(space.stages, spec.stages)
        )
        return replace(spec, stages=stages)

    def one_option_down(field: str) -> Callable[[Any, Any], Any]:
        def change(block: Any, choices: Any) -> Any:
            for choice in block_kind(block.op).choices:
                if choice.field == field and choice.neighbour_moves:
                    options = choice.options(space, choices)
                    return replace(block, **{field: _shift_width(options, getattr(block, field), -1)})
            return block

        return change

    # the ordered op choices (mbconv's expansion) of every op, each as one whole-network move
    ordered_fields = dict.fromkeys(
        choice.field for kind in BLOCK_KINDS.values() for choice in kind.choices if choice.neighbour_moves
    )
    moves = [
        every_block(lambda block, choices: replace(block, squeeze_excite=False) if block.squeeze_excite else block),
        *(every_block(one_option_down(field)) for field in ordered_fields),
        every_block(lambda block, choices: replace(block, kernel=int(_shift_width(choices.kernels, block.kernel, -1)))),
        shift_all_widths(spec, space, -1),
    ]
    for stage_index, (choices, stage) in enumerate(zip(space.stages, spec.stages)):
        if stage.depth - 1 in choices.depths:
            stages = list(spec.stages)
            stages[stage_index] = StageSpec(stage.blocks[:-1])
            moves.append(replace(spec, stages=tuple(stages)))
    return [move for move in moves if move != spec]


def widest_within_budget(space: Any, max_flops: float, flops: Callable[[Any], float]) -> Any:
    """The teacher that covers the most shared weights within the budget.

    For every op allowed in all stages: start from the network of that op at full depth and
    width with the largest kernels and expansions, then take whole-network steps (squeeze-
    excite off, one expansion or kernel step, one stage shorter, all widths one step) that
    give up the fewest parameters per FLOP saved, until the budget is met. Of these, the one
    with the most parameters wins. Unlike :func:`projected_largest` (which narrows first),
    this keeps widths wide, so the teacher trains the channels the random subnets use.
    Falls back to :func:`projected_largest` when no uniform network fits.
    """
    from nas_search.hw_models.flops import count_flops

    def cost(spec) -> tuple[float, float]:
        params = count_flops(spec, space, getattr(flops, "input_size", None), getattr(flops, "num_classes", None)).params
        return float(flops(spec)), float(params)

    common = [op for op in space.stages[0].operations if all(op in choices.operations for choices in space.stages)]
    best = None
    for op in common:
        spec = space.largest(op)
        try:
            spec_flops, spec_params = cost(spec)
        except UserError:  # e.g. an scc grouping that the widths do not allow
            continue
        while spec_flops > max_flops:
            options = []
            for move in _whole_network_moves(spec, space):
                try:
                    move_flops, move_params = cost(move)
                except UserError:
                    continue
                if move_flops < spec_flops:
                    options.append(((spec_params - move_params) / (spec_flops - move_flops), move_flops, move_params, move))
            if not options:
                break
            _, spec_flops, spec_params, spec = min(options, key=lambda option: option[0])
        if spec_flops <= max_flops and (best is None or spec_params > best[0]):
            best = (spec_params, spec)
    return best[1] if best is not None else projected_largest(space, max_flops, flops)


#: How a budget-aware sandwich chooses its largest subnet (the teacher).
TEACHER_RULES: dict[str, Callable[[Any, float, Callable[[Any], float]], Any]] = {
    "projected": projected_largest,
    "widest": widest_within_budget,
}


def budget_extremes(
    space: Any, max_flops: float | None, flops: Callable[[Any], float] | None, teacher: str = "projected"
) -> tuple:
    """``(largest, smallest)`` of the sandwich. With a budget, the largest subnet is chosen
    within it by the ``teacher`` rule of :data:`TEACHER_RULES`."""
    if max_flops is None:
        return space.largest(), space.smallest()
    from nas_search.units import format_flops

    flops = cast("Callable[[Any], float]", flops)  # a budget comes with its FLOPs model

    if teacher not in TEACHER_RULES:
        raise UserError(f"unknown teacher rule {teacher!r}; accepted: {', '.join(TEACHER_RULES)}")
    smallest = space.smallest()
    if flops(smallest) > max_flops:
        raise UserError(
            f"budget {format_flops(max_flops)} is below the smallest subnet of space {space.name!r} "
            f"({format_flops(flops(smallest))}); accepted: a budget of at least that"
        )
    largest = TEACHER_RULES[teacher](space, float(max_flops), flops)
    # a rule that cannot reach the budget (a detector's neck and head alone can exceed a
    # budget near the smallest subnet) leaves the smallest as the only subnet known to fit
    return (largest if flops(largest) <= max_flops else smallest), smallest


def fair_operation_plans(space: Any, count: int, rng: random.Random) -> list[dict[tuple[int, int], str]]:
    """``count`` op assignments ``{(stage, block): op}``: within every group of
    ``len(operations)`` consecutive plans, each position holds each of its ops once."""
    plans: list[dict[tuple[int, int], str]] = [{} for _ in range(count)]
    for stage_index, choices in enumerate(space.stages):
        for block_index in range(choices.max_depth):
            order: list[str] = []
            while len(order) < count:
                group = list(choices.operations)
                rng.shuffle(group)
                order += group
            for plan, op in zip(plans, order):
                plan[(stage_index, block_index)] = op
    return plans


def sandwich_specs(
    space: Any,
    count: int,
    seed: int,
    step: int,
    extremes: tuple | None = None,
    max_flops: float | None = None,
    flops: Callable[[Any], float] | None = None,
    fair_operations: bool = False,
) -> list:
    """Largest, smallest and ``count`` random subnets for global step ``step``.

    ``extremes`` passes ``(largest, smallest)`` computed once (a detection space's
    ``smallest()`` counts FLOPs, so it is not free). With ``max_flops`` (and ``flops``),
    random subnets are drawn within the budget, with a random bias towards small or large
    choices so that they spread over the feasible range rather than crowding at its small
    end; ``extremes`` should then come from :func:`budget_extremes`. With
    ``fair_operations`` the ops of the random subnets follow :func:`fair_operation_plans`;
    a plan none of whose ``SAMPLING_ATTEMPTS`` draws fits the budget (a budget near the
    smallest subnet, where the dear kinds fit nowhere) gives way to freely drawn ops.
    """
    largest, smallest = extremes if extremes is not None else (space.largest(), space.smallest())
    rng = random.Random(seed * 1_000_003 + step)
    plans = fair_operation_plans(space, count, rng) if fair_operations else [None] * count
    randoms = []
    for plan in plans:
        if max_flops is None:
            randoms.append(space.sample(rng, operations=plan))
            continue
        flops = cast("Callable[[Any], float]", flops)  # a budget comes with its FLOPs model
        spec = _draw_within_budget(space, rng, plan, max_flops, flops)
        if spec is None and plan is not None:  # the plan's ops do not fit this budget: draw them freely
            spec = _draw_within_budget(space, rng, None, max_flops, flops)
        randoms.append(smallest if spec is None else spec)
    return [largest, smallest] + randoms


def _draw_within_budget(
    space: Any, rng: random.Random, plan: dict | None, max_flops: float, flops: Callable[[Any], float]
) -> Any | None:
    """A random spec (with ``plan``'s ops) within ``max_flops``, or ``None`` after
    ``SAMPLING_ATTEMPTS`` draws over it."""
    for _attempt in range(SAMPLING_ATTEMPTS):
        spec = space.sample(rng, bias=rng.random(), operations=plan)
        if flops(spec) <= max_flops:
            return spec
    return None
