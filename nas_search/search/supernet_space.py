"""The supernet spaces as a :class:`~nas_search.search.space_protocol.CandidateSpace`:
candidates are :class:`~nas_search.spec.ArchSpec` subnets of a trained supernet, proposed
from Optuna parameters (:mod:`nas_search.search.parameters`), moved onto the FLOPs band
(:mod:`nas_search.spaces.projection`), costed by analytic and device models and scored
with inherited weights."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from nas_search.hw_models import FlopsModel, ParamsModel
from nas_search.search.budgets import Budgets
from nas_search.search.parameters import spec_to_params, suggest_spec
from nas_search.search.sampling import sample_specs
from nas_search.spaces.projection import project_to_band
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec

#: With device constraints, startup candidates are drawn from a pool this many times larger.
DEVICE_POOL_FACTOR = 20

#: ``spec -> value`` of one cost.
CostModel = Callable[[ArchSpec], float]


@dataclass
class SupernetSpace:
    """Subnets of a trained supernet (implements :class:`~nas_search.search.space_protocol.CandidateSpace`).

    Attributes:
        space: the search space.
        cost_models: every recorded cost by name, in the order trials record them.
        evaluate: ``spec -> metrics`` with inherited weights (``accuracy`` first).
        budgets: the search's budgets (the FLOPs band that proposals are moved onto, and
            the device limits that startup candidates meet).
        input_size: the deployment size FLOPs are counted at.
    """

    space: SearchSpace
    cost_models: dict[str, CostModel]
    evaluate: Callable[[ArchSpec], dict[str, float]]
    budgets: Budgets = field(default_factory=Budgets)
    input_size: int | None = None

    @classmethod
    def build(
        cls,
        space: SearchSpace,
        input_size: int,
        num_classes: int,
        budgets: Budgets,
        device_models: Mapping[str, CostModel],
        evaluate: Callable[[ArchSpec], dict[str, float]],
    ) -> SupernetSpace:
        """The adapter for networks with ``num_classes`` outputs: FLOPs and params always,
        then the given device models (``latency``, ``peak_memory``) for that class count."""
        cost_models: dict[str, CostModel] = {
            "flops": FlopsModel(space, input_size, num_classes),
            "params": ParamsModel(space, num_classes),
            **device_models,
        }
        return cls(space, cost_models, evaluate, budgets, input_size)

    @property
    def name(self) -> str:
        """The space's registered name."""
        return self.space.name

    def startup_parameters(self, count: int, seed: int) -> list[dict[str, Any]]:
        """Parameters of :func:`startup_specs`."""
        return [spec_to_params(spec) for spec in startup_specs(self, count, seed)]

    def propose(self, trial: optuna.Trial) -> ArchSpec:
        """The subnet of the trial's parameters."""
        return suggest_spec(trial, self.space)

    def settle(self, candidate: ArchSpec) -> ArchSpec:
        """The subnet moved onto the FLOPs band when there is a FLOPs budget."""
        if self.budgets.flops is None:
            return candidate
        floor = self.budgets.flops_floor
        return project_to_band(
            candidate, self.space, self.cost_models["flops"], 0.0 if floor is None else floor, float(self.budgets.flops)
        )

    def misfit(self, candidate: ArchSpec) -> float:
        """The FLOPs' log distance to the band (0 inside it, or without a FLOPs budget)."""
        if self.budgets.flops is None:
            return 0.0
        flops = float(self.cost_models["flops"](candidate))
        floor = self.budgets.flops_floor or 0.0
        if flops > self.budgets.flops:
            return math.log(flops / self.budgets.flops)
        return math.log(floor / flops) if flops < floor else 0.0

    def parameters(self, candidate: ArchSpec) -> dict[str, Any]:
        """The trial parameters of the subnet (:func:`spec_to_params`)."""
        return spec_to_params(candidate)

    def cost(self, candidate: ArchSpec) -> dict[str, float]:
        """Every cost of the subnet."""
        return {name: float(model(candidate)) for name, model in self.cost_models.items()}

    def score(self, candidate: ArchSpec) -> dict[str, float]:
        """The subnet's metrics with inherited weights (a bare score is ``accuracy``)."""
        metrics = self.evaluate(candidate)
        return {"accuracy": metrics} if not isinstance(metrics, dict) else metrics

    def describe(self, candidate: ArchSpec) -> dict[str, str]:
        """The subnet's one-line form and its JSON."""
        return {"arch": str(candidate), "arch_json": json.dumps(candidate.to_dict())}

    def export(self, candidate: ArchSpec, directory: Path, stem: str, caption: str) -> list[Path]:
        """The subnet's JSON and its per-block width chart."""
        directory.mkdir(parents=True, exist_ok=True)
        arch_file = directory / f"{stem}-arch.json"
        arch_file.write_text(json.dumps(candidate.to_dict(), indent=2))
        chart = directory / f"{stem}-widths.svg"
        chart.write_text(width_chart_svg(candidate, caption))
        return [arch_file, chart]


