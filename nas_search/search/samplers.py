"""Registry of the Optuna samplers that nas-search offers, and how trials report constraints.

Every sampler is built by name through :func:`make_sampler`; :data:`SAMPLERS` is the
registry (name -> :class:`SamplerEntry`).  Constraints follow Optuna 5: the objective calls
``trial.set_constraint(name, value)`` for each constraint (``value <= 0`` is feasible) and the
constraint-aware samplers (TPE, NSGA-II, GP) read them from the finished trials by themselves;
no ``constraints_func`` is passed (deprecated since Optuna 5.0).  Because optuna-dashboard
0.21 ignores constraints recorded that way, :func:`record_constraints` also writes them, and the
overall ``feasible`` flag, as user attributes.

Settings were chosen on the tabular NAS-Bench-201 space (six categorical parameters with
five choices, a latency budget at the median); see ``benchmarks/search_nb201.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import optuna

from nas_search.errors import UserError

#: Prefix of the user attribute that mirrors each constraint value (``constraint:latency_ms``).
CONSTRAINT_ATTRIBUTE_PREFIX = "constraint:"
#: User attribute that says whether every constraint of the trial holds.
FEASIBLE_ATTRIBUTE = "feasible"


@dataclass(frozen=True)
class SamplerOptions:
    """What a factory may tailor a sampler to."""

    seed: int | None
    constrained: bool
    multi_objective: bool


@dataclass(frozen=True)
class SamplerEntry:
    """One registered sampler.

    Attributes:
        factory: builds the sampler from :class:`SamplerOptions`.
        summary: one line for ``--help`` and error messages.
        adaptive: whether it learns from finished trials (random and QMC do not).
        uses_constraints: whether it steers away from infeasible trials.
        multi_objective: whether it supports studies with several objectives.
        proposal_draws: proposals drawn per trial when it runs inside the budget band's
            projecting wrapper (:mod:`nas_search.search.projecting_sampler`); 1 for a
            sampler whose every draw is expensive (GP refits its model per draw).
    """

    factory: Callable[[SamplerOptions], optuna.samplers.BaseSampler]
    summary: str
    adaptive: bool
    uses_constraints: bool
    multi_objective: bool
    proposal_draws: int = 8


def _tpe(options: SamplerOptions) -> optuna.samplers.BaseSampler:
    # Multivariate TPE models the joint density of the choices, which matters in NAS spaces
    # where choices interact: on NAS-Bench-201 it needed far fewer queries than independent
    # TPE, and more startup trials or EI candidates did not help (benchmarks/RESULTS.md).
    # Optuna enables multivariate for one objective only, and so do we.
    # Constrained TPE is automatic once trials carry constraints.
    return optuna.samplers.TPESampler(seed=options.seed, multivariate=not options.multi_objective, n_startup_trials=10)


def _nsga2(options: SamplerOptions) -> optuna.samplers.BaseSampler:
    # Optuna's default population of 50.  On NAS-Bench-201 (median-latency budget) a
    # population of 20 converged too early and 100 started too slowly; a higher mutation
    # rate did not help (benchmarks/RESULTS.md).
    # Constrained domination is automatic once trials carry constraints.
    return optuna.samplers.NSGAIISampler(seed=options.seed, population_size=50)


def _random(options: SamplerOptions) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=options.seed)


def _qmc(options: SamplerOptions) -> optuna.samplers.BaseSampler:
    # Scrambling makes the seed matter; categorical parameters take one Sobol coordinate each.
    return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=options.seed, warn_asynchronous_seeding=False)


def _gp(options: SamplerOptions) -> optuna.samplers.BaseSampler:
    # Hamming kernel on categorical parameters; constrained (log-CEI) once trials carry
    # constraints.  Each trial refits the GP, so it is much slower per trial than TPE.
    return optuna.samplers.GPSampler(seed=options.seed, deterministic_objective=True)


#: Sampler name -> entry.  ``random`` is the anchor every benchmark compares against.
SAMPLERS: dict[str, SamplerEntry] = {
    "tpe": SamplerEntry(_tpe, "multivariate tree-structured Parzen estimator (constraint-aware)", True, True, True),
    "nsga2": SamplerEntry(_nsga2, "NSGA-II evolution, population 50 (constraint-aware)", True, True, True),
    "random": SamplerEntry(_random, "uniform random search (the anchor)", False, False, True),
    "qmc": SamplerEntry(_qmc, "scrambled Sobol quasi-random search (experimental in Optuna)", False, False, True),
    "gp": SamplerEntry(
        _gp, "Gaussian-process Bayesian optimisation (constraint-aware, slow per trial)", True, True, True, proposal_draws=1
    ),
}


def sampler_names() -> list[str]:
    """Names accepted by :func:`make_sampler`, in registry order."""
    return list(SAMPLERS)


def make_sampler(name: str, *, seed: int | None, constrained: bool, multi_objective: bool) -> optuna.samplers.BaseSampler:
    """Build the sampler registered as ``name``.

    Args:
        name: one of :func:`sampler_names`.
        seed: seed for the sampler's random state (``None``: unseeded).
        constrained: whether trials will carry constraints (``trial.set_constraint``).
        multi_objective: whether the study has more than one objective.

    Raises:
        UserError: for an unknown name, for a sampler that cannot handle several objectives,
            or for an adaptive sampler that would ignore the constraints.
    """
    entry = SAMPLERS.get(name)
    if entry is None:
        raise UserError(f"unknown sampler {name!r}; accepted: {', '.join(SAMPLERS)}")
    if multi_objective and not entry.multi_objective:
        accepted = [other for other, candidate in SAMPLERS.items() if candidate.multi_objective]
        raise UserError(f"sampler {name!r} handles one objective only; for several use: {', '.join(accepted)}")
    if constrained and entry.adaptive and not entry.uses_constraints:
        accepted = [other for other, candidate in SAMPLERS.items() if candidate.uses_constraints]
        raise UserError(f"sampler {name!r} ignores constraints; constraint-aware samplers: {', '.join(accepted)}")
    options = SamplerOptions(seed=seed, constrained=constrained, multi_objective=multi_objective)
    with warnings.catch_warnings():
        # QMC and GP options are flagged experimental by Optuna; picking them by name is the opt-in.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return entry.factory(options)


def record_constraints(trial: optuna.Trial, constraints: Mapping[str, float]) -> bool:
    """Set each constraint on a live trial and mirror it in user attributes.

    For every ``name -> value`` (``value <= 0`` means satisfied) this calls
    ``trial.set_constraint(name, value)`` and sets the user attribute
    ``constraint:<name>``; it also sets ``feasible`` (all satisfied).  Call it before the
    trial is told its value.  Returns whether the trial is feasible.
    """
    for constraint_name, value in constraints.items():
        trial.set_constraint(constraint_name, float(value))
        trial.set_user_attr(f"{CONSTRAINT_ATTRIBUTE_PREFIX}{constraint_name}", float(value))
    feasible = all(float(value) <= 0.0 for value in constraints.values())
    trial.set_user_attr(FEASIBLE_ATTRIBUTE, feasible)
    return feasible
