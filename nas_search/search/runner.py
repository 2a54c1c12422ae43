"""The main job: ``nas-search run`` and ``nas-search worker``.

``run_search`` trains (or loads) the supernet, creates the study once with its planned
trials, works through them, and writes the review material (study note, trade-off chart,
per-trial artifacts) and a summary. ``run_worker`` joins an existing study and works
through the same queue; any number of workers can share a PostgreSQL study.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from nas_search.config import config_from_dict, config_to_dict
from nas_search.errors import UserError
from nas_search.hw_models import FlopsModel, ParamsModel
from nas_search.search.config import demo_max_train, scoring_settings, OBJECTIVE_DIRECTIONS, SearchConfig
from nas_search.search.finalists import FinalistSettings, rerank_finalists
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
    heartbeat_settings,
    interrupt_watch,
    load_existing_study,
    open_storage,
    planned_trial_count,
    raise_if_interrupted,
    requeue,
    without_password,
)
from nas_search.tasks import get_task
from nas_search.tasks.base import REAL_DATA_EPOCHS, SupernetJob, TaskEvaluation
from nas_search.tasks import get_space, space_names
from nas_search.spaces.sampling import check_budget, flops_range, sample_specs
from nas_search.units import check_input_size, format_bytes, format_count, format_flops, parse_flops, parse_latency_ms, parse_memory_bytes

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
    latency_model: Any
    memory_model: Any
    input_size: int
    train_input_size: int
    constraints: list[Constraint]
    study_dir: Path
    finalists: FinalistSettings | None = None


def resolve_search(config: SearchConfig) -> ResolvedSearch:
    """Check every option (one-line errors) and derive defaults."""
    task = get_task(config.task)
    space = get_space(config.space or task.default_space)
    if space.task != task.name:
        raise UserError(f"space {space.name!r} is a {space.task} space, not a {task.name} one; accepted for --task "
                        f"{task.name}: {', '.join(space_names(task=task.name))}")
    check_study_name(config.study)
    for name in config.objectives:
        if name not in OBJECTIVE_DIRECTIONS:
            raise UserError(f"unknown objective {name!r}; accepted: {', '.join(OBJECTIVE_DIRECTIONS)} (comma-separated)")
    if "accuracy" not in config.objectives or len(set(config.objectives)) != len(config.objectives):
        raise UserError(f"--objectives {','.join(config.objectives) or repr('')}; accepted: accuracy plus any of "
                        f"{', '.join(name for name in OBJECTIVE_DIRECTIONS if name != 'accuracy')}, each once, "
                        "comma-separated")
    if config.data is not None and not Path(config.data).is_dir():
        problem = "is a file, not a folder" if Path(config.data).exists() else "does not exist"
        raise UserError(f"data folder {config.data} {problem}; accepted: "
                        + task.data_forms)
    if (config.latency or "latency" in config.objectives or config.lut) and not config.device:
        raise UserError("--latency, --lut and the latency objective need --device NAME; see `nas-search devices`")
    if config.trials < 1:
        raise UserError(f"--trials {config.trials}; accepted: 1 or more")
    if not 0 <= config.min_utilization < 1:
        raise UserError(f"--min-utilization {config.min_utilization}; accepted: 0 to below 1")
    for option, value in (("--input-size", config.input_size), ("--train-input-size", config.train_input_size)):
        check_input_size(value, option)
    if config.supernet_epochs is not None and config.supernet_epochs < 1:
        raise UserError(f"--supernet-epochs {config.supernet_epochs}; accepted: 1 or more")
    for option, value in (("--startup-trials", config.startup_trials), ("--calibration-images", config.calibration_images),
                          ("--max-train", config.max_train), ("--max-val", config.max_val)):
        minimum = 0 if option == "--startup-trials" else 1
        if value is not None and value < minimum:
            raise UserError(f"{option} {value}; accepted: {minimum} or more" + ("" if minimum == 0 else " (or leave it out)"))
    if not 0 <= config.seed < 2**32:
        raise UserError(f"--seed {config.seed}; accepted: 0 to {2**32 - 1}")
    make_sampler(config.sampler, seed=config.seed, constrained=True, multi_objective=len(config.objectives) > 1)
    input_size = space.input_size if config.input_size is None else config.input_size
    budget = parse_flops(config.budget) if config.budget else None
    latency_model = memory_model = None
    if config.device:
        from nas_search.hw_models.devices import latency_model_for

        latency_model = latency_model_for(
            space, config.device, config.lut, input_size, runtime=config.runtime, threads=config.threads,
        )
    if config.memory:
        from nas_search.hw_models.memory import MemoryModel

        memory_model = MemoryModel(space, input_size)
    constraints: list[Constraint] = []
    inactive_budget = None
    if budget is not None:
        limits = check_budget(space, budget, input_size)
        constraints.append(Constraint("flops", "flops", float(budget)))
        if budget >= limits.largest:
            inactive_budget = (
                f"warning: budget {format_flops(budget)} is above the largest subnet ({format_flops(limits.largest)}): "
                "the FLOPs constraint is inactive"
            )
        elif config.min_utilization > 0 and not config.latency:
            constraints.append(Constraint("flops_utilization", "flops", config.min_utilization * budget, lower=True))
    if config.params:
        constraints.append(Constraint("params", "params", float(parse_params_budget(config.params))))
        # a lower bound for any class count (one output); the data's count is known only later
        _check_reachable(space, "--params", ParamsModel(space, 1), constraints[-1].limit, "params", "")
    if config.latency:
        limit = parse_latency_ms(config.latency)
        constraints.append(Constraint("latency", "latency", limit))
        # one-class networks: a lower bound whatever the data's class count, known only later
        _check_reachable(space, "latency", _for_classes(latency_model, 1), limit, "ms", f" on {config.device}")
        if config.min_utilization > 0:  # with a latency budget, the search is pushed to it, not to the FLOPs one
            constraints.append(Constraint("latency_utilization", "latency", config.min_utilization * limit, lower=True))
    if config.memory:
        constraints.append(Constraint("memory", "peak_memory", float(parse_memory_bytes(config.memory))))
        _check_reachable(space, "--memory", _for_classes(memory_model, 1), constraints[-1].limit, "bytes", "")
    if inactive_budget:  # after the checks above, so that a refusal stays one line
        print(inactive_budget, file=sys.stderr)
    storage_url = config.storage or default_storage_url(config.study, config.studies_dir)
    train_input_size = config.train_input_size if config.train_input_size is not None else (
        min(task.demo.input_size, space.train_input_size) if config.data is None else space.train_input_size)
    return ResolvedSearch(
        config=config, space=space, storage_url=storage_url, budget_flops=budget, input_size=input_size,
        latency_model=latency_model, memory_model=memory_model, train_input_size=train_input_size,
        constraints=constraints, study_dir=Path(config.studies_dir) / config.study,
        finalists=_finalist_settings(config, train_input_size),
    )


def _finalist_settings(config: SearchConfig, train_input_size: int) -> FinalistSettings | None:
    """The re-ranking settings (task defaults filled in), or None when it is off."""
    task = get_task(config.task)
    defaults = task.finalists["demo" if config.data is None else "real"]
    settings = FinalistSettings(
        count=defaults.count if config.finalists is None else config.finalists,
        epochs=defaults.epochs if config.finalist_epochs is None else config.finalist_epochs,
        input_size=train_input_size if config.finalist_input_size is None else config.finalist_input_size,
        init=config.finalist_init,
        seeds=config.finalist_seeds,
    )
    if settings.input_size % task.finalist_size_multiple:
        raise UserError(f"--finalist-size {settings.input_size}; accepted for {task.name}: a multiple of "
                        f"{task.finalist_size_multiple}")
    return settings if settings.count else None


def _for_classes(model, num_classes: int):
    """``model`` for networks with ``num_classes`` outputs (a latency table's model
    estimates the parts that depend on them when the table was profiled for another count)."""
    return model.for_classes(num_classes) if hasattr(model, "for_classes") else model


#: How a budget and the smallest subnet's cost are shown, by unit (others: ``1.23 ms``).
UNIT_FORMATS: dict[str, Callable[[float], str]] = {"bytes": format_bytes, "params": lambda value: f"{format_count(value)} params"}


def _check_reachable(space, name: str, model, limit: float, unit: str, where: str) -> None:
    """Refuse a budget that even the smallest subnet exceeds (exit 2, naming the minimum)."""
    smallest = float(model(space.smallest()))
    if smallest > limit:
        show = UNIT_FORMATS.get(unit, lambda value: f"{value:.2f} {unit}")
        shown, asked = show(smallest), (f"{limit:g} {unit}" if unit == "ms" else show(limit))
        raise UserError(
            f"{name} budget {asked}{where} is below the smallest subnet of space {space.name!r} ({shown}); "
            f"accepted: at least {shown}"
        )


def _absolute_path(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _load_given_supernet(config: SearchConfig) -> dict[str, Any] | None:
    """The ``--supernet`` checkpoint (read once per run: its data, size, epochs and weights
    are checked from it); None without ``--supernet`` or when the file is missing (the
    later checks name it)."""
    from nas_search.training.checkpoint import load_checkpoint

    if not config.supernet or not Path(config.supernet).is_file():
        return None
    return load_checkpoint(config.supernet, get_task(config.task).checkpoint_format)


def _adopt_scoring(resolved: ResolvedSearch, evaluation: TaskEvaluation, checkpoint: Path) -> ResolvedSearch:
    """The search as its supernet scores it: at the supernet's training size (a different
    ``--train-input-size`` is refused), with device cost models for the data's class count."""
    config = resolved.config
    if evaluation.train_input_size != resolved.train_input_size:
        if config.train_input_size is not None:
            raise UserError(
                f"--train-input-size {config.train_input_size}: the supernet {checkpoint} was trained at "
                f"{evaluation.train_input_size} px and scores subnets at that size; leave --train-input-size out "
                "or train another supernet"
            )
        resolved = replace(resolved, train_input_size=evaluation.train_input_size,
                           finalists=_finalist_settings(config, config.task, evaluation.train_input_size))
    return replace(resolved, **{
        name: _for_classes(model, evaluation.num_classes) for name, model in
        (("latency_model", resolved.latency_model), ("memory_model", resolved.memory_model)) if model is not None
    })


