"""The protocol through which a space tells the cost models what its networks are.

Cost models count a classifier made of a space's stages by themselves. A space whose
networks are something else (a detector: backbone, neck and head) carries an object
implementing :class:`NetworkCosts` in its ``network_costs`` field; the cost models call it
instead. This replaces tables filled at import time: nothing registers anything, and the
cost models never import a task.

Contract:
    * Every method is pure: the same arguments give the same result, and nothing passed
      in is mutated.
    * ``count`` equals fvcore's count of the standalone network (1 multiply-add = 1 FLOP).
    * ``program`` and ``layers`` take the resolved network (``space.resolve(spec,
      num_classes=...)``) and describe the same network ``count`` counts.
    * ``latency_table`` is how latency tables cut the same network into timed parts (the
      part kinds with their builders and features, the parts of a network, the distinct
      parts of a space, the whole module, the input-size rule); ``None`` when the space's
      networks cannot be profiled into a table (the analytic devices still apply). Its
      parts run exactly the kernels ``layers`` lists.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from nas_search.hw_models.features import LayerCost
from nas_search.hw_models.flops import CostBreakdown
from nas_search.hw_models.latency.parts import TableTask
from nas_search.hw_models.memory import TensorProgram
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec


@runtime_checkable
class NetworkCosts(Protocol):
    """What the cost models need to know about a space's networks."""

    def count(self, spec: ArchSpec, space: SearchSpace, input_size: int, num_classes: int | None) -> CostBreakdown:
        """Exact FLOPs and params at ``input_size`` (``num_classes`` as the space means it)."""
        ...

    def program(self, resolved: Any, input_size: int) -> TensorProgram:
        """The tensor program (activation liveness) of a resolved network."""
        ...

    def layers(self, resolved: Any, input_size: int) -> list[LayerCost]:
        """Every kernel of a resolved network, for the analytic latency devices."""
        ...

    @property
    def latency_table(self) -> TableTask | None:
        """How latency tables time the space's networks part by part (``None``: no tables)."""
        ...


__all__ = ["NetworkCosts"]
