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

#: The units a cost model may report, and what each means.
COST_UNITS: dict[str, str] = {
    "FLOPs": "multiply-adds of one batch-1 inference (1 multiply-add = 1 FLOP)",
    "params": "learnable parameters",
    "bytes": "peak activation memory of one batch-1 fp32 inference",
    "ms": "batch-1 latency in milliseconds",
}


@runtime_checkable
class CostModel(Protocol):
    """What a search, a budget or a report needs from a cost model: ``spec -> number``.

    A cost model is bound to one search space (and, where it matters, one device, input
    size and class count) when it is built; calling it prices one architecture of that space.

    Attributes:
        name: a short identifier of what is measured (``flops``, ``params``,
            ``peak_memory``, ``latency``, ``flops_proportional``); reports and constraint
            names use it.
        unit: one of :data:`COST_UNITS` (``FLOPs``, ``params``, ``bytes``, ``ms``); every
            value the model returns is in this unit, never scaled (no MFLOPs, no seconds).
        device: what the number is of: ``any`` for a device-independent count (FLOPs,
            parameters, activation bytes), else the device, e.g. ``pixel2`` or a profiled
            table's ``cpu/onnxruntime/1thread``; a model fitted on measurements names how
            (``fitted``).

    Contract of ``model(spec)``:
        * **Pure**: the value depends only on ``spec`` and on what the model was built with
          (space, table, device constants, input size, classes). The same spec gives the
          same value, whatever was priced before and in whatever order; ``spec`` is not
          mutated, and nothing is measured on the machine during a call.
        * **What may be cached**: anything derived from immutable inputs, such as per-part
          features keyed by a part's key or a fallback fitted lazily from the model's own
          table; a cache never changes a value, only how fast it comes.
        * **Value**: a finite ``float`` >= 0 in :attr:`unit`, and > 0 for a network
          that computes anything.
        * **Width**: FLOPs and parameter counts are non-decreasing in every width ratio
          (stem, blocks, head, a detector's neck and head). Models that are functions of
          the architecture (peak memory, the analytic devices) price
          the widest version of an architecture (same ops, kernels and depths) above its
          narrowest, but promise no order in between: a residual connection exists only
          where a block's input and output widths match, so a narrower network can move
          more bytes. Models built from measurements (a latency table, its learned
          correction, the FLOPs-proportional baseline) promise no order at all.
        * **Errors**: an architecture of another space, or one with a choice the space
          does not allow, raises :class:`~nas_search.errors.UserError` with a one-line
          message naming the problem; so does a model that cannot price a valid
          architecture (e.g. a table missing a whole kind of part). No other exception
          type signals bad input.

    Implementations: :class:`FlopsModel`, :class:`ParamsModel`,
    :class:`~nas_search.hw_models.memory.MemoryModel`,
    :class:`~nas_search.hw_models.latency.LatencyModel`,
    :class:`~nas_search.hw_models.latency.FlopsProportionalModel` and
    :class:`~nas_search.hw_models.analytic.AnalyticLatencyModel`; the shared contract
    suite is ``tests/test_cost_model_contract.py``. Most also offer
    ``for_classes(num_classes)``, the same model for networks with another class count.
    """

    name: str
    unit: str
    device: str

    def __call__(self, spec: ArchSpec) -> float:
        """The cost of ``spec`` in :attr:`unit` (see the contract above)."""
        ...


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
        """FLOPs of ``spec`` (:class:`CostModel` contract)."""
        return float(count_flops(spec, self.space, self.input_size, self.num_classes).flops)


class ParamsModel:
    """Analytic parameter count (classifiers and detectors alike)."""

    unit = "params"
    device = "any"

    def __init__(self, space: SearchSpace, num_classes: int | None = None) -> None:
        self.space, self.num_classes = space, num_classes
        self.name = "params"

    def __call__(self, spec: ArchSpec) -> float:
        """Parameters of ``spec`` (:class:`CostModel` contract)."""
        return float(count_flops(spec, self.space, self.space.input_size, self.num_classes).params)


__all__ = ["COST_UNITS", "CostBreakdown", "CostModel", "FlopsModel", "ParamsModel", "count_flops", "count_network"]
