"""Cost models of architectures on devices.

Every cost model follows one small protocol, :class:`CostModel`: it has a ``name``, a
``unit`` and a ``device``, and maps an ``ArchSpec`` to a number. The analytic FLOPs and
parameter models are exact and take microseconds; latency models are built from lookup
tables profiled on the target device and learned corrections.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from nas_search.hw_models.flops import CostBreakdown, count_flops, count_network
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec


@runtime_checkable
class CostModel(Protocol):
    """``spec -> value`` with a name, unit and device."""

    name: str
    unit: str
    device: str

    def __call__(self, spec: ArchSpec) -> float: ...


class FlopsModel:
    """Analytic FLOPs (1 multiply-add = 1 FLOP) at a fixed input size.

    Works for every space task through :func:`count_flops` (for ``detect``: backbone,
    neck and head at the deployment size, ``num_classes`` = C without background)."""

    unit = "FLOPs"
    device = "any"

    def __init__(self, space: SearchSpace, input_size: int | None = None, num_classes: int | None = None) -> None:
        self.space, self.num_classes = space, num_classes
        self.input_size = space.input_size if input_size is None else input_size
        self.name = "flops"

    def __call__(self, spec: ArchSpec) -> float:
        return float(count_flops(spec, self.space, self.input_size, self.num_classes).flops)


class ParamsModel:
    """Analytic parameter count (classifiers and detectors alike)."""

    unit = "params"
    device = "any"

    def __init__(self, space: SearchSpace, num_classes: int | None = None) -> None:
        self.space, self.num_classes = space, num_classes
        self.name = "params"

    def __call__(self, spec: ArchSpec) -> float:
        return float(count_flops(spec, self.space, self.space.input_size, self.num_classes).params)


__all__ = ["CostBreakdown", "CostModel", "FlopsModel", "ParamsModel", "count_flops", "count_network"]
