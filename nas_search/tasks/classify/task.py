"""The ``classify`` task of the main job: supernet training, scoring by top-1 accuracy
with inherited weights, and finalist training."""

from __future__ import annotations

from collections.abc import Sized
from pathlib import Path
from typing import Any, cast

from torch import nn

from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec
from nas_search.tasks.base import (
    DemoDefaults,
    FinalistDefaults,
    FinalistJob,
    FinalistTrainer,
    ScoringSettings,
    SupernetJob,
    Task,
    TaskEvaluation,
)
from nas_search.tasks.classify.export import export_classifier, load_exported_classifier
from nas_search.training.checkpoint import SUPERNET_FORMAT


def train_classifier_supernet(job: SupernetJob) -> None:
    """Train (or resume) a classifier supernet for the search."""
    from nas_search.tasks.classify.supernet_training import train_supernet
    from nas_search.training.config import SupernetTrainConfig

    train_supernet(
        SupernetTrainConfig(
            space=job.space,
            data=job.data,
            epochs=job.epochs,
            input_size=job.input_size,
            batch_size=job.batch_size,
            seed=job.seed,
            workers=job.workers,
            device=job.device,
            max_train=job.max_train,
            out=str(job.path),
            resume=True,
            # the demo keeps one random subnet per step for time; real data gets the default
            # (one per block kind, with FairNAS sampling)
            random_subnets=1 if job.data is None else SupernetTrainConfig.random_subnets,
            progress=job.progress,
            # budget-aware, as for detectors: only subnets within the FLOPs budget are trained
            max_flops=job.max_flops,
            flops_input_size=job.flops_input_size,
        )
    )


def load_classifier_evaluator(checkpoint: Path, settings: ScoringSettings) -> TaskEvaluation:
    """The supernet at ``checkpoint`` with its data, scoring subnets by top-1 accuracy."""
    from nas_search.tasks.classify.data import load_classification_data, make_loader
    from nas_search.tasks.classify.evaluate import AccuracyEvaluator, calibration_tensor
    from nas_search.tasks.classify.supernet_training import load_supernet

    supernet, metadata = load_supernet(checkpoint, device="cpu")
    data = load_classification_data(
        metadata.get("data"), input_size=metadata["input_size"], seed=settings.seed, augment=False, max_val=settings.max_val
    )
    evaluator = AccuracyEvaluator(
        supernet,
        calibration_tensor(data.train, settings.calibration_images, settings.seed),
        make_loader(data.val, batch_size=128, shuffle=False, seed=settings.seed, num_workers=0),
        device="cpu",
    )
    return TaskEvaluation(
        evaluate=lambda spec: {"accuracy": evaluator(spec).accuracy},
        num_classes=metadata["num_classes"],
        train_input_size=metadata["input_size"],
        metadata=metadata,
        description=data.description,
        validation_images=len(cast(Sized, data.val)),
        chance_score=1.0 / metadata["num_classes"],
    )


def classifier_finalist_trainer(checkpoint: Path, settings: ScoringSettings, job: FinalistJob) -> FinalistTrainer:
    """Loads the supernet and the search's split once; returns the finalist trainer."""
    import torch

    from nas_search.spaces.static import build_static_model
    from nas_search.tasks.classify.data import load_classification_data
    from nas_search.tasks.classify.finalist import train_classifier_finalist
    from nas_search.tasks.classify.supernet_training import load_supernet
    from nas_search.training.distributed import resolve_device
    from nas_search.training.finalist import FINALIST_RECIPES

    supernet, metadata = load_supernet(checkpoint, device="cpu")
    # the split is the evaluator's (same seed and max_val); the training half is augmented
    data = load_classification_data(
        metadata.get("data"),
        input_size=job.input_size,
        seed=settings.seed,
        augment=True,
        max_val=settings.max_val,
        max_train=settings.max_train,
    )
    device, recipe = resolve_device(settings.device), FINALIST_RECIPES[("classify", job.init)]

    def train(spec: ArchSpec, label: str, run: int = 0) -> dict[str, float]:
        torch.manual_seed(settings.seed + run)
        model = (
            supernet.extract(spec)
            if job.init == "inherited"
            else build_static_model(supernet.space.resolve(spec, num_classes=supernet.num_classes))
        )
        return train_classifier_finalist(
            model.to(device), data, recipe, job.epochs, settings.seed + run, label, device, settings.progress
        )

    return train


def classifier_reference(spec: ArchSpec, space: SearchSpace, num_classes: int | None) -> nn.Module:
    """The standalone classifier of ``spec`` (randomly initialised)."""
    from nas_search.spaces.static import build_static_model

    return build_static_model(space.resolve(spec, num_classes=num_classes))


def train_classifier_standalone(path: str | Path, **options: Any) -> dict[str, Any]:
    """Train the classifier of a ``train.yaml`` (:func:`.standalone.train_standalone`)."""
    from nas_search.tasks.classify.standalone import train_standalone

    return train_standalone(path, **options)


def describe_classifier_training(result: dict[str, Any]) -> str:
    """One line: the final accuracy and where the weights are."""
    return (
        f"final top-1 accuracy {result['accuracy']:.4f} after {result['epochs']} epochs; "
        f"weights {result['weights']}, checkpoint {result['checkpoint']}"
    )


def evaluate_classifier_checkpoint(checkpoint: str, arch: Any, data: str | None = None, **options: Any) -> dict[str, Any]:
    """Top-1 accuracy of one architecture with inherited supernet weights."""
    from nas_search.tasks.classify.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, arch, data, **options)


def describe_classifier_evaluation(result: dict[str, Any]) -> str:
    """One line: accuracy, images, FLOPs, params and the architecture."""
    from nas_search.units import format_count, format_flops

    return (
        f"accuracy {result['accuracy']:.4f} on {result['images']} images  |  {format_flops(result['flops'])} at "
        f"{result['input_size']} px  |  {format_count(result['params'])} params  |  {result['arch']}"
    )


#: The classify task. On the demo, finalists would about double the run's time to rank
#: near-chance scores (``benchmarks/RESULTS.md``), hence none there.
CLASSIFY = Task(
    name="classify",
    default_space="mobile",
    score_name="top-1 accuracy",
    checkpoint_format=SUPERNET_FORMAT,
    data_forms="an ImageFolder root (train/ + val/ or test/, or one folder of class folders)",
    demo=DemoDefaults(epochs=3, max_train=1500, input_size=32),
    calibration_images=256,
    finalists={"real": FinalistDefaults(count=3, epochs=2), "demo": FinalistDefaults(count=0, epochs=2)},
    train_supernet=train_classifier_supernet,
    load_evaluator=load_classifier_evaluator,
    finalist_trainer=classifier_finalist_trainer,
    reference_model=classifier_reference,
    export_model=export_classifier,
    load_exported=load_exported_classifier,
    train_standalone=train_classifier_standalone,
    describe_trained=describe_classifier_training,
    evaluate_checkpoint=evaluate_classifier_checkpoint,
    describe_evaluation=describe_classifier_evaluation,
)
