"""The main job: ``nas-search run``.

``run_search`` trains (or loads) the supernet, creates the study once with its planned
trials, works through them, and writes the review material (study note, trade-off chart,
per-trial artifacts) and a summary. The parts live in their own modules: option checks
and budgets (:mod:`.resolve`), the study's identity (:mod:`.identity`), the supernet
(:mod:`.provisioning`), the queue and ``nas-search worker`` (:mod:`.queue`) and the
review material (:mod:`.report`).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import optuna

from nas_search.errors import UserError
from nas_search.search.config import OBJECTIVE_DIRECTIONS, SearchConfig, metric_names
from nas_search.search.finalists import rerank_finalists
from nas_search.search.identity import existing_study, study_attributes
from nas_search.search.objective import make_objective
from nas_search.search.projecting_sampler import ProjectingSampler, make_search_sampler
from nas_search.search.provisioning import (
    build_candidate_space,
    build_evaluator,
    check_study_supernet,
    ensure_supernet,
    load_given_supernet,
)
from nas_search.search.queue import plan_trials, run_worker, work_through_queue
from nas_search.search.report import format_table, save_review
from nas_search.search.resolve import ResolvedSearch, absolute_path, adopt_scoring, resolve_search
from nas_search.search.sampling import flops_range
from nas_search.search.space_protocol import CandidateSpace
from nas_search.search.study import heartbeat_settings, open_storage, planned_trial_count, without_password
from nas_search.tasks.base import TaskEvaluation
from nas_search.units import format_duration, format_flops


@dataclass
class PreparedStudy:
    """A study ready for trials: the supernet, its scorer, and the planned queue."""

    resolved: ResolvedSearch
    study: optuna.Study
    checkpoint: Path
    evaluation: TaskEvaluation
    space: CandidateSpace
    sampler: ProjectingSampler
    added: int


def prepare_study(config: SearchConfig, announce: bool = True) -> PreparedStudy:
    """Everything before the trials, shared by ``run`` and ``run --plan-only``: check the
    options, refuse a mismatched existing study before any training, train or load the
    supernet, create the study (or load it, checking it matches) and plan its trials."""
    given_supernet = load_given_supernet(config)
    if given_supernet is not None and config.data is None:  # subnets are scored on their supernet's data
        config = replace(config, data=given_supernet.get("data"))
    config = replace(config, data=absolute_path(config.data))  # what the study stores, workers read
    resolved = resolve_search(config)
    created = _NewFolders(resolved)
    try:
        return _prepare(config, resolved, given_supernet, announce)
    except BaseException:
        created.remove_if_empty()
        raise


def _existing_storage(url: str):
    """The storage at ``url``, or None for a SQLite file that does not exist yet: it is
    created only when the study is (after the supernet), so that a run stopped before
    that (bad data, Ctrl-C during supernet training) leaves no empty database. The
    file's folder is made (and checked) now, so that a bad path fails before training."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///") :])
        if not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(
                    f"bad storage URL {url!r}: cannot create {path.parent} ({error.strerror}); accepted: "
                    "sqlite:///PATH.db in a writable folder"
                ) from None
            if not os.access(path.parent, os.W_OK):
                raise UserError(
                    f"bad storage URL {url!r}: {path.parent} is not writable; accepted: sqlite:///PATH.db in a writable folder"
                )
            return None
    return open_storage(url)


class _NewFolders:
    """The study folders a run is about to create; removed again when the run stops
    before anything was written into them (a partly trained supernet stays: the next run
    resumes it)."""

    def __init__(self, resolved: ResolvedSearch) -> None:
        self.folders = [folder for folder in (resolved.study_dir, resolved.study_dir.parent) if not folder.exists()]

    def remove_if_empty(self) -> None:
        for folder in self.folders:
            try:
                folder.rmdir()  # only an empty folder is removed
            except OSError:
                pass


