"""A detector's costs as the cost models see them: the ``network_costs`` every detection
space carries (:class:`nas_search.hw_models.network.NetworkCosts`)."""

from __future__ import annotations

from dataclasses import dataclass

from nas_search.hw_models.features import LayerCost
from nas_search.hw_models.flops import CostBreakdown
from nas_search.hw_models.latency.parts import TableTask
from nas_search.hw_models.memory import TensorProgram
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec
from nas_search.tasks.detect.cost import count_detection
from nas_search.tasks.detect.hardware import detector_layers, detector_program
from nas_search.tasks.detect.latency import DETECTOR_TABLE_TASK
from nas_search.tasks.detect.resolved import ResolvedDetector


@dataclass(frozen=True)
class DetectorCosts:
    """Exact FLOPs and params, the tensor program, the kernel listing and the latency-table
    parts of a detector."""

    @property
    def latency_table(self) -> TableTask:
        """How latency tables cut a detector into parts (backbone, neck and head kinds)."""
        return DETECTOR_TABLE_TASK

    def count(self, spec: ArchSpec, space: SearchSpace, input_size: int, num_classes: int | None) -> CostBreakdown:
        """Backbone, neck and head FLOPs and params (``num_classes`` = C, no background)."""
        return count_detection(spec, space, input_size, num_classes)

    def program(self, resolved: ResolvedDetector, input_size: int) -> TensorProgram:
        """The detector's tensor program (peak activation memory)."""
        return detector_program(resolved, input_size)

    def layers(self, resolved: ResolvedDetector, input_size: int) -> list[LayerCost]:
        """Every kernel of the detector (analytic latency devices)."""
        return detector_layers(resolved, input_size)


#: The costs every detection space carries.
DETECTOR_COSTS = DetectorCosts()
