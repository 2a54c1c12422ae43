"""How the search picks among re-ranked finalists (the one-standard-error rule) and the
bootstrap standard error of a detector's mAP@0.5 behind it."""

from __future__ import annotations

import optuna
import pytest
import torch

from nas_search.search.report import best_trials, finalist_order
from nas_search.tasks.detect.evaluate import bootstrap_standard_error, map_scores


def make_trial(number: int, accuracy: float, flops: int, latency: float | None = None) -> optuna.trial.FrozenTrial:
    attributes = {"accuracy": accuracy, "flops": flops, "params": 1000, "feasible": True, "arch": f"arch-{number}"}
    if latency is not None:
        attributes["latency"] = latency
    trial = optuna.trial.create_trial(value=accuracy, user_attrs=attributes)
    trial.number = number
    return trial


def test_the_cheapest_finalist_within_one_standard_error_is_picked() -> None:
    trials = [make_trial(0, 0.30, 400), make_trial(1, 0.20, 350), make_trial(2, 0.25, 300)]
    records = {
        0: {"score": 0.3778, "score_error": 0.05},
        1: {"score": 0.3775, "score_error": 0.05},
        2: {"score": 0.20, "score_error": 0.05},
    }
    # 0 and 1 are 0.0003 apart, far inside one standard error: the cheaper 1 is picked;
    # 2 is cheapest but 0.18 below the best, outside it; the rest follow by score
    assert [trial.number for trial in finalist_order(trials, records)] == [1, 0, 2]


def test_without_standard_errors_the_best_score_is_picked() -> None:
    trials = [make_trial(0, 0.30, 400), make_trial(1, 0.20, 350)]
    exact = {0: {"score": 0.3778}, 1: {"score": 0.3775}}
    assert [trial.number for trial in finalist_order(trials, exact)] == [0, 1]
    tight = {0: {"score": 0.3778, "score_error": 0.0001}, 1: {"score": 0.3775, "score_error": 0.0001}}
    assert [trial.number for trial in finalist_order(trials, tight)] == [0, 1]


def test_latency_decides_before_flops_when_the_study_has_a_device() -> None:
    trials = [make_trial(0, 0.3, 300, latency=9.0), make_trial(1, 0.3, 400, latency=6.0)]
    records = {0: {"score": 0.50, "score_error": 0.05}, 1: {"score": 0.48, "score_error": 0.05}}
    assert finalist_order(trials, records)[0].number == 1


def test_best_trials_lists_finalists_first_then_the_others_by_inherited_score() -> None:
    study = optuna.create_study(direction="maximize")
    for number, (accuracy, flops) in enumerate(((0.30, 400), (0.20, 350), (0.35, 500), (0.10, 100))):
        study.add_trial(make_trial(number, accuracy, flops))
    records = {0: {"score": 0.60, "score_error": 0.01}, 1: {"score": 0.55, "score_error": 0.01}}
    assert [trial.number for trial in best_trials(study, 4, records)] == [0, 1, 2, 3]
    records[1]["score"] = 0.595  # now within one standard error of trial 0, and cheaper
    assert [trial.number for trial in best_trials(study, 4, records)] == [1, 0, 2, 3]


def detections(count: int, hits: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``count`` images with one ground-truth box each; the first ``hits`` get a confident
    matching detection, the others only a confident false one elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    predictions, targets = [], []
    for index in range(count):
        corner = torch.rand(2, generator=generator) * 100
        box = torch.cat([corner, corner + 40]).reshape(1, 4)
        targets.append({"boxes": box, "labels": torch.zeros(1, dtype=torch.int64)})
        guess = box if index < hits else box + 200
        predictions.append(
            {"boxes": guess.clone(), "scores": torch.tensor([0.9 - 0.001 * index]), "labels": torch.zeros(1, dtype=torch.int64)}
        )
    return predictions, targets


def test_bootstrap_error_is_zero_for_a_perfect_detector() -> None:
    predictions, targets = detections(16, 16)
    assert map_scores(predictions, targets)["map50"] == pytest.approx(1.0)
    assert bootstrap_standard_error(predictions, targets, resamples=20) == pytest.approx(0.0, abs=1e-9)


def test_bootstrap_error_shrinks_with_more_validation_images() -> None:
    small = bootstrap_standard_error(*detections(16, 8), resamples=60, seed=1)
    large = bootstrap_standard_error(*detections(64, 32), resamples=60, seed=1)
    assert small > 0.05
    # the standard error of a mean falls as 1 / sqrt(n): 4x the images, about half the error
    assert 0.3 < large / small < 0.75
