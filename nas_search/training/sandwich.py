"""The subnets of one sandwich-rule step, for classification and detection supernets alike.

Each step trains the largest subnet, the smallest and ``count`` random ones. The choice is
deterministic: the random subnets come from ``random.Random`` seeded by the run's seed and
the global step, so a resumed run (and every DDP rank) draws the same subnets.

Budget-aware training: given ``max_flops`` and a ``spec -> FLOPs`` model, the "largest"
subnet is the space's largest shrunk until it fits the budget (:func:`budget_extremes`),
and the random subnets are drawn among those within it. The search never looks above the
budget, so the supernet spends none of its capacity or compute there; on a CPU this makes
a step several times cheaper when the budget is far below the space's largest subnet.
"""

from __future__ import annotations

import random
from typing import Any, Callable

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


def budget_extremes(space: Any, max_flops: float | None, flops: Callable[[Any], float] | None) -> tuple:
    """``(largest, smallest)`` of the sandwich: with a budget, the largest subnet is the
    space's largest shrunk (all widths, then depths) until it fits the budget."""
    if max_flops is None:
        return space.largest(), space.smallest()
    from nas_search.search.projection import project_to_band
    from nas_search.units import format_flops

    smallest = space.smallest()
    if flops(smallest) > max_flops:
        raise UserError(
            f"budget {format_flops(max_flops)} is below the smallest subnet of space {space.name!r} "
            f"({format_flops(flops(smallest))}); accepted: a budget of at least that"
        )
    return project_to_band(space.largest(), space, flops, 0.0, float(max_flops)), smallest


def sandwich_specs(
    space: Any,
    count: int,
    seed: int,
    step: int,
    extremes: tuple | None = None,
    max_flops: float | None = None,
    flops: Callable[[Any], float] | None = None,
) -> list:
    """Largest, smallest and ``count`` random subnets for global step ``step``.

    ``extremes`` passes ``(largest, smallest)`` computed once (a detection space's
    ``smallest()`` counts FLOPs, so it is not free). With ``max_flops`` (and ``flops``),
    random subnets are drawn within the budget, with a random bias towards small or large
    choices so that they spread over the feasible range rather than crowding at its small
    end; ``extremes`` should then come from :func:`budget_extremes`.
    """
    largest, smallest = extremes if extremes is not None else (space.largest(), space.smallest())
    rng = random.Random(seed * 1_000_003 + step)
    randoms = []
    for _ in range(count):
        if max_flops is None:
            randoms.append(space.sample(rng))
            continue
        for _attempt in range(SAMPLING_ATTEMPTS):
            spec = space.sample(rng, bias=rng.random())
            if flops(spec) <= max_flops:
                break
        else:
            spec = smallest
        randoms.append(spec)
    return [largest, smallest] + randoms
