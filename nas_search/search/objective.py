"""The search objective: a candidate space and constraints, evaluated per trial.

Each trial asks the space (:class:`~nas_search.search.space_protocol.CandidateSpace`) for
a candidate, computes its costs, records every constraint with ``trial.set_constraint``
and mirrors it in user attributes (optuna-dashboard does not show constraints set that
way). An infeasible candidate costs no evaluation and is told as pruned (no value); a
feasible one is scored by the space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from nas_search.search.budgets import Constraint
from nas_search.search.samplers import record_constraints
from nas_search.search.space_protocol import CandidateSpace
from nas_search.units import format_flops


@dataclass
class TrialOutcome:
    """What one trial produced. ``values`` (the objectives) is None for an infeasible
    trial, which is told to the study as pruned: it has no score, so no chart shows one,
    and constraint-aware samplers still learn from its recorded constraints."""

    candidate: Any
    costs: dict[str, float]
    feasible: bool
    accuracy: float | None
    values: list[float] | None


@dataclass
class SearchObjective:
    """Evaluates one trial.

    Args:
        space: the candidates (suggested, costed, described and scored through the protocol).
        constraints: bounds on the candidates' costs.
        objectives: names of the study's objectives (``accuracy`` or a cost name).
        on_feasible: called with (trial, candidate, costs, accuracy) after a feasible
            evaluation, e.g. to upload artifacts.
        proposals: ``trial number -> user attributes of the sampler's proposal`` (its
            one-line form ``proposed_arch`` and its costs ``proposed_flops`` ...) when the sampler
            moved it before the trial recorded it
            (:meth:`~nas_search.search.projecting_sampler.ProjectingSampler.proposal_of`).

    Every metric the space's ``score`` returns is recorded as a user attribute; its
    ``accuracy`` entry is the task's primary score (mAP@0.5 for detection).
    """

    space: CandidateSpace
    constraints: list[Constraint]
    objectives: tuple[str, ...] = ("accuracy",)
    on_feasible: Callable[[optuna.Trial, Any, dict, float], None] | None = None
    proposals: Callable[[int], dict[str, Any] | None] | None = None

    def __call__(self, trial: optuna.Trial) -> TrialOutcome:
        candidate = self.space.propose(trial)
        proposal = self.proposals(trial.number) if self.proposals is not None else None
        for name, value in (proposal or {}).items():  # proposed_arch, proposed_flops ...
            trial.set_user_attr(name, value)
        costs = self.space.cost(candidate)
        for name, value in {**self.space.describe(candidate), **costs}.items():
            trial.set_user_attr(name, value)
        feasible = record_constraints(
            trial, {constraint.name: constraint.violation(costs[constraint.cost]) for constraint in self.constraints}
        )
        accuracy = None
        if feasible:
            metrics = self.space.score(candidate)
            accuracy = float(metrics["accuracy"])
            for name, value in metrics.items():
                trial.set_user_attr(name, float(value))
            if self.on_feasible is not None:
                self.on_feasible(trial, candidate, costs, accuracy)
        if accuracy is None:  # told as pruned: no made-up score in any chart or model
            return TrialOutcome(candidate, costs, feasible, None, None)
        values = [accuracy if name == "accuracy" else costs[name] for name in self.objectives]
        return TrialOutcome(candidate, costs, feasible, accuracy, values)


def make_objective(
    space: CandidateSpace,
    constraints: list[Constraint],
    objectives: tuple[str, ...],
    study_dir: Path,
    artifact_dir: Path,
    proposals: Callable[[int], dict[str, Any] | None] | None = None,
) -> SearchObjective:
    """The objective of a search whose feasible trials upload the space's review files
    (written under ``study_dir/trial-files``) as trial artifacts into ``artifact_dir``."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    scratch = study_dir / "trial-files"

    def upload(trial: optuna.Trial, candidate: Any, costs: dict[str, float], accuracy: float) -> None:
        caption = f"trial {trial.number}: accuracy {accuracy:.3f}, {format_flops(costs['flops'])}"
        for path in space.export(candidate, scratch, f"trial-{trial.number}", caption):
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)

    return SearchObjective(space=space, constraints=constraints, objectives=objectives, on_feasible=upload, proposals=proposals)


__all__ = ["Constraint", "SearchObjective", "TrialOutcome", "make_objective"]
