"""The main job: ``nas-search run`` and ``nas-search worker``.

``run_search`` trains (or loads) the supernet, creates the study once with its planned
trials, works through them, and writes the review material (study note, trade-off chart,
per-trial artifacts) and a summary. ``run_worker`` joins an existing study and works
through the same queue; any number of workers can share a PostgreSQL study.
"""

from __future__ import annotations

import json
import logging
import re
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas_search.config import config_from_dict, config_to_dict
from nas_search.errors import UserError
from nas_search.hw_models import FlopsModel, ParamsModel
from nas_search.search.config import DEFAULT_SPACES, OBJECTIVE_DIRECTIONS, SearchConfig
from nas_search.search.objective import Constraint, SearchObjective
from nas_search.search.parameters import spec_to_params
from nas_search.search.report import (
    feasible_fraction,
    format_table,
    study_note,
    summary_payload,
    summary_rows,
    tradeoff_figure,
    width_chart_svg,
)
from nas_search.search.samplers import make_sampler
from nas_search.search.study import (
    check_study_name,
    claim_waiting_trial,
    default_storage_url,
    fail_stale,
    heartbeat,
    load_existing_study,
    open_storage,
    planned_trial_count,
    requeue,
)
from nas_search.spaces import get_space
from nas_search.spaces.sampling import check_budget, flops_range, sample_specs
from nas_search.units import format_flops, parse_flops

DEMO_SUPERNET_EPOCHS = 3
DEMO_MAX_TRAIN = 1500
DEMO_INPUT_SIZE = 32  # the demo images are rendered at 32 px
REAL_SUPERNET_EPOCHS = 10
logger = logging.getLogger("nas_search")


PARAMS_FORMS = "5M, 5Mparams, 500K or 5000000"
_PARAMS_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMG]?)\s*(params)?\s*$", re.IGNORECASE)
_COUNT_PREFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}


def parse_params_budget(text: str) -> int:
    """A parameter budget such as ``5M`` as a whole number of parameters."""
    match = _PARAMS_PATTERN.match(str(text))
    value = float(match.group(1)) * _COUNT_PREFIXES[match.group(2).upper()] if match else 0.0
    if value < 1:
        raise UserError(f"bad parameter budget {text!r}; accepted forms: {PARAMS_FORMS}")
    return int(round(value))


@dataclass
class ResolvedSearch:
    """A checked search config with everything derived from it."""

    config: SearchConfig
    space: Any
    storage_url: str
    budget_flops: int | None
    input_size: int
    train_input_size: int
    constraints: list[Constraint]
    study_dir: Path


def resolve_search(config: SearchConfig) -> ResolvedSearch:
    """Check every option (one-line errors) and derive defaults."""
    if config.task not in DEFAULT_SPACES:
        raise UserError(f"unknown task {config.task!r}; accepted: {', '.join(DEFAULT_SPACES)} (detect arrives with the detector spaces)")
    space = get_space(config.space or DEFAULT_SPACES[config.task])
    check_study_name(config.study)
    for name in config.objectives:
        if name not in OBJECTIVE_DIRECTIONS or name == "latency":
            accepted = [key for key in OBJECTIVE_DIRECTIONS if key != "latency"]
            raise UserError(f"unknown objective {name!r}; accepted: {', '.join(accepted)} (comma-separated)")
    if "accuracy" not in config.objectives:
        raise UserError(f"objectives {','.join(config.objectives)} must include accuracy")
    if config.latency or config.device:
        raise UserError("--latency/--device need the device latency models, which are not available yet; use --budget or --params")
    if config.memory:
        raise UserError("--memory needs the activation-memory model, which is not available yet; use --budget or --params")
    if config.trials < 1:
        raise UserError(f"--trials {config.trials}; accepted: 1 or more")
    if not 0 <= config.min_utilization < 1:
        raise UserError(f"--min-utilization {config.min_utilization}; accepted: 0 to below 1")
    make_sampler(config.sampler, seed=config.seed, constrained=True, multi_objective=len(config.objectives) > 1)
    input_size = config.input_size or space.input_size
    budget = parse_flops(config.budget) if config.budget else None
    constraints: list[Constraint] = []
    if budget is not None:
        limits = check_budget(space, budget, input_size)
        constraints.append(Constraint("flops", "flops", float(budget)))
        if budget >= limits.largest:
            warnings.warn(
                f"budget {format_flops(budget)} is above the largest subnet ({format_flops(limits.largest)}): "
                "the FLOPs constraint is inactive", stacklevel=2,
            )
        elif config.min_utilization > 0:
            constraints.append(Constraint("flops_utilization", "flops", config.min_utilization * budget, lower=True))
    if config.params:
        constraints.append(Constraint("params", "params", float(parse_params_budget(config.params))))
    storage_url = config.storage or default_storage_url(config.study, config.studies_dir)
    return ResolvedSearch(
        config=config, space=space, storage_url=storage_url, budget_flops=budget, input_size=input_size,
        train_input_size=config.train_input_size or (min(DEMO_INPUT_SIZE, space.train_input_size) if config.data is None else space.train_input_size),
        constraints=constraints,
        study_dir=Path(config.studies_dir) / config.study,
    )


