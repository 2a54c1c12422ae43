"""mAP of a detector subnet with inherited weights, after BN recalibration.

The detection counterpart of :mod:`nas_search.tasks.classify.evaluate`. A subnet is
extracted from the detection supernet as a standalone torchvision detector (a copy), its
BN statistics are re-estimated on a few hundred calibration images, and it is scored with
COCO mAP (torchmetrics ``MeanAveragePrecision``, pycocotools backend). The supernet is not
modified.

BN recalibration is the package's one precise-BN routine
(:mod:`nas_search.evaluators.batchnorm`, after fvcore's ``precise_bn``, shared with the
classification task): nothing but the BN running statistics changes. A torchvision
detector cannot run its full forward in train mode without targets, so recalibration
runs its trunk instead: ``transform`` (resize, normalise, pad), ``backbone`` (with the
neck) and ``head``; that is where all its BN layers sit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from nas_search.evaluators.batchnorm import precise_batch_norm
from nas_search.spec import ArchSpec

if TYPE_CHECKING:
    from nas_search.tasks.detect.supernet import DetectionSupernet

DetectorForward = Callable[[nn.Module, list[torch.Tensor]], Any]


def run_detector_trunk(model: nn.Module, images: list[torch.Tensor]) -> Any:
    """Run a torchvision-style detector's ``transform``, ``backbone`` and (if present)
    ``head`` on a list of images, without targets, in whatever mode the model is in.

    This is the part of FCOS, RetinaNet and SSD that holds their BN layers; the losses
    and the post-processing, which need targets or eval mode, are skipped. A model without
    ``transform`` and ``backbone`` attributes is called as ``model(images, targets)`` with
    empty targets instead.
    """
    if not (hasattr(model, "transform") and hasattr(model, "backbone")):
        empty = [
            {"boxes": torch.zeros(0, 4, device=image.device), "labels": torch.zeros(0, dtype=torch.int64, device=image.device)}
            for image in images
        ]
        return model(images, empty)
    image_list, _ = cast(nn.Module, model.transform)(images)
    features = cast(nn.Module, model.backbone)(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    head = getattr(model, "head", None)
    return head(list(features.values())) if head is not None else features


def recalibrate_detection_batch_norm(
    model: nn.Module,
    batches: Iterable[Sequence[torch.Tensor]],
    device: torch.device | str = "cpu",
    forward: DetectorForward = run_detector_trunk,
) -> int:
    """Re-estimate every BN layer's running mean and variance of a detector as the average,
    over ``batches`` (each a list of image tensors [3, H, W]), of the batch statistics,
    with :func:`nas_search.evaluators.batchnorm.precise_batch_norm`.

    ``forward(model, images)`` runs the network (default: :func:`run_detector_trunk`).
    Nothing but ``running_mean`` and ``running_var`` changes: the hooks are removed and the
    momenta, ``num_batches_tracked`` and each module's train/eval flag are restored (even
    when ``forward`` raises). Returns the number of batches used (0 leaves the model as it
    was).
    """
    return precise_batch_norm(model, batches, lambda network, images: forward(network, [image.to(device) for image in images]))


def _plain_target(target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        "boxes": target["boxes"].detach().float().cpu().reshape(-1, 4),
        "labels": target["labels"].detach().to(torch.int64).cpu().reshape(-1),
    }


@torch.no_grad()
def detector_outputs(
    model: nn.Module, loader: Iterable, device: torch.device | str = "cpu"
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Per-image ``(predictions, targets)`` of a detector over a loader of ``(images,
    targets)`` batches, on the CPU, with the model in eval mode (its previous mode restored)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    predictions: list[dict[str, torch.Tensor]] = []
    targets: list[dict[str, torch.Tensor]] = []
    try:
        for images, batch_targets in loader:
            outputs = model([image.to(device) for image in images])
            predictions += [
                {
                    "boxes": output["boxes"].detach().float().cpu().reshape(-1, 4),
                    "scores": output["scores"].detach().float().cpu().reshape(-1),
                    "labels": output["labels"].detach().to(torch.int64).cpu().reshape(-1),
                }
                for output in outputs
            ]
            targets += [_plain_target(target) for target in batch_targets]
    finally:
        for module, training in modes:
            module.training = training
    return predictions, targets


def map_scores(
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    iou_thresholds: list[float] | None = None,
) -> dict[str, float]:
    """COCO box mAPs of per-image predictions against their targets: ``map``
    (mAP@[.5:.95]), ``map50``, ``map75`` and ``images``. Following COCO, at most the 100
    highest-scoring detections of an image count, and the mAPs are -1.0 when no image
    holds a ground-truth box."""
    from torchmetrics.detection import MeanAveragePrecision

    if not targets:
        return {"map": -1.0, "map50": -1.0, "map75": -1.0, "images": 0}
    metric = MeanAveragePrecision(iou_type="bbox", box_format="xyxy", backend="pycocotools", iou_thresholds=iou_thresholds)
    metric.warn_on_many_detections = False  # COCO keeps each image's 100 best; detectors may return more
    metric.update(list(predictions), list(targets))
    scores = metric.compute()
    return {
        "map": float(scores["map"]),
        "map50": float(scores["map_50"]),
        "map75": float(scores["map_75"]),
        "images": len(targets),
    }


#: IoU thresholds a bootstrapped score needs (None: COCO's ten).
SCORE_THRESHOLDS: dict[str, list[float] | None] = {"map50": [0.5], "map75": [0.75], "map": None}


def bootstrap_standard_error(
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    resamples: int = 100,
    seed: int = 0,
    score: str = "map50",
) -> float:
    """Standard error of an mAP from the spread of its value over ``resamples`` bootstrap
    resamples of the images (drawn with replacement, each as large as the set): how much
    the score would move on another validation set of this size. Resamples without a
    ground-truth box are skipped; 0.0 when fewer than two remain."""
    import random
    import statistics

    rng = random.Random(seed)
    count, values = len(targets), []
    for _ in range(resamples):
        chosen = [rng.randrange(count) for _ in range(count)] if count else []
        if not any(targets[index]["boxes"].numel() for index in chosen):
            continue
        # only the IoU thresholds the score needs (mAP@0.5: one instead of ten, several times faster)
        values.append(
            map_scores(
                [predictions[index] for index in chosen], [targets[index] for index in chosen], SCORE_THRESHOLDS.get(score)
            )[score]
        )
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_average_precision(
    model: nn.Module, loader: Iterable, device: torch.device | str = "cpu", bootstrap: int = 0
) -> dict[str, float]:
    """COCO box mAP of a detector over a loader of ``(images, targets)`` batches (lists, as
    from ``detection_collate``), with the model in eval mode (its previous mode restored).

    Returns ``map`` (mAP@[.5:.95]), ``map50``, ``map75`` and ``images`` (how many were
    scored), as :func:`map_scores`; with ``bootstrap`` resamples also ``map50_error``, the
    bootstrap standard error of ``map50`` (:func:`bootstrap_standard_error`).
    """
    predictions, targets = detector_outputs(model, loader, device)
    scores = map_scores(predictions, targets)
    if bootstrap and targets:
        scores["map50_error"] = bootstrap_standard_error(predictions, targets, bootstrap)
    return scores


@dataclass(frozen=True)
class DetectionResult:
    """mAP of one subnet (inherited weights, recalibrated BN)."""

    arch: str
    map50: float
    map: float
    map75: float
    images: int


def detection_calibration_batches(dataset, count: int, batch_size: int = 16, seed: int = 0) -> list[list[torch.Tensor]]:
    """``count`` images drawn (seeded) from a detection dataset, as lists of at most
    ``batch_size`` image tensors (targets are not needed for BN recalibration)."""
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[: min(count, len(dataset))].tolist()
    images = [dataset[index][0] for index in indices]
    return [images[start : start + batch_size] for start in range(0, len(images), batch_size)]


class DetectionEvaluator:
    """Scores subnets of a detection supernet with inherited weights; results are cached
    by architecture key.

    Args:
        supernet: a trained ``DetectionSupernet`` (not modified); ``extract(spec)`` must
            return a standalone torchvision detector.
        calibration_batches: lists of training images for BN recalibration (see
            :func:`detection_calibration_batches`).
        loader: ``(images, targets)`` validation batches to score on.
        device: where the extracted subnet runs.
    """

    def __init__(
        self,
        supernet: DetectionSupernet,
        calibration_batches: Sequence[Sequence[torch.Tensor]],
        loader: Iterable,
        device: torch.device | str = "cpu",
    ) -> None:
        self.supernet, self.calibration_batches = supernet, calibration_batches
        self.loader, self.device = loader, device
        self.cache: dict[str, DetectionResult] = {}

    def extract_calibrated(self, spec: ArchSpec) -> nn.Module:
        """The standalone detector of ``spec`` with recalibrated BN statistics, in eval mode."""
        model = self.supernet.extract(spec).to(self.device)
        recalibrate_detection_batch_norm(model, self.calibration_batches, self.device)
        return model.eval()

    def __call__(self, spec: ArchSpec) -> DetectionResult:
        key = spec.key
        if key not in self.cache:
            scores = mean_average_precision(self.extract_calibrated(spec), self.loader, self.device)
            self.cache[key] = DetectionResult(key, scores["map50"], scores["map"], scores["map75"], cast(int, scores["images"]))
        return self.cache[key]


def evaluate_detector_checkpoint(
    checkpoint: str,
    arch,
    data: str | None = None,
    *,
    calibration_images: int = 256,
    max_val: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """mAP (inherited weights, recalibrated BN) of ``arch`` in a detection supernet
    checkpoint, scored at the checkpoint's training image size (``eval_input_size``), with
    its FLOPs and params counted at the space's deployment size (``input_size``); the data
    defaults to what the supernet was trained on."""
    from nas_search.errors import UserError
    from nas_search.spec import load_arch
    from nas_search.tasks.detect.data import load_detection_data, make_detection_loader
    from nas_search.tasks.detect.supernet_training import load_detection_supernet

    spec = arch if isinstance(arch, ArchSpec) else load_arch(arch)
    supernet, metadata = load_detection_supernet(checkpoint, device=device)
    if spec.space != metadata["space"]:
        raise UserError(f"architecture is for space {spec.space!r} but checkpoint {checkpoint} is for {metadata['space']!r}")
    data_dir = data if data is not None else metadata.get("data")
    dataset = load_detection_data(
        data_dir, input_size=metadata["image_size"], seed=seed, max_val=max_val, augment=False, resize=supernet.resize
    )
    if len(dataset.classes) != metadata["num_classes"]:
        raise UserError(f"data has {len(dataset.classes)} classes, checkpoint {checkpoint} has {metadata['num_classes']}")
    evaluator = DetectionEvaluator(
        supernet,
        detection_calibration_batches(dataset.train, calibration_images, batch_size, seed),
        make_detection_loader(dataset.val, batch_size=batch_size, shuffle=False, seed=seed, num_workers=0),
        device,
    )
    result = evaluator(spec)
    from nas_search.tasks.detect.cost import count_detection

    cost = count_detection(spec, supernet.space, supernet.space.input_size, metadata["num_classes"])
    return {
        "map50": result.map50,
        "map": result.map,
        "map75": result.map75,
        "flops": cost.flops,
        "params": cost.params,
        "arch": str(spec),
        "images": result.images,
        "input_size": supernet.space.input_size,
        "eval_input_size": metadata["image_size"],
        "resize": supernet.resize,
    }
