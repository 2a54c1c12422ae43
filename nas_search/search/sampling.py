"""Budget-aware random sampling of architectures.

Independent uniform choices crowd around the middle of a space's FLOPs range and rarely
reach its ends. :func:`sample_specs` instead draws candidates with a random bias toward
small or large choices, then picks, for each requested spec, the unused candidate whose
FLOPs is nearest a target drawn log-uniformly over the feasible range. The samples thus
spread over ``[smallest, min(budget, largest)]`` rather than crowding at the small end.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

from nas_search.errors import UserError
from nas_search.hw_models.flops import count_flops
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec
from nas_search.units import format_flops


@dataclass(frozen=True)
class FlopsRange:
    """Smallest and largest subnet FLOPs of a space at an input size."""

    smallest: int
    largest: int


def flops_range(space: SearchSpace, input_size: int | None = None) -> FlopsRange:
    """FLOPs of the space's smallest and largest subnets."""
    return FlopsRange(
        count_flops(space.smallest(), space, input_size).flops, count_flops(space.largest(), space, input_size).flops
    )


def check_budget(space: SearchSpace, max_flops: int, input_size: int | None = None) -> FlopsRange:
    """Refuse a FLOPs budget below the smallest subnet (naming the minimum)."""
    limits = flops_range(space, input_size)
    if max_flops < limits.smallest:
        size = space.input_size if input_size is None else input_size
        raise UserError(
            f"budget {format_flops(max_flops)} is below the smallest subnet of space {space.name!r} "
            f"({format_flops(limits.smallest)} at {size} px); use a budget of at least {limits.smallest}"
        )
    return limits


def sample_specs(
    space: SearchSpace,
    count: int,
    seed: int = 0,
    max_flops: int | None = None,
    input_size: int | None = None,
    min_fraction: float = 0.0,
) -> list[tuple[ArchSpec, int]]:
    """``count`` distinct random specs with their FLOPs, spread log-uniformly over the
    feasible FLOPs range (``<= max_flops`` when given; ``>= min_fraction * limit``)."""
    if count < 1:
        raise UserError(f"sample count {count} must be at least 1")
    rng = random.Random(seed)
    limits = check_budget(space, max_flops, input_size) if max_flops is not None else flops_range(space, input_size)
    limit = min(max_flops, limits.largest) if max_flops is not None else limits.largest
    low = max(limits.smallest, int(min_fraction * limit))
    pool: dict[str, tuple[ArchSpec, int]] = {}
    pool_size = max(40 * count, 1500)
    attempts = 0
    while len(pool) < pool_size and attempts < 4 * pool_size:
        attempts += 1
        spec = space.sample(rng, bias=rng.random())
        try:
            flops = count_flops(spec, space, input_size).flops
        except UserError:
            continue
        if low <= flops <= limit:
            pool[spec.key] = (spec, flops)
    if not pool:
        raise UserError(f"no architecture of space {space.name!r} fits in {format_flops(limit)}")
    ordered = sorted(pool.values(), key=lambda item: item[1])
    log_flops = [math.log(item[1]) for item in ordered]
    used: set[int] = set()
    chosen: list[tuple[ArchSpec, int]] = []
    for _ in range(min(count, len(ordered))):
        target = rng.uniform(math.log(low), math.log(limit))
        position = bisect.bisect_left(log_flops, target)
        for distance in range(len(ordered)):
            candidates = [index for index in (position - distance, position + distance) if 0 <= index < len(ordered)]
            free = [index for index in candidates if index not in used]
            if free:
                used.add(free[0])
                chosen.append(ordered[free[0]])
                break
    return chosen
