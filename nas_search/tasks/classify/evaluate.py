"""Top-1 accuracy of a subnet with inherited weights, after BN recalibration.

The subnet is extracted from the supernet (a copy), its BN statistics are re-estimated on
a few hundred calibration images, and it is evaluated. The supernet is not modified.
BN recalibration is the package's one precise-BN routine
(:mod:`nas_search.evaluators.batchnorm`, after fvcore's ``precise_bn``), shared with the
detection task.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from nas_search.evaluators.batchnorm import precise_batch_norm
from nas_search.spaces.supernet import Supernet
from nas_search.spec import ArchSpec


def recalibrate_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu") -> int:
    """Re-estimate every BN's running mean and variance as the average over ``batches``
    (image tensors) of the batch statistics, with
    :func:`nas_search.evaluators.batchnorm.precise_batch_norm`. Returns the number of
    batches used. Nothing but the running statistics changes: the hooks are removed and
    every module's train/eval mode, the BN momenta and ``num_batches_tracked`` restored."""
    return precise_batch_norm(model, batches, lambda network, images: network(images.to(device)))


@torch.no_grad()
def top1_accuracy(model: nn.Module, loader: Iterable, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of ``model`` (in eval mode) over a loader of (images, labels)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for images, labels in loader:
            predictions = model(images.to(device)).argmax(1).cpu()
            correct += int((predictions == labels).sum())
            total += labels.numel()
    finally:
        model.train(was_training)
    return correct / max(total, 1)


@dataclass(frozen=True)
class AccuracyResult:
    """Accuracy of one subnet."""

    arch: str
    accuracy: float
    images: int


class AccuracyEvaluator:
    """Scores subnets of a supernet with inherited weights; results are cached by
    architecture key.

    Args:
        supernet: a trained supernet (not modified).
        calibration_images: a tensor (N, C, H, W) of training images for BN recalibration.
        validation_loader: (images, labels) batches to score on.
        batch_size: calibration batch size.
    """

    def __init__(
        self,
        supernet: Supernet,
        calibration_images: torch.Tensor,
        validation_loader: Iterable,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
    ) -> None:
        self.supernet, self.calibration_images = supernet, calibration_images
        self.validation_loader, self.batch_size, self.device = validation_loader, batch_size, device
        self.cache: dict[str, AccuracyResult] = {}

    def extract_calibrated(self, spec: ArchSpec) -> nn.Module:
        """The standalone subnet with recalibrated BN statistics."""
        model = self.supernet.extract(spec).to(self.device)
        batches = self.calibration_images.split(self.batch_size)
        recalibrate_batch_norm(model, batches, self.device)
        return model.eval()

    def __call__(self, spec: ArchSpec) -> AccuracyResult:
        key = spec.key
        if key not in self.cache:
            model = self.extract_calibrated(spec)
            accuracy = top1_accuracy(model, self.validation_loader, self.device)
            images = sum(labels.numel() for _, labels in self.validation_loader)
            self.cache[key] = AccuracyResult(key, accuracy, images)
        return self.cache[key]


def calibration_tensor(dataset, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` images drawn (seeded) from a dataset, stacked into one tensor."""
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[: min(count, len(dataset))]
    return torch.stack([dataset[int(index)][0] for index in indices])


def evaluate_checkpoint(
    checkpoint: str,
    arch,
    data: str | None = None,
    *,
    calibration_images: int = 512,
    max_val: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Accuracy (inherited weights, recalibrated BN), FLOPs and params of ``arch`` in a
    supernet checkpoint; the data defaults to what the supernet was trained on."""
    from nas_search.errors import UserError
    from nas_search.hw_models.flops import count_flops
    from nas_search.spec import load_arch
    from nas_search.tasks.classify.data import load_classification_data, make_loader
    from nas_search.tasks.classify.supernet_training import load_supernet

    spec = arch if isinstance(arch, ArchSpec) else load_arch(arch)
    supernet, metadata = load_supernet(checkpoint)
    if spec.space != metadata["space"]:
        raise UserError(f"architecture is for space {spec.space!r} but checkpoint {checkpoint} is for {metadata['space']!r}")
    data_dir = data if data is not None else metadata.get("data")
    dataset = load_classification_data(data_dir, input_size=metadata["input_size"], seed=seed, augment=False, max_val=max_val)
    if dataset.num_classes != metadata["num_classes"]:
        raise UserError(f"data has {dataset.num_classes} classes, checkpoint {checkpoint} has {metadata['num_classes']}")
    evaluator = AccuracyEvaluator(
        supernet,
        calibration_tensor(dataset.train, calibration_images, seed),
        make_loader(dataset.val, batch_size=batch_size, shuffle=False, seed=seed, num_workers=0),
        device=device,
    )
    result = evaluator(spec)
    cost = count_flops(spec, supernet.space, num_classes=metadata["num_classes"])
    return {
        "accuracy": result.accuracy,
        "flops": cost.flops,
        "params": cost.params,
        "arch": str(spec),
        "images": result.images,
        "input_size": supernet.space.input_size,
        "eval_input_size": metadata["input_size"],
    }