def _supernet_epochs(config: SearchConfig) -> int:
    """Supernet epochs of a run: ``--supernet-epochs`` or the task's default."""
    if config.supernet_epochs is not None:
        return config.supernet_epochs
    return get_task(config.task).demo.epochs if config.data is None else REAL_DATA_EPOCHS


def _check_study_supernet(study: optuna.Study, resolved: ResolvedSearch) -> None:
    """Before any training: the supernet a rerun would use is the one the study's trials
    were scored with (same checksum), and a rerun does not train it further."""
    from nas_search.training.checkpoint import checkpoint_checksum, load_checkpoint

    recorded = study.user_attrs.get("supernet_checksum")
    if recorded is None:
        return
    config = resolved.config
    path = Path(config.supernet) if config.supernet else resolved.study_dir / "supernet.pt"
    advice = "pass that file with --supernet or choose another --study name"
    if not path.is_file():
        raise UserError(f"study {config.study!r} was scored with the supernet {study.user_attrs.get('supernet')} "
                        f"(sha256 {recorded}), and {path} does not exist; {advice}")
    checksum = checkpoint_checksum(path)
    if checksum != recorded:
        raise UserError(f"study {config.study!r} was scored with another supernet (sha256 {recorded}; {path} has "
                        f"{checksum}); {advice}")
    if not config.supernet and config.supernet_epochs is not None:
        trained = load_checkpoint(path, get_task(config.task).checkpoint_format, space=resolved.space.name)["epoch"]
        if config.supernet_epochs > trained:
            raise UserError(
                f"--supernet-epochs {config.supernet_epochs}: study {config.study!r} was scored with its supernet "
                f"trained {trained} epochs, and training it further would invalidate its trials; choose another "
                f"--study name for a longer-trained supernet (or leave --supernet-epochs out)"
            )