def _ensure_supernet(resolved: ResolvedSearch) -> Path:
    """Load the given checkpoint, or train one into the study folder (resumable)."""
    from nas_search.training.checkpoint import SUPERNET_FORMAT, load_checkpoint
    from nas_search.training.config import SupernetTrainConfig
    from nas_search.training.supernet_training import train_supernet

    config = resolved.config
    if config.supernet:
        load_checkpoint(config.supernet, SUPERNET_FORMAT, space=resolved.space.name)
        return Path(config.supernet)
    demo = config.data is None
    epochs = config.supernet_epochs or (DEMO_SUPERNET_EPOCHS if demo else REAL_SUPERNET_EPOCHS)
    path = resolved.study_dir / "supernet.pt"
    if path.exists():
        payload = load_checkpoint(path, SUPERNET_FORMAT, space=resolved.space.name)
        if payload["epoch"] >= epochs:
            print(f"reusing supernet {path} (trained {payload['epoch']} epochs)")
            return path
    training = SupernetTrainConfig(
        space=resolved.space.name, data=config.data, epochs=epochs, input_size=resolved.train_input_size,
        batch_size=config.batch_size, seed=config.seed, workers=config.workers, device=config.training_device,
        max_train=config.max_train or (DEMO_MAX_TRAIN if demo else None), out=str(path), resume=True,
        random_subnets=1 if demo else 2,
        progress=config.progress,
    )
    print(f"training the supernet of space {resolved.space.name!r}: {epochs} epochs at {resolved.train_input_size} px -> {path}")
    train_supernet(training)
    return path


def _build_evaluator(checkpoint: Path, config: SearchConfig, device: str = "cpu"):
    from nas_search.data import load_classification_data, make_loader
    from nas_search.evaluators.classification import AccuracyEvaluator, calibration_tensor
    from nas_search.training.supernet_training import load_supernet

    supernet, metadata = load_supernet(checkpoint, device=device)
    data = load_classification_data(
        metadata.get("data"), input_size=metadata["input_size"], seed=config.seed, augment=False, max_val=config.max_val,
    )
    evaluator = AccuracyEvaluator(
        supernet, calibration_tensor(data.train, config.calibration_images, config.seed),
        make_loader(data.val, batch_size=128, shuffle=False, seed=config.seed, num_workers=0), device=device,
    )
    return supernet, metadata, data, evaluator


