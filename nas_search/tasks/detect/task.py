"""The ``detect`` task of the main job: supernet training, scoring by mAP@0.5 with
inherited weights (mAP@[.5:.95] recorded too), and finalist training."""

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
from nas_search.tasks.detect.export import export_detector, load_exported_detector
from nas_search.training.checkpoint import DETECTION_SUPERNET_FORMAT


def train_detector_supernet(job: SupernetJob) -> None:
    """Train (or resume) a detection supernet for the search."""
    from nas_search.tasks.detect.supernet_training import DetectionSupernetTrainConfig, train_detection_supernet

    train_detection_supernet(
        DetectionSupernetTrainConfig(
            space=job.space,
            data=job.data,
            epochs=job.epochs,
            image_size=job.input_size,
            batch_size=16,
            seed=job.seed,
            workers=job.workers or 0,
            device=job.device,
            # FCOS from scratch on small data: AdamW at 5e-4 (benchmarks/RESULTS.md)
            optimizer="adamw",
            learning_rate=5e-4,
            weight_decay=1e-4,
            max_train=job.max_train,
            out=str(job.path),
            resume=True,
            random_subnets=1,
            progress=job.progress,
            # budget-aware: only subnets within the FLOPs budget are trained (the search never
            # looks above it), which on a CPU makes the sandwich several times cheaper
            max_flops=job.max_flops,
            flops_input_size=job.flops_input_size,
        )
    )


def load_detector_evaluator(checkpoint: Path, settings: ScoringSettings) -> TaskEvaluation:
    """The supernet at ``checkpoint`` with its data, scoring subnets by mAP@0.5."""
    from nas_search.tasks.detect.data import load_detection_data, make_detection_loader
    from nas_search.tasks.detect.evaluate import DetectionEvaluator, detection_calibration_batches
    from nas_search.tasks.detect.supernet_training import load_detection_supernet

    supernet, metadata = load_detection_supernet(checkpoint, device="cpu")
    image_size = int(metadata["image_size"])
    data = load_detection_data(
        metadata.get("data"),
        input_size=image_size,
        seed=settings.seed,
        augment=False,
        max_val=settings.max_val,
        resize=supernet.resize,
    )
    evaluator = DetectionEvaluator(
        supernet,
        detection_calibration_batches(data.train, settings.calibration_images, batch_size=16, seed=settings.seed),
        make_detection_loader(data.val, batch_size=16, shuffle=False, seed=settings.seed),
        device="cpu",
    )

    def evaluate(spec: ArchSpec) -> dict[str, float]:
        result = evaluator(spec)
        return {"accuracy": result.map50, "map50": result.map50, "map": result.map}

    return TaskEvaluation(
        evaluate=evaluate,
        num_classes=int(metadata["num_classes"]),
        train_input_size=image_size,
        metadata={**metadata, "input_size": image_size},
        description=data.description,
        validation_images=len(cast(Sized, data.val)),
        chance_score=0.0,
    )


def detector_finalist_trainer(checkpoint: Path, settings: ScoringSettings, job: FinalistJob) -> FinalistTrainer:
    """Loads the supernet and the search's split once; returns the finalist trainer."""
    import torch

    from nas_search.tasks.detect.build import build_detector
    from nas_search.tasks.detect.data import load_detection_data
    from nas_search.tasks.detect.finalist import train_detector_finalist
    from nas_search.tasks.detect.supernet_training import load_detection_supernet
    from nas_search.training.distributed import resolve_device
    from nas_search.training.finalist import FINALIST_RECIPES

    supernet, metadata = load_detection_supernet(checkpoint, device="cpu")
    data = load_detection_data(
        metadata.get("data"),
        input_size=job.input_size,
        seed=settings.seed,
        augment=True,
        max_val=settings.max_val,
        max_train=settings.max_train,
        resize=supernet.resize,
    )
    device, recipe = resolve_device(settings.device), FINALIST_RECIPES[("detect", job.init)]

    def train(spec: ArchSpec, label: str, run: int = 0) -> dict[str, float]:
        torch.manual_seed(settings.seed + run)
        if job.init == "inherited":
            model = supernet.extract(spec)
            model.set_image_size(job.input_size)
        else:
            model = build_detector(
                spec, int(metadata["num_classes"]), job.input_size, resize=supernet.resize, **supernet.detector_options
            )
        return train_detector_finalist(
            model.to(device), data, recipe, job.epochs, settings.seed + run, label, device, settings.progress
        )

    return train