def _ensure_supernet(resolved: ResolvedSearch, study_exists: bool = False,
                     given: dict[str, Any] | None = None) -> Path:
    """Check the given checkpoint (``given``: it, already loaded), or train one into the
    study folder (resumable). The supernet of an existing study is reused as it is."""
    from nas_search.training.checkpoint import check_checkpoint_space, load_checkpoint

    config = resolved.config
    task = get_task(config.task)
    if config.supernet:
        payload = given if given is not None else load_checkpoint(config.supernet, task.checkpoint_format)
        check_checkpoint_space(payload, config.supernet, resolved.space.name)
        planned = payload.get("epochs")
        if planned is not None and payload["epoch"] < planned:
            print(f"warning: supernet {config.supernet} was trained {payload['epoch']} of its {planned} epochs (an "
                  f"interrupted run); `nas-search supernet train --resume --out {config.supernet}` with the same "
                  "options finishes it", file=sys.stderr)
        return Path(config.supernet)
    epochs = _supernet_epochs(config)
    path = resolved.study_dir / "supernet.pt"
    if path.exists():
        payload = load_checkpoint(path, task.checkpoint_format, space=resolved.space.name)
        if payload["epoch"] >= epochs or study_exists:  # a study's supernet is never trained further
            print(f"reusing supernet {path} (trained {payload['epoch']} epochs at {payload.get('input_size', payload.get('image_size'))} px)")
            return path
    print(f"training the supernet of space {resolved.space.name!r}: {epochs} epochs at {resolved.train_input_size} px -> {path}")
    task.train_supernet(SupernetJob(
        space=resolved.space.name, data=config.data, path=path, epochs=epochs, input_size=resolved.train_input_size,
        batch_size=config.batch_size, seed=config.seed, workers=config.workers, device=config.training_device,
        max_train=demo_max_train(config), progress=config.progress, max_flops=resolved.budget_flops,
        flops_input_size=resolved.input_size,
    ))
    return path


