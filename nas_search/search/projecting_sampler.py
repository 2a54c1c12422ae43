"""A sampler wrapper that moves every proposal onto the budget band *before* the trial
records it, so that a trial's parameters are those of the network that is costed, scored
and exported.

Any Optuna sampler proposes parameters freely; a budget admits only a thin band of them
(``[min_utilization, 1] x budget`` FLOPs). :class:`ProjectingSampler` asks the wrapped
sampler for a complete proposal without recording anything (its relative parameters,
and one independent draw per remaining parameter, through :class:`ProposalTrial`), lets
the candidate space settle it (:meth:`CandidateSpace.settle`, e.g. onto the FLOPs band),
and returns the settled candidate's parameters as the trial's relative parameters. It
draws up to :data:`PROPOSAL_DRAWS` proposals and settles the first that is already in
place (else the closest, by :meth:`CandidateSpace.misfit`), which constrains the wrapped
sampler toward the band without changing how it learns. The
trial then suggests exactly those values, the study records them, and the wrapped
sampler learns from the networks that were really evaluated.

The proposal, when the space moved it, is kept per trial number (:meth:`proposal_of`) so
that the objective can record it as a user attribute for review.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from nas_search.search.config import SearchConfig
from nas_search.search.records import PROPOSED_ARCH_ATTRIBUTE
from nas_search.search.samplers import SAMPLERS, make_sampler
from nas_search.search.space_protocol import CandidateSpace

#: ``(name, distribution) -> value``: how a :class:`ProposalTrial` obtains each value.
Chooser = Callable[[str, BaseDistribution], Any]


class ProposalTrial:
    """The ``suggest_*`` API of an Optuna trial that records nothing: each value comes from
    ``choose`` and every distribution asked for is kept in :attr:`distributions`.

    Spaces decode candidates through it exactly as through a live trial, so the same
    code turns parameters into a candidate in the sampler and in the objective."""

    def __init__(self, choose: Chooser) -> None:
        self.choose = choose
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, BaseDistribution] = {}

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        if name not in self.params:
            value = distributions_single_value(distribution)
            self.params[name] = value if value is not None else self.choose(name, distribution)
            self.distributions[name] = distribution
        return self.params[name]

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        """A value among ``choices``."""
        return self._suggest(name, CategoricalDistribution(list(choices)))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        """An integer in ``[low, high]``."""
        return int(self._suggest(name, IntDistribution(low, high, step=step, log=log)))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        """A float in ``[low, high]``."""
        return float(self._suggest(name, FloatDistribution(low, high, step=step, log=log)))


def distributions_single_value(distribution: BaseDistribution) -> Any:
    """The only value of a one-value distribution (Optuna never samples those), else None."""
    if not distribution.single():
        return None
    return optuna.distributions._get_single_value(distribution)


def as_trial(trial: ProposalTrial) -> optuna.Trial:
    """``trial`` typed as the Optuna trial whose ``suggest_*`` API it implements (spaces
    only call that API, see :class:`~nas_search.search.space_protocol.CandidateSpace`)."""
    return cast(optuna.Trial, trial)


def replay(space: CandidateSpace, params: dict[str, Any]) -> ProposalTrial:
    """A :class:`ProposalTrial` that decoded ``params`` through ``space.propose``; its
    ``distributions`` are those of every parameter the candidate uses."""

    def fixed(name: str, distribution: BaseDistribution) -> Any:
        if name not in params:
            raise KeyError(f"parameter {name!r} is missing from the settled candidate's parameters")
        return params[name]

    trial = ProposalTrial(fixed)
    space.propose(as_trial(trial))
    return trial


class _FilledBySampling(dict[str, BaseDistribution]):
    """The relative search space handed to the trial: empty when inferred, then filled by
    :meth:`ProjectingSampler.sample_relative` with the distributions of the parameters it
    returns (Optuna keeps this very object as ``trial.relative_search_space`` and checks
    every relative parameter against it)."""


#: Proposals drawn per trial by default (``SamplerEntry.proposal_draws`` per sampler): the
#: first one that needs no settling is kept, else the one closest to where the space
#: settles it. More draws make the wrapped sampler's own proposals land on the band more
#: often, at the cost of sampling time.
PROPOSAL_DRAWS = 8

#: Trials whose draws all missed the band after which, with no hit at all, extra draws stop.
DRAW_TRIALS = 3


class ProjectingSampler(BaseSampler):
    """Wraps ``sampler``; every trial's parameters are a proposal settled by ``space``.

    Trials with fixed parameters (enqueued starting candidates) are left alone: Optuna
    uses their fixed values and never asks for relative ones.
    """

    def __init__(self, sampler: BaseSampler, space: CandidateSpace, draws: int = PROPOSAL_DRAWS) -> None:
        self.sampler = sampler
        self.space = space
        self.draws = max(1, draws)
        self._drawn_trials = 0
        self._hits = 0
        self._proposals: dict[int, dict[str, Any]] = {}

    def __str__(self) -> str:
        return f"{type(self).__name__}({self.sampler})"

    def proposal_of(self, trial_number: int) -> dict[str, Any] | None:
        """What the wrapped sampler proposed for trial ``trial_number``, when the space moved
        it: ``proposed_arch`` (its one-line form) and ``proposed_<cost>`` for each of its
        costs (``proposed_flops`` ...), as user attributes to record; None when the trial
        records its proposal unchanged (or it was not proposed here)."""
        return self._proposals.pop(trial_number, None)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return _FilledBySampling()

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        proposal = self._closest_proposal(study, trial)
        settled = self.space.settle(proposal)
        decoded = replay(self.space, self.space.parameters(settled))
        if settled != proposal:
            self._proposals[trial.number] = {
                PROPOSED_ARCH_ATTRIBUTE: self.space.describe(proposal)["arch"],
                **{f"proposed_{name}": value for name, value in self.space.cost(proposal).items()},
            }
        search_space.update(decoded.distributions)
        return dict(decoded.params)

    def _closest_proposal(self, study: optuna.Study, trial: FrozenTrial) -> Any:
        """Up to :attr:`draws` proposals of the wrapped sampler; the first that needs no
        settling, else the one the space rates closest (:meth:`CandidateSpace.misfit`).

        Extra draws stop (one draw per trial from then on) when the first
        :data:`DRAW_TRIALS` trials that drew several found no proposal in place: where
        the sampler's proposals never land on the band (the demo's 4.5 GFLOPs band of
        ``mobile``), they only cost time. The rule counts trials, not seconds, so a
        seeded run is repeatable."""
        hopeless = self._drawn_trials >= DRAW_TRIALS and self._hits == 0
        draws = 1 if hopeless else self.draws
        best, best_misfit = None, float("inf")
        for _ in range(draws):
            proposal = self.space.propose(as_trial(ProposalTrial(self._chooser(study, trial))))
            misfit = self.space.misfit(proposal)
            if misfit < best_misfit:
                best, best_misfit = proposal, misfit
            if misfit <= 0:
                break
        if draws > 1:
            self._drawn_trials += 1
            self._hits += best_misfit <= 0
        return best

    def _chooser(self, study: optuna.Study, trial: FrozenTrial) -> Chooser:
        """Values of one proposal: the wrapped sampler's relative parameters, and one
        independent draw for each other parameter."""
        inner_space = self.sampler.infer_relative_search_space(study, trial)
        inner_params = self.sampler.sample_relative(study, trial, inner_space) if inner_space else {}

        def choose(name: str, distribution: BaseDistribution) -> Any:
            if name in inner_params and name in inner_space:
                value = inner_params[name]
                if distribution._contains(distribution.to_internal_repr(value)):
                    return value
            return self.sampler.sample_independent(study, trial, name, distribution)

        return choose

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


def make_search_sampler(config: SearchConfig, space: CandidateSpace, seed: int | None) -> ProjectingSampler:
    """The search's sampler: ``config.sampler`` (constraint-aware, multi-objective when the
    study has several objectives) wrapped so that every trial records the settled
    candidate of ``space``."""
    sampler = make_sampler(config.sampler, seed=seed, constrained=True, multi_objective=len(config.objectives) > 1)
    return ProjectingSampler(sampler, space, draws=SAMPLERS[config.sampler].proposal_draws)


__all__ = ["ProjectingSampler", "ProposalTrial", "make_search_sampler", "replay"]
