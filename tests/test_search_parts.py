"""The search's parts on their own: typed budgets and the constraints they become, the
typed view of a trial's records, the supernet spaces behind the candidate-space protocol,
and an objective driven by another implementation of that protocol."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState, create_trial

from nas_search.errors import UserError
from nas_search.hw_models import FlopsModel
from nas_search.search.budgets import Budgets, Constraint, parse_params_budget
from nas_search.search.config import SearchConfig
from nas_search.search.objective import SearchObjective, make_objective
from nas_search.search.parameters import spec_to_params
from nas_search.search.records import TrialRecord
from nas_search.search.resolve import resolve_search
from nas_search.search.sampling import flops_range
from nas_search.search.space_protocol import CandidateSpace
from nas_search.search.supernet_space import SupernetSpace
from nas_search.tasks import get_space

SEARCH_PACKAGE = Path(__file__).resolve().parent.parent / "nas_search" / "search"


def test_budgets_become_the_stored_constraints_in_order() -> None:
    budgets = Budgets(flops=8_000_000, params=500_000, memory_bytes=20_000_000, min_utilization=0.8, flops_binding=True)
    assert budgets.constraints() == [
        Constraint("flops", "flops", 8_000_000.0),
        Constraint("flops_utilization", "flops", 0.8 * 8_000_000, lower=True),
        Constraint("params", "params", 500_000.0),
        Constraint("memory", "peak_memory", 20_000_000.0),
    ]
    assert budgets.flops_floor == pytest.approx(6_400_000)
    assert budgets.device_limits() == {"peak_memory": 20_000_000.0}
    assert budgets.device_floors() == {}


def test_a_latency_budget_takes_the_lower_bound_from_flops() -> None:
    budgets = Budgets(flops=8_000_000, latency_ms=12.5, min_utilization=0.5, flops_binding=True)
    assert budgets.flops_floor is None
    assert budgets.latency_floor == pytest.approx(6.25)
    assert [constraint.name for constraint in budgets.constraints()] == ["flops", "latency", "latency_utilization"]
    assert budgets.device_limits() == {"latency": 12.5}
    assert budgets.device_floors() == {"latency": pytest.approx(6.25)}


def test_an_inactive_flops_budget_has_no_lower_bound() -> None:
    assert Budgets(flops=10**12, min_utilization=0.8, flops_binding=False).flops_floor is None
    assert Budgets(flops=8_000_000, min_utilization=0.0, flops_binding=True).constraints() == [
        Constraint("flops", "flops", 8_000_000.0)
    ]
    assert Budgets().constraints() == []


def test_parameter_budgets_parse_and_refuse_with_the_accepted_forms() -> None:
    assert parse_params_budget("5M") == 5_000_000
    assert parse_params_budget("500Kparams") == 500_000
    with pytest.raises(UserError, match="accepted forms: 5M, 5Mparams, 500K or 5000000"):
        parse_params_budget("five")


def test_resolve_search_types_the_budgets_and_keeps_its_errors() -> None:
    resolved = resolve_search(SearchConfig(space="micro", budget="8MFLOPs", params="500K", memory="20MB"))
    assert resolved.space.name == "micro"
    assert resolved.budgets == Budgets(
        flops=8_000_000, params=500_000, memory_bytes=20_000_000, min_utilization=0.8, flops_binding=True
    )
    assert [constraint.name for constraint in resolved.constraints] == ["flops", "flops_utilization", "params", "memory"]
    assert set(resolved.device_models()) == {"peak_memory"}
    with pytest.raises(UserError, match=r"^--params budget 10 params is below the smallest subnet of space 'micro'"):
        resolve_search(SearchConfig(space="micro", params="10"))


def test_trial_record_reads_the_stored_attribute_names() -> None:
    trial = create_trial(
        state=TrialState.COMPLETE,
        value=0.42,
        user_attrs={
            "accuracy": 0.42,
            "flops": 7.0e6,
            "params": 4.0e4,
            "latency": 3.5,
            "feasible": True,
            "arch": "micro:x",
            "arch_json": json.dumps({"space": "micro"}),
            "map50": 0.3,
            "constraint:flops": -0.1,
            "constraint:latency": 0.2,
        },
    )
    record = TrialRecord.from_trial(trial)
    assert (record.accuracy, record.flops, record.params, record.latency, record.peak_memory) == (0.42, 7.0e6, 4.0e4, 3.5, None)
    assert record.feasible and record.evaluated
    assert record.arch == "micro:x" and record.arch_dict == {"space": "micro"}
    assert record.identity == record.arch_json
    assert record.metric("map50") == 0.3 and record.cost("latency") == 3.5
    assert record.constraint_values == {"flops": -0.1, "latency": 0.2}
    infeasible = TrialRecord.from_trial(create_trial(state=TrialState.COMPLETE, value=0.0, user_attrs={"feasible": False}))
    assert not infeasible.feasible and not infeasible.evaluated and infeasible.accuracy is None


def _micro_space(budgets: Budgets) -> SupernetSpace:
    space = get_space("micro")
    return SupernetSpace.build(space, space.input_size, 10, budgets, {}, lambda spec: {"accuracy": 0.5})


def test_the_supernet_space_implements_the_protocol(tmp_path: Path) -> None:
    candidates = _micro_space(Budgets())
    assert isinstance(candidates, CandidateSpace)
    spec = get_space("micro").largest()
    assert candidates.propose(FixedTrial(spec_to_params(spec))) == spec
    assert candidates.parameters(spec) == spec_to_params(spec)
    assert candidates.settle(spec) == spec  # no FLOPs budget: nothing moves
    costs = candidates.cost(spec)
    assert list(costs) == ["flops", "params"]
    assert costs["flops"] == FlopsModel(get_space("micro"), None, 10)(spec)
    assert candidates.describe(spec) == {"arch": str(spec), "arch_json": json.dumps(spec.to_dict())}
    assert candidates.score(spec) == {"accuracy": 0.5}
    files = candidates.export(spec, tmp_path / "files", "trial-0", "caption")
    assert [path.name for path in files] == ["trial-0-arch.json", "trial-0-widths.svg"]
    assert json.loads(files[0].read_text()) == spec.to_dict()
    assert "caption" in files[1].read_text()


def test_a_proposal_above_the_budget_is_moved_onto_the_band() -> None:
    space = get_space("micro")
    limits = flops_range(space)
    budget = (limits.smallest + limits.largest) // 2
    candidates = _micro_space(Budgets(flops=budget, min_utilization=0.5, flops_binding=True))
    settled = candidates.settle(candidates.propose(FixedTrial(spec_to_params(space.largest()))))
    assert settled != space.largest()
    assert 0.5 * budget <= candidates.cost(settled)["flops"] <= budget


def test_startup_candidates_are_deterministic_and_within_the_budget() -> None:
    space = get_space("micro")
    budget = flops_range(space).largest // 2
    candidates = _micro_space(Budgets(flops=budget, min_utilization=0.5, flops_binding=True))
    first = candidates.startup_parameters(4, seed=7)
    assert first == candidates.startup_parameters(4, seed=7)
    assert len(first) == 4
    for params in first:
        assert candidates.cost(candidates.propose(FixedTrial(params)))["flops"] <= budget


@dataclass
class WidthSpace:
    """Another kind of space behind the same protocol: one channel count, costed as
    its square and scored by a fixed rule (as a pruning space might be)."""

    name: str = "width"

    def startup_parameters(self, count: int, seed: int) -> list[dict[str, Any]]:
        return [{"channels": 8 * (index + 1)} for index in range(count)]

    def propose(self, trial: optuna.Trial) -> int:
        return trial.suggest_int("channels", 8, 64, step=8)

    def settle(self, candidate: int) -> int:
        return candidate

    def misfit(self, candidate: int) -> float:
        return 0.0

    def parameters(self, candidate: int) -> dict[str, Any]:
        return {"channels": candidate}

    def cost(self, candidate: int) -> dict[str, float]:
        return {"flops": float(candidate * candidate), "params": float(candidate)}

    def score(self, candidate: int) -> dict[str, float]:
        return {"accuracy": candidate / 64}

    def describe(self, candidate: int) -> dict[str, str]:
        return {"arch": f"width:{candidate}", "arch_json": json.dumps({"channels": candidate})}

    def export(self, candidate: int, directory: Path, stem: str, caption: str) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{stem}.txt"
        path.write_text(f"{caption}: {candidate}")
        return [path]


def test_the_objective_reaches_any_space_through_the_protocol(tmp_path: Path) -> None:
    space = WidthSpace()
    assert isinstance(space, CandidateSpace)
    study = optuna.create_study(direction="maximize")
    for params in space.startup_parameters(3, seed=0) + [{"channels": 64}]:
        study.enqueue_trial(params)
    objective = make_objective(space, Budgets(flops=1024).constraints(), ("accuracy",), tmp_path, tmp_path / "artifacts")
    assert isinstance(objective, SearchObjective)
    for _ in range(4):
        trial = study.ask()
        outcome = objective(trial)
        if outcome.values is None:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, outcome.values[0])
    records = [TrialRecord.from_trial(trial) for trial in study.trials]
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    assert [record.arch for record in records] == ["width:8", "width:16", "width:24", "width:64"]
    assert [record.feasible for record in records] == [True, True, True, False]
    assert [record.accuracy for record in records] == [0.125, 0.25, 0.375, None]
    assert records[3].constraint_values == {"flops": pytest.approx((64 * 64 - 1024) / 1024)}
    assert sorted(path.name for path in (tmp_path / "trial-files").iterdir()) == ["trial-0.txt", "trial-1.txt", "trial-2.txt"]


def test_search_modules_name_no_task() -> None:
    """The search reaches tasks only through the Task contract and the task table."""
    allowed = {"nas_search.tasks", "nas_search.tasks.base"}
    for path in SEARCH_PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nas_search.tasks"):
                if path.name == "parameters.py":  # parameter names of detection spaces (another change)
                    continue
                assert node.module in allowed, f"{path.name} imports {node.module}"


@pytest.mark.parametrize("sampler_name", ["tpe", "nsga2", "random"])
def test_the_projecting_sampler_records_the_settled_candidate_as_the_trials_parameters(
    sampler_name: str, tmp_path: Path
) -> None:
    from nas_search.search.projecting_sampler import ProjectingSampler
    from nas_search.search.samplers import make_sampler
    from nas_search.search.supernet_space import startup_specs

    space = get_space("micro")
    limits = flops_range(space)
    budget = (limits.smallest + limits.largest) // 3
    candidates = _micro_space(Budgets(flops=budget, min_utilization=0.8, flops_binding=True))
    sampler = ProjectingSampler(make_sampler(sampler_name, seed=0, constrained=True, multi_objective=False), candidates)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for spec in startup_specs(candidates, 10, seed=0):  # what TPE starts from in a search
        study.enqueue_trial(spec_to_params(spec))
    objective = SearchObjective(
        candidates, Budgets(flops=budget, min_utilization=0.8, flops_binding=True).constraints(), proposals=sampler.proposal_of
    )
    for number in range(30):
        trial = study.ask()
        outcome = objective(trial)
        # the recorded parameters are exactly those of the evaluated candidate, inside the band
        assert trial.params == spec_to_params(outcome.candidate)
        assert 0.8 * budget <= outcome.costs["flops"] <= budget, (number, outcome.costs["flops"], budget)
        assert outcome.feasible and outcome.values is not None
        study.tell(trial, outcome.costs["flops"] / budget)
    proposals = [trial.user_attrs.get("proposed_arch") for trial in study.trials]
    assert proposals[:10] == [None] * 10  # the enqueued starting candidates are never moved
    moved = [proposal for proposal in proposals if proposal is not None]
    assert moved  # the wrapped sampler's proposals did leave the band, were moved, and are recorded
    assert all(proposal.startswith("micro:") for proposal in moved)
    for trial in study.trials:  # a moved proposal was outside the band, and its FLOPs say so
        if "proposed_arch" in trial.user_attrs:
            assert not 0.8 * budget <= trial.user_attrs["proposed_flops"] <= budget


def test_extra_proposal_draws_stop_where_the_band_is_never_hit() -> None:
    from nas_search.search.projecting_sampler import DRAW_TRIALS, ProjectingSampler

    class NeverInPlace(WidthSpace):
        """Every proposal needs settling; counts how often a proposal is rated."""

        rated = 0

        def misfit(self, candidate: int) -> float:
            self.rated += 1
            return 1.0

    space = NeverInPlace()
    sampler = ProjectingSampler(optuna.samplers.RandomSampler(seed=0), space, draws=8)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rated = []
    for _ in range(DRAW_TRIALS + 3):
        before = space.rated
        trial = study.ask()
        study.tell(trial, space.score(space.propose(trial))["accuracy"])
        rated.append(space.rated - before)
    assert rated == [8] * DRAW_TRIALS + [1] * 3