def _build_evaluator(checkpoint: Path, config: SearchConfig) -> TaskEvaluation:
    """The task's scorer of subnets with inherited weights."""
    return get_task(config.task).load_evaluator(checkpoint, scoring_settings(config))


def _cost_models(resolved: ResolvedSearch, flops_model, num_classes: int) -> dict:
    """Every cost recorded on each trial: FLOPs and params always, latency on the chosen
    device and peak activation memory when asked for."""
    models = {"flops": flops_model, "params": ParamsModel(resolved.space, num_classes)}
    for name, model in (("latency", resolved.latency_model), ("peak_memory", resolved.memory_model)):
        if model is not None:  # already for the data's class count (_adopt_scoring)
            models[name] = model
    return models


def _make_objective(resolved: ResolvedSearch, evaluation: TaskEvaluation, artifact_dir: Path) -> SearchObjective:
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

    num_classes = evaluation.num_classes
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
        cost_models=_cost_models(resolved, flops_model, num_classes),
        constraints=resolved.constraints,
        evaluate=evaluation.evaluate,
        objectives=resolved.config.objectives,
        on_feasible=upload,
    )


def _study_attributes(resolved: ResolvedSearch, checkpoint: Path, evaluation: TaskEvaluation) -> dict[str, Any]:
    from nas_search.training.checkpoint import checkpoint_checksum

    config = resolved.config
    identity = _search_identity(resolved)  # task, constraints, input_size, device, data
    # the dashboard pages this table a few rows at a time: what a reviewer looks for first comes first
    return {
        "task": identity.pop("task"),
        "space": resolved.space.name,
        "budget_text": config.budget,
        **identity,
        "budget_flops": resolved.budget_flops,
        "train_input_size": evaluation.train_input_size,
        "score_name": get_task(config.task).score_name,
        "dataset": evaluation.description,
        "num_classes": evaluation.num_classes,
        "supernet": str(checkpoint.resolve()),
        "supernet_checksum": checkpoint_checksum(checkpoint),
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
    current = _search_identity(resolved)
    for name, (label, describe) in SEARCH_IDENTITY.items():
        if name in study.user_attrs and _normalised(name, study.user_attrs[name]) != _normalised(name, current[name]):
            raise UserError(
                f"study {config.study!r} was searched with {label} {describe(study.user_attrs[name])}, not "
                f"{describe(current[name])}; its trials were scored under those rules. Choose another --study name "
                f"(or delete {resolved.study_dir} and its storage entry to start over)"
            )
    return study


#: How a constraint's limit is shown, by cost.
COST_FORMATS: dict[str, Callable[[float], str]] = {
    "flops": format_flops, "params": format_count, "latency": lambda value: f"{value:g} ms", "peak_memory": format_bytes,
}


def _describe_constraints(constraints: list[dict[str, Any]]) -> str:
    if not constraints:
        return "no constraint"
    return ", ".join(
        f"{item['cost']} {'>=' if item.get('lower') else '<='} {COST_FORMATS.get(item['cost'], str)(item['limit'])}"
        for item in constraints
    )


#: Study attributes that define what a study searches, with how an error names them. A
#: rerun of ``run`` with another value (a new ``--budget``, ``--data`` ...) would mix
#: trials scored under other rules into the summary, so it is refused.
SEARCH_IDENTITY: dict[str, tuple[str, Callable[[Any], str]]] = {
    "task": ("task", str),
    "constraints": ("budget and constraints", _describe_constraints),
    "input_size": ("deployment size", lambda size: f"{size} px"),
    "device": ("device", str),
    "latency_model": ("latency model", str),
    "data": ("data", lambda data: "the built-in demo" if data is None else str(data)),
    "max_val": ("validation subset", lambda count: "every validation image" if count is None else f"--max-val {count}"),
    "calibration_images": ("batch-norm calibration", lambda count: f"{count} images (--calibration-images)"),
}


def _search_identity(resolved: ResolvedSearch) -> dict[str, Any]:
    """This run's values of :data:`SEARCH_IDENTITY`; :func:`_study_attributes` stores them."""
    config = resolved.config
    latency_model = resolved.latency_model
    return {
        "task": config.task, "constraints": [constraint.__dict__ for constraint in resolved.constraints],
        "input_size": resolved.input_size, "device": config.device or "none (FLOPs only)",
        # device/runtime/threads of a profiled table; the device name of an analytic model
        "latency_model": "none" if latency_model is None else latency_model.device,
        "data": _absolute_path(config.data),
        "max_val": config.max_val,
        "calibration_images": config.calibration_images or get_task(config.task).calibration_images,
    }


def _normalised(name: str, value: Any) -> Any:
    """A comparable form: data folders as absolute paths, constraints as plain tuples."""
    if name == "data":
        return _absolute_path(value)
    if name == "constraints":
        return [(item["name"], item["cost"], float(item["limit"]), bool(item.get("lower"))) for item in value or []]
    return value


#: With device constraints, startup candidates are drawn from a pool this many times larger.
DEVICE_POOL_FACTOR = 20


def _startup_specs(resolved: ResolvedSearch, count: int, seed: int) -> list:
    """Budget-aware startup architectures. FLOPs budgets are met by construction (spread
    sampling); latency and memory budgets by drawing a larger pool and keeping the specs
    that meet them, those closest to the binding budget first."""
    config = resolved.config
    fraction = config.min_utilization if any(c.name == "flops_utilization" for c in resolved.constraints) else 0.0
    device_models = {"latency": resolved.latency_model, "peak_memory": resolved.memory_model}
    device_limits = [
        (device_models[constraint.cost], constraint.limit)
        for constraint in resolved.constraints
        if constraint.cost in device_models and not constraint.lower
    ]
    lower_limits = [
        (device_models[constraint.cost], constraint.limit)
        for constraint in resolved.constraints
        if constraint.cost in device_models and constraint.lower
    ]
    pool_size = count * (DEVICE_POOL_FACTOR if device_limits else 1)
    pool = [spec for spec, _ in sample_specs(
        resolved.space, pool_size, seed=seed, max_flops=resolved.budget_flops,
        input_size=resolved.input_size, min_fraction=fraction,
    )]
    if not device_limits:
        return pool[:count]
    in_band, below_band = [], []
    for spec in pool:
        costs = {id(model): float(model(spec)) for model, _ in device_limits + lower_limits}
        if all(costs[id(model)] <= limit for model, limit in device_limits):
            meets_lower = all(costs[id(model)] >= limit for model, limit in lower_limits)
            (in_band if meets_lower else below_band).append(spec)
    return (in_band + below_band)[:count]


def _plan_trials(study: optuna.Study, resolved: ResolvedSearch) -> int:
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
        fixed = [spec_to_params(spec) for spec in _startup_specs(resolved, min(startup, missing), config.seed + already)]
    for index in range(missing):
        study.enqueue_trial(fixed[index] if index < len(fixed) else {}, skip_if_exists=False)
    return missing


def work_through_queue(study: optuna.Study, objective: SearchObjective, progress: bool = True, label: str = "search") -> int:
    """Claim and run WAITING trials until none is left. Returns how many this process ran.
    On Ctrl-C the running trial is put back in the queue, so the study stays consistent."""
    from nas_search.progress import progress_bar

    remaining = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    bar = progress_bar(total=remaining, description=label, unit="trial", enabled=progress)
    try:
        with interrupt_watch() as interrupted:
            return _run_queued_trials(study, objective, bar, interrupted)
    finally:
        bar.close()


def _run_queued_trials(study: optuna.Study, objective: SearchObjective, bar, interrupted) -> int:
    """The loop of :func:`work_through_queue`; checks ``interrupted`` between trials."""
    count = 0
    while True:
        raise_if_interrupted(interrupted)  # a Ctrl-C swallowed inside a finaliser stops here
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
        score = outcome.accuracy if outcome.accuracy is not None else float("nan")  # top-1 or mAP@0.5
        bar.set_postfix(feasible=outcome.feasible, score=f"{score:.3f}", flops=format_flops(outcome.costs["flops"]))
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


@dataclass
class PreparedStudy:
    """A study ready for trials: the supernet, its scorer, and the planned queue."""

    resolved: ResolvedSearch
    study: optuna.Study
    checkpoint: Path
    evaluation: TaskEvaluation
    added: int


def prepare_study(config: SearchConfig, announce: bool = True) -> PreparedStudy:
    """Everything before the trials, shared by ``run`` and ``run --plan-only``: check the
    options, refuse a mismatched existing study before any training, train or load the
    supernet, create the study (or load it, checking it matches) and plan its trials."""
    given_supernet = _load_given_supernet(config)
    if given_supernet is not None and config.data is None:  # subnets are scored on their supernet's data
        config = replace(config, data=given_supernet.get("data"))
    config = replace(config, data=_absolute_path(config.data))  # what the study stores, workers read
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
        path = Path(url[len("sqlite:///"):])
        if not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"bad storage URL {url!r}: cannot create {path.parent} ({error.strerror}); accepted: "
                                "sqlite:///PATH.db in a writable folder") from None
            if not os.access(path.parent, os.W_OK):
                raise UserError(f"bad storage URL {url!r}: {path.parent} is not writable; accepted: sqlite:///PATH.db in "
                                "a writable folder")
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
    existing = None if storage is None else _create_or_check_study(resolved, storage, None)  # refuse before training
    if existing is not None:
        _check_study_supernet(existing, resolved)
    if given_supernet is not None and _absolute_path(given_supernet.get("data")) != config.data:
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
    checkpoint = _ensure_supernet(resolved, study_exists=existing is not None, given=given_supernet)
    evaluation = _build_evaluator(checkpoint, config)
    resolved = _adopt_scoring(resolved, evaluation, checkpoint)
    attributes = _study_attributes(resolved, checkpoint, evaluation)
    storage = storage or open_storage(resolved.storage_url)
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
    added = _plan_trials(study, resolved)
    return PreparedStudy(resolved, study, checkpoint, evaluation, added)


