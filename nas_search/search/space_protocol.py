"""The one way the search reaches a space: :class:`CandidateSpace`.

The search (planning trials, the objective, the queue) knows nothing about how a
candidate is built: a supernet space proposes subnets of a trained supernet
(:mod:`nas_search.search.supernet_space`); another kind of space, e.g. channel pruning of
a trained network, implements the same protocol and needs no branch in ``search/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import optuna

Candidate = TypeVar("Candidate")


@dataclass(frozen=True)
class Suggestion(Generic[Candidate]):
    """What :meth:`CandidateSpace.suggest` returns.

    Attributes:
        candidate: the candidate the trial costs, scores and records.
        proposal: the sampler's own proposal in words when the space moved it (e.g. onto
            the budget band) before it became ``candidate``; None when it is unchanged.
    """

    candidate: Candidate
    proposal: str | None = None


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
    3. Per trial, in this order: :meth:`suggest` once; :meth:`describe` and :meth:`cost`
       of its candidate; then, only when every constraint holds, :meth:`score` and
       :meth:`export`. An infeasible candidate is never scored.

    What may be mutated:

    - :meth:`suggest` may call the trial's ``suggest_*`` methods, and nothing else on the
      trial (the search records every user attribute itself). Given the same suggested
      parameters it must return the same candidate: samplers and enqueued trials rely on
      parameters alone identifying a candidate.
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

    def suggest(self, trial: optuna.Trial) -> Suggestion[Candidate]:
        """The candidate of ``trial`` (from its ``suggest_*`` calls)."""
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


__all__ = ["Candidate", "CandidateSpace", "Suggestion"]