def _make_objective(resolved: ResolvedSearch, evaluator, num_classes: int, artifact_dir: Path) -> SearchObjective:
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    space = resolved.space
    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    scratch = resolved.study_dir / "trial-files"

    def upload(trial: optuna.Trial, spec, costs, accuracy) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        arch_file = scratch / f"trial-{trial.number}-arch.json"
        arch_file.write_text(json.dumps(spec.to_dict(), indent=2))
        chart = scratch / f"trial-{trial.number}-widths.svg"
        chart.write_text(width_chart_svg(spec, f"trial {trial.number}: accuracy {accuracy:.3f}, {format_flops(costs['flops'])}"))
        for path in (arch_file, chart):
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)

    flops_model = FlopsModel(space, resolved.input_size, num_classes)
    project = None
    if resolved.budget_flops is not None:
        from nas_search.search.projection import project_to_band

        lower = next((c.limit for c in resolved.constraints if c.name == "flops_utilization"), 0.0)
        upper = float(resolved.budget_flops)
        project = lambda spec: project_to_band(spec, space, flops_model, lower, upper)  # noqa: E731
    return SearchObjective(
        project=project,
        space=space,
        cost_models={
            "flops": flops_model,
            "params": ParamsModel(space, num_classes),
        },
        constraints=resolved.constraints,
        evaluate=lambda spec: evaluator(spec).accuracy,
        objectives=resolved.config.objectives,
        on_feasible=upload,
    )


def _study_attributes(resolved: ResolvedSearch, checkpoint: Path, metadata: dict, data_description: str) -> dict[str, Any]:
    from nas_search.training.checkpoint import checkpoint_checksum

    config = resolved.config
    return {
        "task": config.task,
        "space": resolved.space.name,
        "budget_text": config.budget,
        "budget_flops": resolved.budget_flops,
        "input_size": resolved.input_size,
        "train_input_size": metadata["input_size"],
        "device": config.device or "none (FLOPs only)",
        "dataset": data_description,
        "data": config.data,
        "num_classes": metadata["num_classes"],
        "supernet": str(checkpoint.resolve()),
        "supernet_checksum": checkpoint_checksum(checkpoint),
        "constraints": [constraint.__dict__ for constraint in resolved.constraints],
        "config": config_to_dict(config),
    }


def _create_or_check_study(resolved: ResolvedSearch, storage, attributes: dict[str, Any] | None) -> optuna.Study | None:
    """The existing study (after checking it is compatible), or None if there is none."""
    config = resolved.config
    names = {summary.study_name for summary in optuna.get_all_study_summaries(storage)}
    if config.study not in names:
        return None
    study = optuna.load_study(study_name=config.study, storage=storage)
    existing_space = study.user_attrs.get("space")
    if existing_space != resolved.space.name:
        raise UserError(
            f"study {config.study!r} already exists with space {existing_space!r}, not {resolved.space.name!r}; "
            "choose another --study name"
        )
    if attributes is not None and study.user_attrs.get("supernet_checksum") != attributes["supernet_checksum"]:
        raise UserError(
            f"study {config.study!r} was scored with another supernet (sha256 {study.user_attrs.get('supernet_checksum')}); "
            "choose another --study name or pass that --supernet"
        )
    existing_objectives = study.user_attrs.get("config", {}).get("objectives")
    if existing_objectives and list(existing_objectives) != list(config.objectives):
        raise UserError(f"study {config.study!r} has objectives {existing_objectives}, not {list(config.objectives)}")
    return study


def _plan_trials(study: optuna.Study, resolved: ResolvedSearch, num_classes: int) -> int:
    """Enqueue trials until the study plans ``config.trials``; the first
    ``startup_trials`` are budget-aware samples. Returns how many were added."""
    config = resolved.config
    missing = config.trials - planned_trial_count(study)
    if missing <= 0:
        return 0
    already = planned_trial_count(study)
    startup = max(0, min(config.startup_trials, config.trials) - already)
    fixed: list[dict] = []
    if startup:
        fraction = config.min_utilization if resolved.budget_flops else 0.0
        samples = sample_specs(
            resolved.space, min(startup, missing), seed=config.seed + already, max_flops=resolved.budget_flops,
            input_size=resolved.input_size, min_fraction=fraction,
        )
        fixed = [spec_to_params(spec) for spec, _ in samples]
    for index in range(missing):
        study.enqueue_trial(fixed[index] if index < len(fixed) else {}, skip_if_exists=False)
    return missing


