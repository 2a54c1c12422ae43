"""What differs between tasks in the main job, in one table: how the supernet is trained
and how a subnet is scored.

``classify`` scores top-1 accuracy; ``detect`` scores mAP@0.5 (and records mAP@[.5:.95]).
Studies keep the task's primary score under the objective name ``accuracy`` (so that
samplers, summaries and exports read one key), and record the task's own metric names as
user attributes too; the study attribute ``score_name`` says what the score is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nas_search.spec import ArchSpec
from nas_search.training.checkpoint import DETECTION_SUPERNET_FORMAT, SUPERNET_FORMAT

if TYPE_CHECKING:  # pragma: no cover
    from nas_search.search.config import SearchConfig
    from nas_search.search.finalists import FinalistSettings
    from nas_search.search.runner import ResolvedSearch

#: Demo defaults per task (used when ``--data`` is not given): supernet epochs, training
#: images and proxy input size. They keep the main job within its time budget on 2 CPU cores.
DEMO_DEFAULTS: dict[str, dict[str, int]] = {
    "classify": {"epochs": 3, "max_train": 1500, "input_size": 32},
    "detect": {"epochs": 4, "max_train": 800, "input_size": 96},
}
#: BN recalibration images per scored subnet, per task (``--calibration-images`` overrides):
#: a detector's recalibration pass costs several times a classifier's.
CALIBRATION_IMAGES: dict[str, int] = {"classify": 256, "detect": 96}
#: Supernet epochs on real data (when ``--supernet-epochs`` is not given).
REAL_DATA_EPOCHS = 10
#: Finalist re-ranking defaults per task (``--finalists``, ``--finalist-epochs``), on real
#: data and on the demo. The demos have none: the detection main job must finish in 20 min
#: on 2 CPU cores, and on the classification demo 3 finalists x 2 epochs took 7.3 min (the
#: run 14.8 min instead of 7.5) to rank near-chance scores (0.10 to 0.11).
FINALIST_DEFAULTS: dict[str, dict[str, dict[str, int]]] = {
    "classify": {"real": {"count": 3, "epochs": 2}, "demo": {"count": 0, "epochs": 2}},
    "detect": {"real": {"count": 3, "epochs": 3}, "demo": {"count": 0, "epochs": 1}},
}


@dataclass
class TaskEvaluation:
    """A loaded supernet ready to score subnets.

    Attributes:
        evaluate: ``spec -> metrics``; ``metrics["accuracy"]`` is the primary score.
        num_classes: classes of the data (without background for detection).
        train_input_size: the proxy size the supernet was trained and scores at.
        metadata: the checkpoint's metadata.
        description: the dataset, in words.
    """

    evaluate: Callable[[ArchSpec], dict[str, float]]
    num_classes: int
    train_input_size: int
    metadata: dict[str, Any]
    description: str


#: ``(spec, label, run) -> {"accuracy", "loss", "seconds", ...}``: trains one finalist and
#: scores it; ``run`` (0, 1, ...) picks the training seed (``--seed`` + run), never the split.
FinalistTrainer = Callable[[ArchSpec, str, int], dict[str, float]]


@dataclass(frozen=True)
class Task:
    """The main job's task-specific parts.

    ``finalist_trainer(checkpoint, config, settings)`` loads the supernet and the search's
    data once and returns a :data:`FinalistTrainer`.
    """

    name: str
    default_space: str
    score_name: str
    train_supernet: Callable[["ResolvedSearch", Path, int], None]
    load_evaluator: Callable[[Path, "SearchConfig"], TaskEvaluation]
    checkpoint_format: str
    finalist_trainer: Callable[[Path, "SearchConfig", "FinalistSettings"], FinalistTrainer]


def _demo_value(config: "SearchConfig", key: str, given: int | None, real: int | None) -> int | None:
    return given if given is not None else (DEMO_DEFAULTS[config.task][key] if config.data is None else real)


# ------------------------------------------------------------------------ classification
def _train_classifier_supernet(resolved: "ResolvedSearch", path: Path, epochs: int) -> None:
    from nas_search.training.config import SupernetTrainConfig
    from nas_search.training.supernet_training import train_supernet

    config = resolved.config
    train_supernet(SupernetTrainConfig(
        space=resolved.space.name, data=config.data, epochs=epochs, input_size=resolved.train_input_size,
        batch_size=config.batch_size, seed=config.seed, workers=config.workers, device=config.training_device,
        max_train=_demo_value(config, "max_train", config.max_train, None), out=str(path), resume=True,
        # the demo keeps one random subnet per step for time; real data gets the default
        # (one per block kind, with FairNAS sampling)
        random_subnets=1 if config.data is None else SupernetTrainConfig.random_subnets, progress=config.progress,
        # budget-aware, as for detectors: only subnets within the FLOPs budget are trained
        max_flops=resolved.budget_flops, flops_input_size=resolved.input_size,
    ))


def _load_classifier_evaluator(checkpoint: Path, config: "SearchConfig") -> TaskEvaluation:
    from nas_search.data import load_classification_data, make_loader
    from nas_search.evaluators.classification import AccuracyEvaluator, calibration_tensor
    from nas_search.training.supernet_training import load_supernet

    supernet, metadata = load_supernet(checkpoint, device="cpu")
    data = load_classification_data(
        metadata.get("data"), input_size=metadata["input_size"], seed=config.seed, augment=False, max_val=config.max_val,
    )
    evaluator = AccuracyEvaluator(
        supernet, calibration_tensor(data.train, config.calibration_images or CALIBRATION_IMAGES["classify"], config.seed),
        make_loader(data.val, batch_size=128, shuffle=False, seed=config.seed, num_workers=0), device="cpu",
    )
    return TaskEvaluation(
        evaluate=lambda spec: {"accuracy": evaluator(spec).accuracy},
        num_classes=metadata["num_classes"], train_input_size=metadata["input_size"], metadata=metadata,
        description=data.description,
    )


def _classifier_finalist_trainer(checkpoint: Path, config: "SearchConfig", settings: "FinalistSettings") -> FinalistTrainer:
    import torch

    from nas_search.data import load_classification_data
    from nas_search.spaces.static import build_static_model
    from nas_search.training.distributed import resolve_device
    from nas_search.training.finalist_training import FINALIST_RECIPES, train_classifier_finalist
    from nas_search.training.supernet_training import load_supernet

    supernet, metadata = load_supernet(checkpoint, device="cpu")
    # the split is the evaluator's (same seed and max_val); the training half is augmented
    data = load_classification_data(
        metadata.get("data"), input_size=settings.input_size, seed=config.seed, augment=True, max_val=config.max_val,
        max_train=_demo_value(config, "max_train", config.max_train, None),
    )
    device, recipe = resolve_device(config.training_device), FINALIST_RECIPES[("classify", settings.init)]

    def train(spec: ArchSpec, label: str, run: int = 0) -> dict[str, float]:
        torch.manual_seed(config.seed + run)
        model = (supernet.extract(spec) if settings.init == "inherited"
                 else build_static_model(supernet.space.resolve(spec, num_classes=supernet.num_classes)))
        return train_classifier_finalist(model.to(device), data, recipe, settings.epochs, config.seed + run, label,
                                         device, config.progress)

    return train


# ------------------------------------------------------------------------ detection
def _train_detector_supernet(resolved: "ResolvedSearch", path: Path, epochs: int) -> None:
    from nas_search.training.detection_training import DetectionSupernetTrainConfig, train_detection_supernet

    config = resolved.config
    train_detection_supernet(DetectionSupernetTrainConfig(
        space=resolved.space.name, data=config.data, epochs=epochs, image_size=resolved.train_input_size,
        batch_size=16, seed=config.seed, workers=config.workers or 0, device=config.training_device,
        # FCOS from scratch on small data: AdamW at 5e-4 (with the old ReLU box output, SGD at
        # 1e-2 and AdamW at 2e-3 left the box loss flat; with the exp box output 5e-4 and 2e-3
        # give alike proxy mAP@0.5 on raccoon after 8 epochs at 96 px: 0.22 and 0.23 over 6 subnets)
        optimizer="adamw", learning_rate=5e-4, weight_decay=1e-4,
        max_train=_demo_value(config, "max_train", config.max_train, None), out=str(path), resume=True,
        random_subnets=1, progress=config.progress,
        # budget-aware: only subnets within the FLOPs budget are trained (the search never
        # looks above it), which on a CPU makes the sandwich several times cheaper
        max_flops=resolved.budget_flops, flops_input_size=resolved.input_size,
    ))


def _load_detector_evaluator(checkpoint: Path, config: "SearchConfig") -> TaskEvaluation:
    from nas_search.data.detection import load_detection_data, make_detection_loader
    from nas_search.evaluators.detection import DetectionEvaluator, detection_calibration_batches
    from nas_search.training.detection_training import load_detection_supernet

    supernet, metadata = load_detection_supernet(checkpoint, device="cpu")
    image_size = int(metadata["image_size"])
    data = load_detection_data(metadata.get("data"), input_size=image_size, seed=config.seed, augment=False,
                               max_val=config.max_val, resize=supernet.resize)
    evaluator = DetectionEvaluator(
        supernet,
        detection_calibration_batches(data.train, config.calibration_images or CALIBRATION_IMAGES["detect"], batch_size=16,
                                      seed=config.seed),
        make_detection_loader(data.val, batch_size=16, shuffle=False, seed=config.seed), device="cpu",
    )

    def evaluate(spec: ArchSpec) -> dict[str, float]:
        result = evaluator(spec)
        return {"accuracy": result.map50, "map50": result.map50, "map": result.map}

    return TaskEvaluation(
        evaluate=evaluate, num_classes=int(metadata["num_classes"]), train_input_size=image_size,
        metadata={**metadata, "input_size": image_size}, description=data.description,
    )


def _detector_finalist_trainer(checkpoint: Path, config: "SearchConfig", settings: "FinalistSettings") -> FinalistTrainer:
    import torch

    from nas_search.data.detection import load_detection_data
    from nas_search.detection.static import build_detector
    from nas_search.training.detection_training import load_detection_supernet
    from nas_search.training.distributed import resolve_device
    from nas_search.training.finalist_training import FINALIST_RECIPES, train_detector_finalist

    supernet, metadata = load_detection_supernet(checkpoint, device="cpu")
    data = load_detection_data(
        metadata.get("data"), input_size=settings.input_size, seed=config.seed, augment=True, max_val=config.max_val,
        max_train=_demo_value(config, "max_train", config.max_train, None), resize=supernet.resize,
    )
    device, recipe = resolve_device(config.training_device), FINALIST_RECIPES[("detect", settings.init)]

    def train(spec: ArchSpec, label: str, run: int = 0) -> dict[str, float]:
        torch.manual_seed(config.seed + run)
        if settings.init == "inherited":
            model = supernet.extract(spec)
            model.set_image_size(settings.input_size)
        else:
            model = build_detector(spec, int(metadata["num_classes"]), settings.input_size, resize=supernet.resize,
                                   **supernet.detector_options)
        return train_detector_finalist(model.to(device), data, recipe, settings.epochs, config.seed + run, label,
                                       device, config.progress)

    return train


TASKS: dict[str, Task] = {
    "classify": Task("classify", "mobile", "top-1 accuracy", _train_classifier_supernet, _load_classifier_evaluator,
                     SUPERNET_FORMAT, _classifier_finalist_trainer),
    "detect": Task("detect", "detect", "mAP@0.5", _train_detector_supernet, _load_detector_evaluator,
                   DETECTION_SUPERNET_FORMAT, _detector_finalist_trainer),
}


def get_task(name: str) -> Task:
    """The task called ``name``; :class:`UserError` listing the tasks otherwise."""
    from nas_search.errors import UserError

    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; accepted: {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["CALIBRATION_IMAGES", "DEMO_DEFAULTS", "FINALIST_DEFAULTS", "FinalistTrainer", "REAL_DATA_EPOCHS", "TASKS", "Task", "TaskEvaluation", "get_task"]
