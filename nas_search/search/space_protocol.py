"""The one way the search reaches a space: :class:`CandidateSpace`.

The search (planning trials, the objective, the queue) knows nothing about how a
candidate is built: a supernet space proposes subnets of a trained supernet
(:mod:`nas_search.search.supernet_space`); another kind of space, e.g. channel pruning of
a trained network, implements the same protocol and needs no branch in ``search/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import optuna

Candidate = TypeVar("Candidate")


@runtime_checkable
class CandidateSpace(Protocol[Candidate]):
    """A space of candidates the search can suggest, cost, score, describe and export.

    Lifecycle, in the style of Optuna's ``BaseSampler``:

    1. The object is built once per process (``run`` or a ``worker``), after whatever the
       space scores with is loaded (for a supernet space: the trained supernet and the
       search's data). Building it must not touch the study.
    2. :meth:`startup_parameters` is called once, when a process plans trials into the
       study (``run``; never a worker). It returns Optuna parameter dictionaries that are
       enqueued as fixed trials. It must be deterministic in ``(count, seed)``: a rerun
       with the same seed plans the same trials.
    3. Per trial, in the sampler (:class:`~nas_search.search.projecting_sampler.ProjectingSampler`):
       :meth:`propose` decodes the wrapped sampler's proposal, :meth:`settle` moves it
       (e.g. onto the budget band) and :meth:`parameters` gives the settled candidate's
       parameters, which the trial then records. So a trial's parameters are always those
       of the candidate that is costed, scored and exported.
    4. Per trial, in the objective, in this order: :meth:`propose` once (it decodes the
       recorded parameters); :meth:`describe` and :meth:`cost` of its candidate; then, only
       when every constraint holds, :meth:`score` and :meth:`export`. An infeasible
       candidate is never scored.

    What may be mutated:

    - :meth:`propose` may call the trial's ``suggest_*`` methods, and nothing else on the
      trial (the search records every user attribute itself; the trial may be a
      :class:`~nas_search.search.projecting_sampler.ProposalTrial`). Given the same
      suggested parameters it must return the same candidate: samplers and enqueued trials
      rely on parameters alone identifying a candidate.
    - :meth:`settle`, :meth:`misfit` and :meth:`parameters` are pure and deterministic, and
      ``propose(trial answering parameters(c)) == c`` for every settled ``c``.
    - :meth:`cost`, :meth:`describe` are pure and deterministic: no trial, no RNG, no
      global state. Every cost a constraint or an objective names must be in
      :meth:`cost`'s result.
    - :meth:`score` may use the space's own state (weights, data loaders) but must leave
      it as it found it, and must be deterministic for a given candidate (seeds are
      fixed when the object is built), so that a rerun scores a candidate the same.
    - :meth:`export` writes new files into the given folder only.

    Methods run in the process that runs the trial; several workers each build their own
    object, so nothing is shared between them but the study.
    """

    @property
    def name(self) -> str:
        """The space's name (what studies record as ``space``)."""
        ...

    def startup_parameters(self, count: int, seed: int) -> list[dict[str, Any]]:
        """Up to ``count`` parameter dictionaries of budget-aware starting candidates."""
        ...

    def propose(self, trial: optuna.Trial) -> Candidate:
        """The candidate of ``trial``'s parameters (from its ``suggest_*`` calls)."""
        ...

    def settle(self, candidate: Candidate) -> Candidate:
        """The candidate a proposal becomes before it is recorded (e.g. moved onto the
        FLOPs band of the budget); ``candidate`` itself when nothing needs to move."""
        ...

    def misfit(self, candidate: Candidate) -> float:
        """How far ``candidate`` is from where :meth:`settle` puts it: 0 when it stays as
        it is, larger the further it must move (cheap: no settling)."""
        ...

    def parameters(self, candidate: Candidate) -> dict[str, Any]:
        """The Optuna parameters that :meth:`propose` decodes into ``candidate``."""
        ...

    def cost(self, candidate: Candidate) -> dict[str, float]:
        """Every cost of ``candidate`` by name (``flops``, ``params``, ...)."""
        ...

    def score(self, candidate: Candidate) -> dict[str, float]:
        """Metrics of ``candidate``; ``accuracy`` is the task's primary score."""
        ...

    def describe(self, candidate: Candidate) -> dict[str, str]:
        """Text forms of ``candidate`` recorded with the trial: ``arch`` (one line) and
        ``arch_json`` (what export and finalist training rebuild it from)."""
        ...

    def export(self, candidate: Candidate, directory: Path, stem: str, caption: str) -> list[Path]:
        """Write review files of ``candidate`` into ``directory`` (names starting with
        ``stem``; ``caption`` titles charts) and return their paths."""
        ...


__all__ = ["Candidate", "CandidateSpace"]