def _prepare(config: SearchConfig, resolved: ResolvedSearch, given_supernet, announce: bool) -> PreparedStudy:
    storage = _existing_storage(resolved.storage_url)
    existing = None if storage is None else existing_study(resolved, storage, None)  # refuse before training
    if existing is not None:
        check_study_supernet(existing, resolved)
    if given_supernet is not None and absolute_path(given_supernet.get("data")) != config.data:
        raise UserError(
            f"--data {config.data}: the supernet {config.supernet} was trained on "
            f"{given_supernet.get('data') or 'the built-in demo'}, and subnets are scored on its data; leave --data out or "
            "train a supernet on this data"
        )
    if announce:
        limits = flops_range(resolved.space, resolved.input_size)
        print(
            f"space {resolved.space.name!r}: {format_flops(limits.smallest)} to {format_flops(limits.largest)} at "
            f"{resolved.input_size} px (deployment). FLOPs: 1 multiply-add = 1 FLOP."
        )
    checkpoint = ensure_supernet(resolved, study_exists=existing is not None, given=given_supernet)
    evaluation = build_evaluator(checkpoint, config)
    resolved = adopt_scoring(resolved, evaluation, checkpoint)
    attributes = study_attributes(resolved, checkpoint, evaluation)
    storage = storage or open_storage(resolved.storage_url)
    study = existing_study(resolved, storage, attributes)
    space = build_candidate_space(resolved, evaluation)
    sampler = make_search_sampler(config, space, seed=config.seed)
    if study is None:
        study = optuna.create_study(
            study_name=config.study,
            storage=storage,
            sampler=sampler,
            directions=[cast(Literal["minimize", "maximize"], OBJECTIVE_DIRECTIONS[name]) for name in config.objectives],
        )
        with warnings.catch_warnings():  # experimental in Optuna; naming the axes is deliberate
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metric_names(config))
        for key, value in attributes.items():
            study.set_user_attr(key, value)
    else:
        study = optuna.load_study(study_name=config.study, storage=storage, sampler=sampler)
    added = plan_trials(study, config, space)
    return PreparedStudy(resolved, study, checkpoint, evaluation, space, sampler, added)


def files_of_the_run(config: SearchConfig) -> dict[str, Path]:
    """The files a run reads or keeps, by what they are: the study's SQLite database, its
    supernet checkpoint and a latency table (absolute paths; only those that apply)."""
    from nas_search.search.study import default_storage_url

    files: dict[str, Path] = {}
    storage = config.storage or default_storage_url(config.study, config.studies_dir)
    if storage.startswith("sqlite:///"):
        files["the study database"] = Path(storage[len("sqlite:///") :])
    files["the supernet checkpoint"] = Path(config.supernet or Path(config.studies_dir) / config.study / "supernet.pt")
    if config.lut:
        files["the latency table"] = Path(config.lut)
    return {name: path.expanduser().resolve() for name, path in files.items()}


def refuse_files_of_the_run(path: str | Path, option: str, config: SearchConfig) -> None:
    """One-line :class:`UserError` when ``path`` (an output of the run) is one of the files
    the run needs (:func:`files_of_the_run`): writing it would destroy the study."""
    target = Path(path).expanduser().resolve()
    for name, needed in files_of_the_run(config).items():
        if target == needed:
            raise UserError(
                f"{option} {path} is {name} of study {config.study!r}; accepted: a path of its own, e.g. summary.json"
            )


def run_search(config: SearchConfig, json_summary: str | None = None) -> dict[str, Any]:
    """The main job: train or load the supernet, search, and summarise."""
    from nas_search.utils import atomic_write_text, check_output_path

    started = time.perf_counter()
    if json_summary:
        check_output_path(json_summary, "--json-summary")
        refuse_files_of_the_run(json_summary, "--json-summary", config)
    prepared = prepare_study(config)
    resolved, study = prepared.resolved, prepared.study
    print(
        f"study {config.study!r} in {without_password(resolved.storage_url)}: {planned_trial_count(study)} planned trials "
        f"({prepared.added} new)"
    )
    artifact_dir = resolved.study_dir / "artifacts"
    objective = make_objective(
        prepared.space,
        resolved.constraints,
        resolved.config.objectives,
        resolved.study_dir,
        artifact_dir,
        proposals=prepared.sampler.proposal_of,
    )
    work_through_queue(study, objective, config.progress)
    rerank_finalists(study, resolved.finalists, resolved.config, prepared.checkpoint, config.progress)
    summary = save_review(study, resolved.storage_url, artifact_dir, resolved.study_dir)
    check = measure_chosen_latency(resolved, summary)
    if check is not None:
        summary["latency_check"] = check
        study.set_user_attr("latency_check", check)
    summary["seconds"] = time.perf_counter() - started
    summary["files"]["supernet"] = str(prepared.checkpoint)
    if json_summary:  # a file others may read: no storage password in it
        summary["files"]["json_summary"] = json_summary
        atomic_write_text(json_summary, json.dumps(public_summary(summary), indent=2, default=str) + "\n")
    return summary


