"""Short training of one search finalist, for re-ranking the search's best trials.

Inherited-weight scores rank subnets only as well as the supernet was trained (see
``benchmarks/RESULTS.md``: on CPU budgets, subnets mixing block kinds inherit near-chance
accuracy). The search therefore re-ranks its top few trials by what users do next: each
finalist is trained for a few epochs on the search's training split, starting from its
inherited weights (``init="inherited"``, as ``nas-search train`` does by default) or from
scratch (``init="scratch"``), and scored on the search's validation split.

One recipe per (task, initialisation), in :data:`FINALIST_RECIPES`; the functions here
train a model that the caller has built and return its score with its standard error
(``score_error``: binomial for top-1 accuracy, a bootstrap over the validation images for
mAP@0.5), from which the search picks among finalists whose scores it cannot tell apart
(:func:`nas_search.search.report.best_trials`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

#: Bootstrap resamples behind a detection finalist's standard error (about 0.1 s each on
#: 32 validation images here).
DETECTION_BOOTSTRAP_RESAMPLES = 100

#: How a finalist starts: from its supernet weights or from a fresh initialisation.
FINALIST_INITIALISATIONS: tuple[str, ...] = ("inherited", "scratch")


@dataclass(frozen=True)
class FinalistRecipe:
    """Optimiser and schedule of a finalist's short training (warm-up, then cosine to 0)."""

    optimizer: str
    learning_rate: float
    weight_decay: float
    warmup_epochs: float
    batch_size: int
    label_smoothing: float = 0.0
    clip_grad_norm: float | None = None


#: Recipes by (task, initialisation). Fine-tuning starts lower and without a long warm-up;
#: the detection recipes are those that train compact FCOS detectors from scratch on small
#: data (``benchmarks/detection.py``: AdamW 2e-3, one warm-up epoch, clipping at 10).
FINALIST_RECIPES: dict[tuple[str, str], FinalistRecipe] = {
    ("classify", "inherited"): FinalistRecipe("sgd", 0.01, 4e-5, 0.0, 64, label_smoothing=0.1),
    ("classify", "scratch"): FinalistRecipe("sgd", 0.05, 4e-5, 0.5, 64, label_smoothing=0.1),
    ("detect", "inherited"): FinalistRecipe("adamw", 5e-4, 1e-4, 0.25, 16, clip_grad_norm=10.0),
    ("detect", "scratch"): FinalistRecipe("adamw", 2e-3, 1e-4, 1.0, 16, clip_grad_norm=10.0),
}


def _optimizer_and_schedule(model: nn.Module, recipe: FinalistRecipe, steps_per_epoch: int, epochs: int):
    from nas_search.training.supernet_training import build_optimizer, warmup_cosine

    optimizer = build_optimizer(model, SimpleNamespace(
        optimizer=recipe.optimizer, learning_rate=recipe.learning_rate, momentum=0.9, weight_decay=recipe.weight_decay))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps_per_epoch * epochs, int(recipe.warmup_epochs * steps_per_epoch)))
    return optimizer, scheduler


def _seed_epoch(loader: Any, seed: int, epoch: int) -> None:
    torch.manual_seed(seed + 1000 * epoch)
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed + epoch)


def train_classifier_finalist(model: nn.Module, data: Any, recipe: FinalistRecipe, epochs: int, seed: int,
                              label: str, device: torch.device | str = "cpu", progress: bool = True) -> dict[str, float]:
    """Train a standalone classifier ``epochs`` epochs on ``data.train``; returns its top-1
    ``accuracy`` on ``data.val`` with its binomial standard error ``score_error``
    (``sqrt(p (1 - p) / n)``), the last epoch's mean ``loss`` and ``seconds``."""
    import torch.nn.functional as F

    from nas_search.data import make_loader
    from nas_search.evaluators.classification import top1_accuracy
    from nas_search.progress import progress_bar

    loader = make_loader(data.train, batch_size=recipe.batch_size, shuffle=True, seed=seed, num_workers=0,
                         drop_last=len(data.train) >= recipe.batch_size)
    val_loader = make_loader(data.val, batch_size=128, shuffle=False, seed=seed, num_workers=0)
    optimizer, scheduler = _optimizer_and_schedule(model, recipe, len(loader), epochs)
    started, loss = time.perf_counter(), float("nan")
    for epoch in range(epochs):
        _seed_epoch(loader, seed, epoch)
        bar = progress_bar(len(loader.dataset), f"{label} epoch {epoch + 1}/{epochs}", "img", progress)
        total, seen = 0.0, 0
        model.train()
        try:
            for images, labels in loader:
                step_loss = F.cross_entropy(model(images.to(device)), labels.to(device),
                                            label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                step_loss.backward()
                optimizer.step()
                scheduler.step()
                total, seen = total + step_loss.item() * labels.size(0), seen + labels.size(0)
                bar.update(labels.size(0))
        finally:
            bar.close()
        loss = total / max(seen, 1)
    accuracy = top1_accuracy(model, val_loader, device)
    error = math.sqrt(accuracy * (1.0 - accuracy) / max(len(data.val), 1))
    return {"accuracy": accuracy, "score_error": error, "loss": loss, "seconds": time.perf_counter() - started}


def train_detector_finalist(model: nn.Module, data: Any, recipe: FinalistRecipe, epochs: int, seed: int,
                            label: str, device: torch.device | str = "cpu", progress: bool = True) -> dict[str, float]:
    """Train a standalone detector ``epochs`` epochs on ``data.train``; returns mAP@0.5 as
    ``accuracy`` (and ``map50``, ``map``) on ``data.val`` with its bootstrap standard error
    ``score_error`` (:data:`DETECTION_BOOTSTRAP_RESAMPLES` resamples of the images), the
    last epoch's ``loss`` and ``seconds``."""
    from nas_search.data.detection import make_detection_loader
    from nas_search.evaluators.detection import mean_average_precision
    from nas_search.progress import progress_bar
    from nas_search.training.detection_training import train_detection_epoch

    loader = make_detection_loader(data.train, batch_size=recipe.batch_size, shuffle=True, seed=seed,
                                   drop_last=len(data.train) >= recipe.batch_size)
    val_loader = make_detection_loader(data.val, batch_size=16, shuffle=False, seed=seed)
    optimizer, scheduler = _optimizer_and_schedule(model, recipe, len(loader), epochs)
    started, loss = time.perf_counter(), float("nan")
    for epoch in range(epochs):
        _seed_epoch(loader, seed, epoch)
        bar = progress_bar(len(loader) * recipe.batch_size, f"{label} epoch {epoch + 1}/{epochs}", "img", progress)
        try:
            record = train_detection_epoch(model, loader, optimizer, scheduler, device, bar,
                                           clip_grad_norm=recipe.clip_grad_norm)
        finally:
            bar.close()
        loss = record["loss"]
    scores = mean_average_precision(model, val_loader, device, bootstrap=DETECTION_BOOTSTRAP_RESAMPLES)
    return {"accuracy": float(scores["map50"]), "map50": float(scores["map50"]), "map": float(scores["map"]),
            "score_error": float(scores.get("map50_error", 0.0)),
            "loss": loss, "seconds": time.perf_counter() - started}


__all__ = [
    "DETECTION_BOOTSTRAP_RESAMPLES",
    "FINALIST_INITIALISATIONS",
    "FINALIST_RECIPES",
    "FinalistRecipe",
    "train_classifier_finalist",
    "train_detector_finalist",
]