def startup_specs(candidates: SupernetSpace, count: int, seed: int) -> list[ArchSpec]:
    """Budget-aware startup architectures. FLOPs budgets are met by construction (spread
    sampling); latency and memory budgets by drawing a larger pool and keeping the specs
    that meet them, those closest to the binding budget first."""
    budgets, models = candidates.budgets, candidates.cost_models
    device_limits = [(models[cost], limit) for cost, limit in budgets.device_limits().items()]
    lower_limits = [(models[cost], limit) for cost, limit in budgets.device_floors().items()]
    pool_size = count * (DEVICE_POOL_FACTOR if device_limits else 1)
    pool = [
        spec
        for spec, _ in sample_specs(
            candidates.space,
            pool_size,
            seed=seed,
            max_flops=budgets.flops,
            input_size=candidates.input_size,
            min_fraction=budgets.min_utilization if budgets.flops_floor is not None else 0.0,
        )
    ]
    if not device_limits:
        return pool[:count]
    in_band: list[ArchSpec] = []
    below_band: list[ArchSpec] = []
    for spec in pool:
        costs = {id(model): float(model(spec)) for model, _ in device_limits + lower_limits}
        if all(costs[id(model)] <= limit for model, limit in device_limits):
            meets_lower = all(costs[id(model)] >= limit for model, limit in lower_limits)
            (in_band if meets_lower else below_band).append(spec)
    return (in_band + below_band)[:count]


def width_chart_svg(spec: ArchSpec, title: str = "") -> str:
    """A small standalone SVG bar chart of every block's width ratio, coloured by op."""
    colours = {"mbconv": "#1f77b4", "dsc": "#2ca02c", "scc": "#d62728", "slim": "#9467bd"}
    blocks = [(stage_index, block) for stage_index, stage in enumerate(spec.stages) for block in stage.blocks]
    bar, gap, height, top = 18, 4, 120, 24
    width = 40 + len(blocks) * (bar + gap) + 140
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + top + 40}" font-family="sans-serif" font-size="10">',
        f'<text x="4" y="14" font-size="12">{html.escape(title or "per-block width ratio (pruning ratio)")}</text>',
    ]
    for index, (stage_index, block) in enumerate(blocks):
        x = 40 + index * (bar + gap)
        bar_height = block.width * height
        parts.append(
            f'<rect x="{x}" y="{top + height - bar_height:.1f}" width="{bar}" height="{bar_height:.1f}" '
            f'fill="{colours[block.op]}"><title>stage {stage_index}: {html.escape(str(block))}</title></rect>'
        )
        parts.append(f'<text x="{x + 2}" y="{top + height + 12}">s{stage_index}</text>')
    for ratio in (0.25, 0.5, 0.75, 1.0):
        y = top + height - ratio * height
        parts.append(f'<text x="4" y="{y + 3:.1f}">{ratio:g}</text>')
    for index, (op, colour) in enumerate(colours.items()):
        y = top + 12 * index
        parts.append(f'<rect x="{width - 120}" y="{y}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{width - 105}" y="{y + 9}">{op}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


__all__ = ["DEVICE_POOL_FACTOR", "SupernetSpace", "startup_specs", "width_chart_svg"]
