"""A typed view of what one trial recorded.

The search stores each trial's results as Optuna user attributes (optuna-dashboard and
older studies read them under these names, so they never change). :class:`TrialRecord`
reads them once, by name, in this module only; the rest of the search reads properties.

>>> from optuna.trial import create_trial
>>> trial = create_trial(value=0.5, user_attrs={"accuracy": 0.5, "flops": 7e6, "params": 4e4,
...                                            "feasible": True, "arch": "a"})
>>> record = TrialRecord.from_trial(trial)
>>> (record.score, record.flops, record.feasible, record.latency)
(0.5, 7000000.0, True, None)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from nas_search.search.samplers import CONSTRAINT_ATTRIBUTE_PREFIX, FEASIBLE_ATTRIBUTE

#: User attribute names a trial records (stored names: never rename them).
ACCURACY_ATTRIBUTE = "accuracy"
FLOPS_ATTRIBUTE = "flops"
PARAMS_ATTRIBUTE = "params"
LATENCY_ATTRIBUTE = "latency"
PEAK_MEMORY_ATTRIBUTE = "peak_memory"
ARCH_ATTRIBUTE = "arch"
ARCH_JSON_ATTRIBUTE = "arch_json"
PROPOSED_ARCH_ATTRIBUTE = "proposed_arch"
ERROR_ATTRIBUTE = "error"


@dataclass(frozen=True)
class TrialRecord:
    """One trial's recorded results, read from its user attributes.

    Attributes:
        number: the trial's number in its study.
        attributes: the trial's user attributes as stored.
    """

    number: int
    attributes: Mapping[str, Any]

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        """The record of a finished (or running) trial."""
        return cls(trial.number, trial.user_attrs)

    @property
    def accuracy(self) -> float | None:
        """The task's primary score with inherited weights (top-1 or mAP@0.5); None when
        the trial was not evaluated (infeasible)."""
        return self.attributes.get(ACCURACY_ATTRIBUTE)

    @property
    def score(self) -> float:
        """The primary score of an evaluated trial (``KeyError`` when it was not evaluated)."""
        return float(self.attributes[ACCURACY_ATTRIBUTE])

    @property
    def flops(self) -> float:
        """FLOPs at the deployment size (1 multiply-add = 1 FLOP); every trial that was
        costed records them (``KeyError`` otherwise)."""
        return self.attributes[FLOPS_ATTRIBUTE]

    @property
    def params(self) -> float:
        """Parameter count (recorded with the FLOPs)."""
        return self.attributes[PARAMS_ATTRIBUTE]

    @property
    def latency(self) -> float | None:
        """Predicted latency in ms on the study's device; None without a device."""
        return self.attributes.get(LATENCY_ATTRIBUTE)

    @property
    def peak_memory(self) -> float | None:
        """Predicted peak activation memory in bytes; None without a memory budget."""
        return self.attributes.get(PEAK_MEMORY_ATTRIBUTE)

    @property
    def feasible(self) -> bool:
        """Whether every constraint held."""
        return bool(self.attributes.get(FEASIBLE_ATTRIBUTE))

    @property
    def evaluated(self) -> bool:
        """Feasible and scored: a candidate for the summary."""
        return self.feasible and self.accuracy is not None

    @property
    def arch(self) -> str | None:
        """The architecture in its one-line form."""
        return self.attributes.get(ARCH_ATTRIBUTE)

    @property
    def arch_json(self) -> str:
        """The architecture as JSON text (``ArchSpec.to_dict``); ``KeyError`` for a trial
        that never got as far as recording it."""
        return self.attributes[ARCH_JSON_ATTRIBUTE]

    @property
    def arch_dict(self) -> dict[str, Any]:
        """The architecture as a plain dictionary."""
        return json.loads(self.attributes[ARCH_JSON_ATTRIBUTE])

    @property
    def identity(self) -> str:
        """What makes two trials the same architecture (the JSON form, else the line)."""
        return self.attributes.get(ARCH_JSON_ATTRIBUTE) or self.attributes[ARCH_ATTRIBUTE]

    @property
    def error(self) -> str | None:
        """Why a failed trial failed."""
        return self.attributes.get(ERROR_ATTRIBUTE)

    def cost(self, name: str) -> float | None:
        """A recorded cost by its name (``flops``, ``params``, ``latency``, ``peak_memory``)."""
        return self.attributes.get(name)

    def metric(self, name: str) -> float | None:
        """A recorded score metric by name (``map50``, ``map`` ...)."""
        return self.attributes.get(name)

    @property
    def constraint_values(self) -> dict[str, float]:
        """Each constraint's relative violation (``<= 0``: met), by constraint name."""
        prefix = CONSTRAINT_ATTRIBUTE_PREFIX
        return {name[len(prefix) :]: value for name, value in self.attributes.items() if name.startswith(prefix)}


__all__ = ["TrialRecord"]
