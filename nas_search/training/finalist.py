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

from dataclasses import dataclass
from types import SimpleNamespace

from torch import nn

from nas_search.training.loop import build_optimizer, seed_epoch, step_schedule

#: Bootstrap resamples behind a detection finalist's standard error (each resample costs
#: one mAP computation over the validation images; timing in ``benchmarks/RESULTS.md``).
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


def finalist_optimizer(model: nn.Module, recipe: FinalistRecipe, steps_per_epoch: int, epochs: int):
    """The recipe's optimizer and its warm-up-then-cosine schedule (stepped per batch)."""
    optimizer = build_optimizer(
        model,
        SimpleNamespace(
            optimizer=recipe.optimizer, learning_rate=recipe.learning_rate, momentum=0.9, weight_decay=recipe.weight_decay
        ),
    )
    return optimizer, step_schedule(optimizer, steps_per_epoch, epochs, recipe.warmup_epochs)


__all__ = [
    "DETECTION_BOOTSTRAP_RESAMPLES",
    "FINALIST_INITIALISATIONS",
    "FINALIST_RECIPES",
    "FinalistRecipe",
    "finalist_optimizer",
    "seed_epoch",  # from training.loop, where every trainer seeds its epochs
]