def work_through_queue(study: optuna.Study, objective: SearchObjective, progress: bool = True, label: str = "search") -> int:
    """Claim and run WAITING trials until none is left. Returns how many this process ran.
    On Ctrl-C the running trial is put back in the queue, so the study stays consistent."""
    from nas_search.progress import progress_bar

    remaining = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    bar = progress_bar(total=remaining, description=label, unit="trial", enabled=progress)
    count = 0
    try:
        while True:
            fail_stale(study)
            trial = claim_waiting_trial(study)
            if trial is None:
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
                trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
                study.tell(trial, state=TrialState.FAIL)
                continue
            values = outcome.values if len(outcome.values) > 1 else outcome.values[0]
            try:
                study.tell(trial, values)
            except KeyboardInterrupt:  # between the result and its record: re-queue unless recorded
                requeue(study, trial)
                raise
            count += 1
            bar.update(1)
            best = outcome.accuracy if outcome.accuracy is not None else float("nan")
            bar.set_postfix(feasible=outcome.feasible, acc=f"{best:.3f}", flops=format_flops(outcome.costs["flops"]))
    finally:
        bar.close()
    return count


def _finish(study: optuna.Study, resolved: ResolvedSearch, artifact_dir: Path) -> dict[str, Any]:
    from optuna_dashboard import save_note, save_plotly_graph_object

    rows = summary_rows(study)
    save_note(study, study_note(study, rows))
    try:
        save_plotly_graph_object(study, tradeoff_figure(study))
    except Exception as error:  # the chart is a convenience; the study stays usable without it
        logger.warning("could not save the trade-off chart: %s", error)
    files = {"storage": resolved.storage_url, "artifacts": str(artifact_dir), "study_dir": str(resolved.study_dir)}
    return summary_payload(study, resolved.storage_url, files)


def run_search(config: SearchConfig, json_summary: str | None = None) -> dict[str, Any]:
    """The main job: train or load the supernet, search, and summarise."""
    from nas_search.utils import atomic_write_text

    started = time.perf_counter()
    resolved = resolve_search(config)
    storage = open_storage(resolved.storage_url)
    _create_or_check_study(resolved, storage, None)  # refuse a mismatched study before training
    limits = flops_range(resolved.space, resolved.input_size)
    print(
        f"space {resolved.space.name!r}: {format_flops(limits.smallest)} to {format_flops(limits.largest)} at "
        f"{resolved.input_size} px (deployment); supernet proxy size {resolved.train_input_size} px. "
        "FLOPs: 1 multiply-add = 1 FLOP."
    )
    checkpoint = _ensure_supernet(resolved)
    supernet, metadata, data, evaluator = _build_evaluator(checkpoint, config)
    attributes = _study_attributes(resolved, checkpoint, metadata, data.description)
    study = _create_or_check_study(resolved, storage, attributes)
    sampler = make_sampler(config.sampler, seed=config.seed, constrained=True, multi_objective=len(config.objectives) > 1)
    if study is None:
        study = optuna.create_study(
            study_name=config.study, storage=storage, sampler=sampler,
            directions=[OBJECTIVE_DIRECTIONS[name] for name in config.objectives],
        )
        for key, value in attributes.items():
            study.set_user_attr(key, value)
    else:
        study = optuna.load_study(study_name=config.study, storage=storage, sampler=sampler)
    added = _plan_trials(study, resolved, metadata["num_classes"])
    print(f"study {config.study!r} in {resolved.storage_url}: {planned_trial_count(study)} planned trials ({added} new)")
    artifact_dir = resolved.study_dir / "artifacts"
    objective = _make_objective(resolved, evaluator, metadata["num_classes"], artifact_dir)
    work_through_queue(study, objective, config.progress)
    summary = _finish(study, resolved, artifact_dir)
    summary["seconds"] = time.perf_counter() - started
    summary["files"]["supernet"] = str(checkpoint)
    if json_summary:
        atomic_write_text(json_summary, json.dumps(summary, indent=2, default=str) + "\n")
        summary["files"]["json_summary"] = json_summary
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """Human summary: the best feasible architectures and the files written."""
    print()
    print(f"study {summary['study']}: {summary['trials']} trials, {summary['feasible_fraction']:.0%} feasible")
    if summary["top"]:
        print(format_table(summary["top"]))
    else:
        print("no feasible trial yet")
    print()
    for name, path in summary["files"].items():
        print(f"  {name:<13} {path}")
    print(f"review:  nas-search dashboard --study {summary['study']}" + (
        "" if summary["storage"].startswith("sqlite") else f" --storage {summary['storage']}"))
    if summary["best"]:
        print(f"export:  nas-search export --study {summary['study']} --trial {summary['best']['trial']} -o exported/")


