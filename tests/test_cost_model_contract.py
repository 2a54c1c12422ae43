"""The :class:`nas_search.hw_models.CostModel` contract, checked on every implementation.

In the style of Optuna's ``testing/pytest_samplers.py``: :class:`CostModelContract` holds
the contract's tests once; each implementation subclasses it, saying how to build the model
on a real space and what it promises (its unit, its device, whether it is monotone in
width). Everything runs on the built-in ``micro`` and ``detect`` spaces, without mocks:
the latency-table models get a real :class:`LatencyTable` whose entries are a known
linear function of the parts' analytic features (so nothing is timed on this shared CPU).
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import replace

import pytest

from nas_search.errors import UserError
from nas_search.hw_models import COST_UNITS, CostModel, FlopsModel, ParamsModel
from nas_search.hw_models.analytic import AnalyticLatencyModel, load_constants
from nas_search.hw_models.latency import (
    FlopsProportionalModel,
    LatencyModel,
    LatencyTable,
    Timing,
    count_parts,
    model_parts,
    part_features,
)
from nas_search.hw_models.latency.table import SubnetMeasurement
from nas_search.hw_models.memory import MemoryModel
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec
from nas_search.tasks import get_space

#: Another space's architecture for each space (the model must refuse it).
OTHER_SPACE = {"micro": "detect", "detect": "micro"}


# ---------------------------------------------------------------------------- architectures
def _random_specs(space: SearchSpace, count: int, seed: int) -> list[ArchSpec]:
    rng = random.Random(seed)
    specs = [space.sample(rng, bias=rng.random()) for _ in range(count)]
    return [space.smallest(), *specs, space.largest()]


def _with_widths(space: SearchSpace, spec: ArchSpec, choose) -> ArchSpec:
    """``spec`` with every width ratio (stem, blocks, head; a detector's neck and head)
    replaced by ``choose`` of its allowed ratios: the same ops, kernels and depths."""
    stages = tuple(
        replace(stage, blocks=tuple(replace(block, width=choose(choices.widths)) for block in stage.blocks))
        for stage, choices in zip(spec.stages, space.stages)
    )
    narrowed = replace(spec, stages=stages, stem_width=choose(space.stem_widths), head_width=choose(space.head_widths))
    if spec.detector is not None:
        detector = space.detector  # type: ignore[attr-defined]
        narrowed = replace(
            narrowed,
            detector=replace(spec.detector, neck_width=choose(detector.neck_widths), head_width=choose(detector.head_widths)),
        )
    return narrowed


def _width_triples(space: SearchSpace, specs: list[ArchSpec]) -> list[tuple[ArchSpec, ArchSpec, ArchSpec]]:
    """(narrowest, spec, widest) for every spec whose narrowest and widest versions are
    valid (an SCC block's groups must divide its input channels at every width)."""
    triples = []
    for spec in specs:
        narrow, wide = _with_widths(space, spec, min), _with_widths(space, spec, max)
        try:
            space.resolve(narrow), space.resolve(wide)
        except UserError:
            continue
        triples.append((narrow, spec, wide))
    return triples


# ---------------------------------------------------------------------------- latency tables
#: Milliseconds per GFLOP, per MB of activation traffic and per fused layer of the tables below.
TABLE_COEFFICIENTS = (2.0, 0.05, 0.004)


def _linear_latency(features) -> float:
    per_gflop, per_megabyte, per_layer = TABLE_COEFFICIENTS
    return per_gflop * features.flops / 1e9 + per_megabyte * features.traffic_bytes / 1e6 + per_layer * features.layers


def _linear_table(space: SearchSpace, specs: list[ArchSpec], measured: int = 0) -> LatencyTable:
    """A table of ``space`` holding every part of ``specs``, each part's latency a known
    linear function of its features, and ``measured`` whole subnets at 1.2 x their LUT sum
    plus 0.05 ms (what the learned correction is fitted on)."""
    table = LatencyTable(
        space=space.name,
        device="cpu",
        hardware="contract",
        runtime="torch",
        threads=1,
        input_size=space.input_size,
        num_classes=space.num_classes,
    )
    for spec in specs:
        for config in model_parts(space, space.resolve(spec), space.input_size):
            latency = _linear_latency(part_features(config, space))
            table.add_entry(config, Timing(latency, latency))
    for spec in specs[:measured]:
        total = sum(
            _linear_latency(part_features(config, space))
            for config in model_parts(space, space.resolve(spec), space.input_size)
        )
        table.add_subnet(spec, Timing(1.2 * total + 0.05, 1.2 * total + 0.05))
    return table


# ---------------------------------------------------------------------------- the contract
class CostModelContract:
    """The contract's tests. A subclass sets :attr:`name`, :attr:`unit`, :attr:`device`,
    implements :meth:`build`, and mixes in the width promises its model makes
    (:class:`MonotoneInWidthContract`, :class:`WidestCostsMostContract`)."""

    name: str
    unit: str
    device: str

    @pytest.fixture(params=["micro", "detect"])
    def space(self, request: pytest.FixtureRequest) -> SearchSpace:
        return get_space(request.param)

    @pytest.fixture
    def specs(self, space: SearchSpace) -> list[ArchSpec]:
        return _random_specs(space, 8, seed=11)

    @pytest.fixture
    def model(self, space: SearchSpace, specs: list[ArchSpec]) -> CostModel:
        return self.build(space, specs)

    def build(self, space: SearchSpace, specs: list[ArchSpec]) -> CostModel:
        raise NotImplementedError

    # -------------------------------------------------------------------- attributes
    def test_follows_the_protocol(self, model: CostModel) -> None:
        assert isinstance(model, CostModel)
        for attribute in ("name", "unit", "device"):
            value = getattr(model, attribute)
            assert isinstance(value, str) and value and value.strip() == value and "\n" not in value

    def test_name_unit_and_device(self, model: CostModel) -> None:
        assert model.unit in COST_UNITS
        assert (model.name, model.unit, model.device) == (self.name, self.unit, self.device)

    # -------------------------------------------------------------------- values
    def test_values_are_finite_non_negative_floats(self, model: CostModel, specs: list[ArchSpec]) -> None:
        for spec in specs:
            value = model(spec)
            assert type(value) is float
            assert math.isfinite(value) and value >= 0

    def test_the_largest_architecture_costs_something(self, model: CostModel, space: SearchSpace) -> None:
        assert model(space.largest()) > 0

    def test_pure_and_deterministic(self, model: CostModel, specs: list[ArchSpec]) -> None:
        """Same spec, same value, whatever was priced before and in whatever order; the
        spec is not mutated."""
        originals = copy.deepcopy(specs)
        forward = [model(spec) for spec in specs]
        backward = [model(spec) for spec in reversed(specs)][::-1]
        again = [model(copy.deepcopy(spec)) for spec in specs]
        assert forward == backward == again
        assert specs == originals and [spec.key for spec in specs] == [spec.key for spec in originals]

    # -------------------------------------------------------------------- errors
    def test_refuses_an_architecture_of_another_space(self, model: CostModel, space: SearchSpace) -> None:
        other = get_space(OTHER_SPACE[space.name]).largest()
        with pytest.raises(UserError) as caught:
            model(other)
        message = str(caught.value)
        assert "\n" not in message and other.space in message and space.name in message

    def test_refuses_a_choice_outside_the_space(self, model: CostModel, space: SearchSpace) -> None:
        spec = space.largest()
        first = spec.stages[0]
        width = next(ratio for ratio in (0.3, 0.35, 0.45, 0.55, 0.65) if ratio not in space.stages[0].widths)
        bad = replace(
            spec, stages=(replace(first, blocks=(replace(first.blocks[0], width=width), *first.blocks[1:])), *spec.stages[1:])
        )
        with pytest.raises(UserError) as caught:
            model(bad)
        assert "\n" not in str(caught.value) and "width" in str(caught.value) and str(width) in str(caught.value)


# ---------------------------------------------------------------------------- implementations
class MonotoneInWidthContract:
    """The contract's width promise of counting models (FLOPs, params): non-decreasing in
    every width ratio. Mixed into the suites of the models that make it."""

    def test_monotone_in_width(self, model: CostModel, space: SearchSpace, specs: list[ArchSpec]) -> None:
        """A counting model is non-decreasing in every width ratio: narrowest <= spec <= widest."""
        triples = _width_triples(space, specs)
        assert len(triples) >= 3
        for narrow, spec, wide in triples:
            assert model(narrow) <= model(spec) <= model(wide)
        assert any(model(narrow) < model(wide) for narrow, _, wide in triples)


class WidestCostsMostContract:
    """The contract's weaker width promise (every model not fitted to measurements): the
    widest version of an architecture costs more than its narrowest."""

    def test_widest_costs_at_least_the_narrowest(self, model: CostModel, space: SearchSpace, specs: list[ArchSpec]) -> None:
        """The widest version of an architecture (same ops, kernels and depths) costs at
        least as much as its narrowest."""
        triples = _width_triples(space, specs)
        assert len(triples) >= 3
        assert all(model(narrow) < model(wide) for narrow, _, wide in triples)


class TestFlopsModel(CostModelContract, MonotoneInWidthContract, WidestCostsMostContract):
    name, unit, device = "flops", "FLOPs", "any"

    def build(self, space: SearchSpace, specs: list[ArchSpec]) -> CostModel:
        return FlopsModel(space)


class TestParamsModel(CostModelContract, MonotoneInWidthContract, WidestCostsMostContract):
    name, unit, device = "params", "params", "any"

    def build(self, space: SearchSpace, specs: list[ArchSpec]) -> CostModel:
        return ParamsModel(space)


class TestMemoryModel(CostModelContract, WidestCostsMostContract):
    name, unit, device = "peak_memory", "bytes", "any"

    def build(self, space: SearchSpace, specs: list[ArchSpec]) -> CostModel:
        return MemoryModel(space)


class TestAnalyticLatencyModel(CostModelContract, WidestCostsMostContract):
    name, unit, device = "latency", "ms", "pixel2"

    def build(self, space: SearchSpace, specs: list[ArchSpec]) -> CostModel:
        return AnalyticLatencyModel(load_constants()["pixel2"], space)


class TestLatencyModelTableSum(CostModelContract, WidestCostsMostContract):
    """The plain LUT sum of a table whose entries grow with the parts' features, so the
    widest version of an architecture costs more than its narrowest (a measured table
    promises no such thing)."""

    name, unit, device = "latency", "ms", "cpu/torch/1thread"

    def build(self, space: SearchSpace, specs: list[ArchSpec]) -> CostModel:
        triples = [spec for triple in _width_triples(space, specs) for spec in triple]
        return LatencyModel(_linear_table(space, specs + triples), space, correction=False)

    def test_every_part_comes_from_the_table(self, model: LatencyModel, specs: list[ArchSpec]) -> None:
        for spec in specs:
            prediction = model.predict(spec)
            assert prediction.estimated_parts == 0 and not prediction.corrected
            assert prediction.latency_ms == model(spec) == prediction.lut_sum_ms


class TestLatencyModelCorrected(CostModelContract):
    """LUT sum plus the learned correction, fitted on 12 measured subnets (no monotonicity
    promised: a correction is fitted to measurements)."""

    name, unit, device = "latency", "ms", "cpu/torch/1thread"

    @pytest.fixture
    def specs(self, space: SearchSpace) -> list[ArchSpec]:
        return _random_specs(space, 12, seed=13)

    def build(self, space: SearchSpace, specs: list[ArchSpec]) -> CostModel:
        model = LatencyModel(_linear_table(space, specs, measured=12), space)
        assert model.correction is not None
        return model

    def test_the_correction_learns_the_measurements(self, model: LatencyModel, specs: list[ArchSpec]) -> None:
        for item in model.table.subnets:
            assert model(item.spec) == pytest.approx(item.latency_ms, rel=0.05)


class TestFlopsProportionalModel(CostModelContract):
    """``a * FLOPs + b`` fitted on measured subnets (``device`` = ``fitted``)."""

    name, unit, device = "flops_proportional", "ms", "fitted"

    def build(self, space: SearchSpace, specs: list[ArchSpec]) -> CostModel:
        flops = FlopsModel(space)
        measurements = [SubnetMeasurement(spec, 0.2 + 3e-9 * flops(spec), 0.2 + 3e-9 * flops(spec)) for spec in specs]
        return FlopsProportionalModel(space, measurements)

    def test_recovers_a_linear_law(self, model: FlopsProportionalModel, space: SearchSpace, specs: list[ArchSpec]) -> None:
        flops = FlopsModel(space)
        for spec in specs:
            assert model(spec) == pytest.approx(0.2 + 3e-9 * flops(spec), rel=1e-6)


# ---------------------------------------------------------------------------- table kinds
def test_a_table_learns_its_part_kinds_from_its_space(tmp_path) -> None:
    """A detector's part kinds reach the latency code through ``space.network_costs``
    (nothing is registered): a ``micro`` table cannot hold them, a ``detect`` table can."""
    detect, micro = get_space("detect"), get_space("micro")
    assert micro.network_costs is None and detect.network_costs.latency_table is not None
    assert count_parts(detect, 64, [0.25])["by_kind"]["lateral"] > 0
    assert "lateral" not in count_parts(micro, 32, [0.25])["by_kind"]
    specs = _random_specs(detect, 2, seed=3)
    table = _linear_table(detect, specs)
    LatencyModel(table, detect, correction=False)
    table.space = "micro"
    with pytest.raises(UserError, match="lateral"):
        LatencyModel(table, micro, correction=False)