def detector_reference(spec: ArchSpec, space: SearchSpace, num_classes: int | None) -> nn.Module:
    """The plain detector module of ``spec`` without its transform and post-processing
    (randomly initialised)."""
    from nas_search.tasks.detect.build import build_detector

    return build_detector(spec, num_classes or space.num_classes).core()


def train_detector_standalone(path: str | Path, **options: Any) -> dict[str, Any]:
    """Train the detector of a ``train.yaml`` (:func:`.standalone.train_detection_standalone`)."""
    from nas_search.tasks.detect.standalone import train_detection_standalone

    return train_detection_standalone(path, **options)


def describe_detector_training(result: dict[str, Any]) -> str:
    """One line: the final mAP and where the weights are."""
    return (
        f"final mAP@0.5 {result['map50']:.4f} (mAP@[.5:.95] {result['map']:.4f}) after "
        f"{result['epochs']} epochs; weights {result['weights']}, checkpoint {result['checkpoint']}"
    )


#: BN recalibration images of a detector's ``eval`` at most (a detector's pass costs several
#: times a classifier's).
EVALUATION_CALIBRATION_CAP = 256


def evaluate_detector(
    checkpoint: str, arch: Any, data: str | None = None, *, calibration_images: int = 256, **options: Any
) -> dict[str, Any]:
    """mAP of one architecture with inherited supernet weights (calibration images capped
    at :data:`EVALUATION_CALIBRATION_CAP`)."""
    from nas_search.tasks.detect.evaluate import evaluate_detector_checkpoint

    return evaluate_detector_checkpoint(
        checkpoint, arch, data, calibration_images=min(calibration_images, EVALUATION_CALIBRATION_CAP), **options
    )


def describe_detector_evaluation(result: dict[str, Any]) -> str:
    """One line: mAP, images, FLOPs and params."""
    from nas_search.units import format_count, format_flops

    return (
        f"mAP@0.5 {result['map50']:.4f}, mAP@[.5:.95] {result['map']:.4f} on {result['images']} images  |  "
        f"{format_flops(result['flops'])} at {result['input_size']} px  |  {format_count(result['params'])} params"
    )


#: The detect task. The demo has no finalists: its main job must finish in 20 min on 2 CPU
#: cores. A detector's BN recalibration pass costs several times a classifier's, hence
#: fewer calibration images.
DETECT = Task(
    name="detect",
    default_space="detect",
    score_name="mAP@0.5",
    checkpoint_format=DETECTION_SUPERNET_FORMAT,
    data_forms="a Pascal VOC, COCO JSON or YOLO folder",
    demo=DemoDefaults(epochs=4, max_train=800, input_size=96),
    calibration_images=96,
    finalists={"real": FinalistDefaults(count=3, epochs=3), "demo": FinalistDefaults(count=0, epochs=1)},
    train_supernet=train_detector_supernet,
    load_evaluator=load_detector_evaluator,
    finalist_trainer=detector_finalist_trainer,
    reference_model=detector_reference,
    export_model=export_detector,
    load_exported=load_exported_detector,
    train_standalone=train_detector_standalone,
    describe_trained=describe_detector_training,
    evaluate_checkpoint=evaluate_detector,
    describe_evaluation=describe_detector_evaluation,
    score_key="map50",
    finalist_size_multiple=32,
)
