"""Every default of the main job (``nas-search run``), in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from nas_search.tasks import get_task
from nas_search.tasks.base import ScoringSettings

#: Objectives a study can optimise, and their directions.
OBJECTIVE_DIRECTIONS: dict[str, str] = {
    "accuracy": "maximize",
    "flops": "minimize",
    "params": "minimize",
    "latency": "minimize",
}

#: How each objective is named in the study (``study.set_metric_names``: the dashboard's
#: axes and columns); ``accuracy`` is named by the task (``Task.score_name``).
OBJECTIVE_METRIC_NAMES: dict[str, str] = {"flops": "FLOPs", "params": "parameters", "latency": "latency (ms)"}


@dataclass
class SearchConfig:
    """Options of ``nas-search run``. ``None`` means "derive from the space or data".

    Budgets are upper bounds (constraints). ``min_utilization`` adds a lower bound on
    FLOPs as a fraction of the FLOPs budget: with a budget, users want the most accurate
    model *at* that cost, and on small proxy data the accuracy signal alone is too weak
    to push the search to the budget. Set it to 0 to turn it off.
    """

    task: str = "classify"  # classify | detect (nas_search.tasks)
    space: str | None = None
    data: str | None = None
    input_size: int | None = None  # deployment size (FLOPs are counted here)
    train_input_size: int | None = None  # proxy size for supernet training and scoring
    budget: str | None = None  # FLOPs, e.g. "4.5GFLOPs"
    params: str | None = None  # parameter budget, e.g. "5M"
    latency: str | None = None  # e.g. "15ms" (needs --device)
    device: str | None = None  # latency device (`nas-search devices`); its latency is recorded per trial
    lut: str | None = None  # latency table of a user device (with --device NAME)
    runtime: str | None = None  # runtime of a local device (onnxruntime, torch)
    threads: int | None = None  # threads of a local device's table
    memory: str | None = None  # peak activation memory, e.g. "20MB"
    min_utilization: float = 0.8
    trials: int = 30
    startup_trials: int = 10  # budget-aware random trials before the sampler takes over
    study: str = "nas-search"
    storage: str | None = None  # default sqlite:///studies/<study>.db
    sampler: str = "tpe"
    objectives: tuple[str, ...] = ("accuracy",)
    supernet: str | None = None  # reuse this checkpoint instead of training
    supernet_epochs: int | None = None  # None: 3 on the demo data, 10 otherwise
    batch_size: int = 64
    max_train: int | None = None  # None: 1500 on the demo data, all otherwise
    calibration_images: int | None = None  # BN recalibration images per trial; None: 256 (classify), 96 (detect)
    finalists: int | None = None  # best trials re-ranked by short training; None: task default, 0: off
    finalist_epochs: int | None = None  # None: task default (Task.finalists)
    finalist_input_size: int | None = None  # None: the proxy size
    finalist_init: str = "inherited"  # inherited | scratch
    finalist_seeds: int = 1  # training runs per finalist (seeds --seed, --seed + 1, ...), averaged
    max_val: int | None = 300
    seed: int = 0
    workers: int | None = None
    training_device: str = "auto"
    studies_dir: str = "studies"
    progress: bool = True


def demo_max_train(config: SearchConfig) -> int | None:
    """Training images: as given, else the task's demo default on the demo, else all."""
    if config.max_train is not None or config.data is not None:
        return config.max_train
    return get_task(config.task).demo.max_train


def metric_names(config: SearchConfig) -> list[str]:
    """The study's metric names, one per objective (the task's score name for ``accuracy``)."""
    return [
        get_task(config.task).score_name if name == "accuracy" else OBJECTIVE_METRIC_NAMES[name] for name in config.objectives
    ]


def scoring_settings(config: SearchConfig) -> ScoringSettings:
    """How the search's subnets are scored and its finalists trained."""
    return ScoringSettings(
        seed=config.seed,
        max_val=config.max_val,
        max_train=demo_max_train(config),
        calibration_images=config.calibration_images or get_task(config.task).calibration_images,
        device=config.training_device,
        progress=config.progress,
    )