def run_search(config: SearchConfig, json_summary: str | None = None) -> dict[str, Any]:
    """The main job: train or load the supernet, search, and summarise."""
    from nas_search.utils import atomic_write_text, check_output_path

    started = time.perf_counter()
    if json_summary:
        check_output_path(json_summary, "--json-summary")
    prepared = prepare_study(config)
    resolved, study = prepared.resolved, prepared.study
    print(f"study {config.study!r} in {without_password(resolved.storage_url)}: {planned_trial_count(study)} planned trials "
          f"({prepared.added} new)")
    artifact_dir = resolved.study_dir / "artifacts"
    objective = _make_objective(resolved, prepared.evaluation, artifact_dir)
    work_through_queue(study, objective, config.progress)
    rerank_finalists(study, resolved, prepared.checkpoint, config.progress)
    summary = _finish(study, resolved, artifact_dir)
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
    return {**summary, "storage": without_password(summary["storage"]),
            "files": {**summary["files"], "storage": without_password(summary["files"]["storage"])}}


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
    timing = measure_subnets(resolved.space, [spec], model.table.runtime, model.table.threads, model.input_size,
                             TimingOptions(warmup=3, repeats=7, instances=3), num_classes=model.num_classes)[0]
    limit = next((c.limit for c in resolved.constraints if c.cost == "latency"), None)
    return {
        "device": model.device, "predicted_ms": float(model(spec)), "measured_ms": timing.median_ms,
        "budget_ms": limit, "meets_budget": None if limit is None else timing.median_ms <= limit,
    }