def public_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with the storage password hidden, for files and logs others may read."""
    return {
        **summary,
        "storage": without_password(summary["storage"]),
        "files": {**summary["files"], "storage": without_password(summary["files"]["storage"])},
    }


def measure_chosen_latency(resolved: ResolvedSearch, summary: dict[str, Any]) -> dict[str, Any] | None:
    """Measure the chosen architecture on the latency device when it is this machine
    (a model's prediction is not a promise): predicted and measured ms and whether the
    measurement meets the budget. None when there is no local latency device or no result."""
    from nas_search.hw_models.latency import LatencyModel, TimingOptions, local_hardware, measure_subnets

    model = resolved.latency_model
    if not isinstance(model, LatencyModel) or not summary.get("best") or model.table.hardware != local_hardware():
        return None
    from nas_search.spec import ArchSpec

    spec = ArchSpec.from_dict(summary["best"]["arch"])
    timing = measure_subnets(
        resolved.space,
        [spec],
        model.table.runtime,
        model.table.threads,
        model.input_size,
        TimingOptions(warmup=3, repeats=7, instances=3),
        num_classes=model.num_classes,
    )[0]
    limit = resolved.budgets.latency_ms
    return {
        "device": model.device,
        "predicted_ms": float(model(spec)),
        "measured_ms": timing.median_ms,
        "budget_ms": limit,
        "meets_budget": None if limit is None else timing.median_ms <= limit,
    }


def print_summary(summary: dict[str, Any]) -> None:
    """Human summary: the best feasible architectures and the files written."""
    print()
    elapsed = f" in {format_duration(summary['search_seconds'])}" if summary.get("search_seconds") else ""
    print(f"study {summary['study']}: {summary['trials']} trials{elapsed}, {summary['feasible_fraction']:.0%} feasible")
    band = summary.get("band")
    if band and band["sampled_trials"]:
        print(
            f"budget band: {band['proposed_outside']:.0%} of {band['sampled_trials']} sampled proposals moved onto it, "
            f"{band['evaluated_outside']:.0%} of the trials outside it"
        )
    if summary["top"]:
        print(format_table(summary["top"], summary.get("score_name", "accuracy")))
    else:
        print("no feasible trial yet")
    if summary.get("chance_warning"):
        print(summary["chance_warning"])
    if summary.get("running_trials"):
        _, grace = heartbeat_settings()
        print(
            f"note: {summary['running_trials']} trial(s) still RUNNING: another worker is on them, or a run was "
            f"killed less than {grace} s ago; once their heartbeat is {grace} s old, the same command retries them"
        )
    check = summary.get("latency_check")
    if check:
        verdict = (
            ""
            if check["budget_ms"] is None
            else (f" (budget {check['budget_ms']:g} ms: {'met' if check['meets_budget'] else 'NOT met'})")
        )
        print(
            f"best architecture measured on {check['device']}: {check['measured_ms']:.2f} ms, "
            f"predicted {check['predicted_ms']:.2f} ms{verdict}"
        )
    print()
    for name, path in summary["files"].items():
        print(f"  {name:<13} {path}")
    print(
        f"review:  nas-search dashboard --study {summary['study']}"
        + ("" if summary["storage"].startswith("sqlite") else f" --storage {summary['storage']}")
    )
    if summary["best"]:
        print(f"export:  nas-search export --study {summary['study']} --trial {summary['best']['trial']} -o exported/")


def create_study_for_workers(config: SearchConfig) -> dict[str, Any]:
    """Create the study and its planned trials once (training or loading the supernet),
    without running trials; workers started afterwards share it."""
    prepared = prepare_study(config, announce=False)
    return {
        "study": config.study,
        "storage": prepared.resolved.storage_url,
        "planned": planned_trial_count(prepared.study),
        "added": prepared.added,
    }


__all__ = [
    "PreparedStudy",
    "ResolvedSearch",
    "create_study_for_workers",
    "measure_chosen_latency",
    "prepare_study",
    "print_summary",
    "public_summary",
    "resolve_search",
    "run_search",
    "run_worker",
    "work_through_queue",
]