def create_study_for_workers(config: SearchConfig) -> dict[str, Any]:
    """Create the study and its planned trials once (training or loading the supernet),
    without running trials; workers started afterwards share it."""
    resolved = resolve_search(config)
    storage = open_storage(resolved.storage_url)
    _create_or_check_study(resolved, storage, None)  # refuse a mismatched study before training
    checkpoint = _ensure_supernet(resolved)
    supernet, metadata, data, evaluator = _build_evaluator(checkpoint, config)
    attributes = _study_attributes(resolved, checkpoint, metadata, data.description)
    study = _create_or_check_study(resolved, storage, attributes)
    if study is None:
        study = optuna.create_study(
            study_name=config.study, storage=storage,
            directions=[OBJECTIVE_DIRECTIONS[name] for name in config.objectives],
        )
        for key, value in attributes.items():
            study.set_user_attr(key, value)
    added = _plan_trials(study, resolved, metadata["num_classes"])
    return {"study": config.study, "storage": resolved.storage_url, "planned": planned_trial_count(study), "added": added}


def run_worker(storage_url: str, study_name: str, progress: bool = True, finish: bool = True) -> dict[str, Any]:
    """Join an existing study and run its queued trials until none is left."""
    storage = open_storage(storage_url)
    study = load_existing_study(study_name, storage)
    saved = study.user_attrs.get("config")
    if not saved:
        raise UserError(f"study {study_name!r} was not created by nas-search (no config attribute)")
    config = config_from_dict(SearchConfig, saved, source=f"study {study_name} config")
    config = replace(config, storage=storage_url, progress=progress)
    resolved = resolve_search(config)
    checkpoint = Path(study.user_attrs["supernet"])
    from nas_search.training.checkpoint import checkpoint_checksum

    if not checkpoint.exists() or checkpoint_checksum(checkpoint) != study.user_attrs.get("supernet_checksum"):
        raise UserError(f"supernet checkpoint {checkpoint} of study {study_name!r} is missing or changed on this machine")
    supernet, metadata, data, evaluator = _build_evaluator(checkpoint, config)
    study = optuna.load_study(
        study_name=study_name, storage=storage,
        sampler=make_sampler(config.sampler, seed=None, constrained=True, multi_objective=len(config.objectives) > 1),
    )
    artifact_dir = resolved.study_dir / "artifacts"
    objective = _make_objective(resolved, evaluator, metadata["num_classes"], artifact_dir)
    ran = work_through_queue(study, objective, progress, label=f"worker {study_name}")
    result = {"study": study_name, "storage": storage_url, "ran": ran, "feasible_fraction": feasible_fraction(study)}
    if finish and not study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
        _finish(study, resolved, artifact_dir)
    return result