def print_summary(summary: dict[str, Any]) -> None:
    """Human summary: the best feasible architectures and the files written."""
    print()
    print(f"study {summary['study']}: {summary['trials']} trials, {summary['feasible_fraction']:.0%} feasible")
    if summary["top"]:
        print(format_table(summary["top"], summary.get("score_name", "accuracy")))
    else:
        print("no feasible trial yet")
    if summary.get("running_trials"):
        _, grace = heartbeat_settings()
        print(f"note: {summary['running_trials']} trial(s) still RUNNING: another worker is on them, or a run was "
              f"killed less than {grace} s ago; once their heartbeat is {grace} s old, the same command retries them")
    check = summary.get("latency_check")
    if check:
        verdict = "" if check["budget_ms"] is None else (
            f" (budget {check['budget_ms']:g} ms: {'met' if check['meets_budget'] else 'NOT met'})")
        print(f"best architecture measured on {check['device']}: {check['measured_ms']:.2f} ms, "
              f"predicted {check['predicted_ms']:.2f} ms{verdict}")
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
    prepared = prepare_study(config, announce=False)
    return {"study": config.study, "storage": prepared.resolved.storage_url,
            "planned": planned_trial_count(prepared.study), "added": prepared.added}


def run_worker(storage_url: str, study_name: str, progress: bool = True, finish: bool = True) -> dict[str, Any]:
    """Join an existing study and run its queued trials until none is left."""
    if storage_url.startswith("sqlite:///") and not Path(storage_url[len("sqlite:///"):]).is_file():
        raise UserError(f"--storage {storage_url}: no study database there; accepted: the storage of a study made by "
                        "`nas-search run --plan-only`")  # opening it would create an empty database file
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
    evaluation = _build_evaluator(checkpoint, config)
    resolved = _adopt_scoring(resolved, evaluation, checkpoint)
    study = optuna.load_study(
        study_name=study_name, storage=storage,
        sampler=make_sampler(config.sampler, seed=None, constrained=True, multi_objective=len(config.objectives) > 1),
    )
    artifact_dir = resolved.study_dir / "artifacts"
    objective = _make_objective(resolved, evaluation, artifact_dir)
    ran = work_through_queue(study, objective, progress, label=f"worker {study_name}")
    result = {"study": study_name, "storage": storage_url, "ran": ran, "feasible_fraction": feasible_fraction(study)}
    if finish and not study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
        rerank_finalists(study, resolved, checkpoint, progress)
        _finish(study, resolved, artifact_dir)
    return result
