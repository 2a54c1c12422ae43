"""The search objective: a space, an evaluator and cost models, evaluated per trial.

Each trial samples a spec, computes its costs (microseconds), records every constraint
with ``trial.set_constraint`` and mirrors it in user attributes (optuna-dashboard does not
show constraints set that way). An infeasible spec costs no evaluation; a feasible one is
scored with inherited weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import optuna

from nas_search.search.parameters import suggest_spec
from nas_search.search.samplers import record_constraints
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec


@dataclass(frozen=True)
class Constraint:
    """A bound on a cost: ``value <= limit`` (upper) or ``value >= limit`` (lower).

    Its Optuna constraint value is the relative violation, ``<= 0`` when satisfied.
    """

    name: str
    cost: str
    limit: float
    lower: bool = False

    def violation(self, value: float) -> float:
        """Relative violation (``<= 0`` means satisfied)."""
        return (self.limit - value) / self.limit if self.lower else (value - self.limit) / self.limit


@dataclass
class TrialOutcome:
    """What one trial produced."""

    spec: ArchSpec
    costs: dict[str, float]
    feasible: bool
    accuracy: float | None
    values: list[float]


@dataclass
class SearchObjective:
    """Evaluates one trial.

    Args:
        space: the search space.
        cost_models: name -> ``spec -> value`` (``flops``, ``params``, ...).
        constraints: bounds on those costs.
        evaluate: ``spec -> score`` with inherited weights: a float, or a dict of metrics
            whose ``accuracy`` entry is the task's primary score (mAP@0.5 for detection);
            every metric is recorded as a user attribute.
        objectives: names of the study's objectives (``accuracy`` or a cost name).
        on_feasible: called with (trial, spec, costs, accuracy) after a feasible evaluation,
            e.g. to upload artifacts.
        project: maps a proposal onto the budget (``search.projection``); the projected
            spec is the one costed, evaluated and recorded.
    """

    space: SearchSpace
    cost_models: dict[str, Callable[[ArchSpec], float]]
    constraints: list[Constraint]
    evaluate: Callable[[ArchSpec], float | dict[str, float]]
    objectives: tuple[str, ...] = ("accuracy",)
    on_feasible: Callable[[optuna.Trial, ArchSpec, dict, float], None] | None = None
    infeasible_accuracy: float = 0.0
    project: Callable[[ArchSpec], ArchSpec] | None = None

    def __call__(self, trial: optuna.Trial) -> TrialOutcome:
        spec = suggest_spec(trial, self.space)
        if self.project is not None:
            projected = self.project(spec)
            if projected != spec:
                trial.set_user_attr("proposed_arch", str(spec))
                spec = projected
        costs = {name: float(model(spec)) for name, model in self.cost_models.items()}
        trial.set_user_attr("arch", str(spec))
        trial.set_user_attr("arch_json", json.dumps(spec.to_dict()))
        for name, value in costs.items():
            trial.set_user_attr(name, value)
        feasible = record_constraints(
            trial, {constraint.name: constraint.violation(costs[constraint.cost]) for constraint in self.constraints}
        )
        accuracy = None
        if feasible:
            metrics = self.evaluate(spec)
            metrics = {"accuracy": metrics} if not isinstance(metrics, dict) else metrics
            accuracy = float(metrics["accuracy"])
            for name, value in metrics.items():
                trial.set_user_attr(name, float(value))
            if self.on_feasible is not None:
                self.on_feasible(trial, spec, costs, accuracy)
        values = [
            (accuracy if accuracy is not None else self.infeasible_accuracy) if name == "accuracy" else costs[name]
            for name in self.objectives
        ]
        return TrialOutcome(spec, costs, feasible, accuracy, values)
