"""How trials are ranked: which trials count, the inherited-weight ranking and the
deployment-cost ranking. Shared by the report and the finalists' re-ranking."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas_search.search.records import TrialRecord


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials that met every constraint and were evaluated."""
    return [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if TrialRecord.from_trial(trial).evaluated
    ]


def proxy_rank(trial: FrozenTrial) -> tuple[float, float]:
    """Sort key of the inherited-weight ranking: higher score first, then fewer FLOPs."""
    record = TrialRecord.from_trial(trial)
    return (-record.score, record.flops)


def cost_rank(trial: FrozenTrial) -> tuple[float, float]:
    """Sort key of deployment cost: lower measured or predicted latency first (when the
    study has a device), then fewer FLOPs."""
    record = TrialRecord.from_trial(trial)
    latency = record.latency
    return (0.0 if latency is None else latency, record.flops)


__all__ = ["cost_rank", "feasible_trials", "proxy_rank"]
