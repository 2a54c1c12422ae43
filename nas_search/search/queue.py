"""The queue of planned trials: planning them (the space's starting candidates first),
working through them in this process, and ``nas-search worker``, which joins an existing
study and works through the same queue (any number of workers can share a PostgreSQL
study)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas_search.config import config_from_dict
from nas_search.errors import UserError
from nas_search.search.config import SearchConfig
from nas_search.search.finalists import rerank_finalists
from nas_search.search.objective import SearchObjective, make_objective
from nas_search.search.projecting_sampler import make_search_sampler
from nas_search.search.provisioning import build_candidate_space, build_evaluator
from nas_search.search.records import ERROR_ATTRIBUTE
from nas_search.search.report import feasible_fraction, save_review
from nas_search.search.resolve import adopt_scoring, resolve_search
from nas_search.search.space_protocol import CandidateSpace
from nas_search.search.study import (
    claim_waiting_trial,
    fail_stale,
    heartbeat,
    interrupt_watch,
    load_existing_study,
    open_storage,
    planned_trial_count,
    raise_if_interrupted,
    requeue,
)
from nas_search.units import format_flops

logger = logging.getLogger("nas_search")


def plan_trials(study: optuna.Study, config: SearchConfig, space: CandidateSpace) -> int:
    """Enqueue trials until the study plans ``config.trials``; the first
    ``startup_trials`` are the space's budget-aware starting candidates. Returns how
    many were added."""
    missing = config.trials - planned_trial_count(study)
    if missing <= 0:
        return 0
    already = planned_trial_count(study)
    startup = max(0, min(config.startup_trials, config.trials) - already)
    fixed: list[dict] = []
    if startup:
        fixed = space.startup_parameters(min(startup, missing), config.seed + already)
    for index in range(missing):
        study.enqueue_trial(fixed[index] if index < len(fixed) else {}, skip_if_exists=False)
    return missing


def work_through_queue(
    study: optuna.Study,
    objective: SearchObjective,
    progress: bool = True,
    label: str = "search",
    *,
    wait_for_others: bool = False,
) -> int:
    """Claim and run WAITING trials until none is left. Returns how many this process ran.
    On Ctrl-C the running trial is put back in the queue, so the study stays consistent.

    With ``wait_for_others`` (workers), an empty queue while other processes still hold
    RUNNING trials is not the end: the worker waits for them (failing a trial whose worker
    stopped sending heartbeats, which re-queues it) and runs what comes back, so a dead
    worker's trial is always retried by a live one."""
    from nas_search.progress import progress_bar

    remaining = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    bar = progress_bar(total=remaining, description=label, unit="trial", enabled=progress)
    try:
        with interrupt_watch() as interrupted:
            return _run_queued_trials(study, objective, bar, interrupted, wait_for_others)
    finally:
        bar.close()


def _others_finished_or_requeued(study: optuna.Study, interrupted: Any) -> bool:
    """Wait while other processes hold RUNNING trials and none is WAITING, failing stale
    ones (Optuna's retry callback re-queues them). True when a trial came back to the
    queue; False when nothing is running any more, or the storage records no heartbeats
    (a dead worker's trial could then never be told apart from a slow one)."""
    storage = study._storage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if not interval:
        return False
    while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        raise_if_interrupted(interrupted)
        fail_stale(study)
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return True
        time.sleep(min(float(interval), 1.0))
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _run_queued_trials(
    study: optuna.Study, objective: SearchObjective, bar: Any, interrupted: Any, wait_for_others: bool = False
) -> int:
    """The loop of :func:`work_through_queue`; checks ``interrupted`` between trials."""
    count = 0
    while True:
        raise_if_interrupted(interrupted)  # a Ctrl-C swallowed inside a finaliser stops here
        fail_stale(study)
        trial = claim_waiting_trial(study)
        if trial is None:
            if wait_for_others and _others_finished_or_requeued(study, interrupted):
                continue
            break
        try:
            with heartbeat(study, trial):
                outcome = objective(trial)
        except (KeyboardInterrupt, SystemExit):
            requeue(study, trial)
            raise
        except UserError:
            requeue(study, trial)
            raise
        except Exception as error:  # a broken trial must not kill the search: record it
            logger.exception("trial %d failed", trial.number)
            trial.set_user_attr(ERROR_ATTRIBUTE, f"{type(error).__name__}: {error}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            continue
        try:
            if outcome.values is None:  # infeasible: recorded, never scored
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, outcome.values if len(outcome.values) > 1 else outcome.values[0])
        except KeyboardInterrupt:  # between the result and its record: re-queue unless recorded
            requeue(study, trial)
            raise
        count += 1
        bar.update(1)
        score = outcome.accuracy if outcome.accuracy is not None else float("nan")  # top-1 or mAP@0.5
        bar.set_postfix(feasible=outcome.feasible, score=f"{score:.3f}", flops=format_flops(outcome.costs["flops"]))
    return count


def run_worker(storage_url: str, study_name: str, progress: bool = True, finish: bool = True) -> dict[str, Any]:
    """Join an existing study and run its queued trials until none is left."""
    from nas_search.training.checkpoint import checkpoint_checksum

    if storage_url.startswith("sqlite:///") and not Path(storage_url[len("sqlite:///") :]).is_file():
        raise UserError(
            f"--storage {storage_url}: no study database there; accepted: the storage of a study made by "
            "`nas-search run --plan-only`"
        )  # opening it would create an empty database file
    storage = open_storage(storage_url)
    study = load_existing_study(study_name, storage)
    saved = study.user_attrs.get("config")
    if not saved:
        raise UserError(f"study {study_name!r} was not created by nas-search (no config attribute)")
    config = config_from_dict(SearchConfig, saved, source=f"study {study_name} config")
    config = replace(config, storage=storage_url, progress=progress)
    resolved = resolve_search(config)
    checkpoint = Path(study.user_attrs["supernet"])
    if not checkpoint.exists() or checkpoint_checksum(checkpoint) != study.user_attrs.get("supernet_checksum"):
        raise UserError(f"supernet checkpoint {checkpoint} of study {study_name!r} is missing or changed on this machine")
    evaluation = build_evaluator(checkpoint, config)
    resolved = adopt_scoring(resolved, evaluation, checkpoint)
    space = build_candidate_space(resolved, evaluation)
    sampler = make_search_sampler(config, space, seed=None)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    artifact_dir = resolved.study_dir / "artifacts"
    objective = make_objective(
        space, resolved.constraints, resolved.config.objectives, resolved.study_dir, artifact_dir, proposals=sampler.proposal_of
    )
    ran = work_through_queue(study, objective, progress, label=f"worker {study_name}", wait_for_others=True)
    result = {"study": study_name, "storage": storage_url, "ran": ran, "feasible_fraction": feasible_fraction(study)}
    if finish and not study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
        rerank_finalists(study, resolved.finalists, resolved.config, checkpoint, progress)
        save_review(study, resolved.storage_url, artifact_dir, resolved.study_dir)
    return result


__all__ = ["plan_trials", "run_worker", "work_through_queue"]
