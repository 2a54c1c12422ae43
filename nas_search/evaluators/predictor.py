"""An accuracy predictor: scikit-learn fit on evaluated (spec, accuracy) pairs, used to
screen many candidate architectures cheaply.

Features are fixed-length summaries of a spec in its space: per stage the depth, the
mean and last width ratio, the share of each op, the mean kernel and expansion; the stem
and head widths; and log FLOPs and log params at the deployment size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from nas_search.hw_models.flops import count_flops
from nas_search.spaces.ops import BLOCK_KINDS
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec


def spec_features(spec: ArchSpec, space: SearchSpace) -> np.ndarray:
    """Fixed-length feature vector of a spec."""
    features: list[float] = [spec.stem_width, spec.head_width]
    for stage in spec.stages:
        blocks = stage.blocks
        features += [
            stage.depth,
            float(np.mean([block.width for block in blocks])),
            blocks[-1].width,
            float(np.mean([block.kernel for block in blocks])),
            float(np.mean([block.expansion for block in blocks])),
        ]
        features += [sum(block.op == op for block in blocks) / len(blocks) for op in BLOCK_KINDS]
    cost = count_flops(spec, space)
    features += [math.log(cost.flops), math.log(cost.params)]
    return np.asarray(features, dtype=np.float64)


@dataclass
class PredictorQuality:
    """Rank agreement of predictions with measurements on held-out specs."""

    kendall_tau: float
    spearman: float
    mean_absolute_error: float
    count: int


class AccuracyPredictor:
    """Gradient-boosted trees (or a ridge fallback for very few samples) on spec features."""

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space, self.seed = space, seed
        self.model: Any = None

    def fit(self, specs: list[ArchSpec], accuracies: list[float]) -> AccuracyPredictor:
        """Fit on evaluated pairs."""
        from sklearn.ensemble import GradientBoostingRegressor
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        inputs = np.stack([spec_features(spec, self.space) for spec in specs])
        targets = np.asarray(accuracies, dtype=np.float64)
        if len(specs) < 30:
            self.model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        else:
            self.model = GradientBoostingRegressor(
                n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=self.seed
            )
        self.model.fit(inputs, targets)
        return self

    def predict(self, specs: list[ArchSpec]) -> np.ndarray:
        """Predicted accuracies."""
        if self.model is None:
            raise RuntimeError("fit the predictor first")
        return self.model.predict(np.stack([spec_features(spec, self.space) for spec in specs]))

    def quality(self, specs: list[ArchSpec], accuracies: list[float]) -> PredictorQuality:
        """Kendall tau, Spearman rho and MAE on held-out specs."""
        predicted = self.predict(specs)
        measured = np.asarray(accuracies)
        return PredictorQuality(
            kendall_tau=float(kendalltau(predicted, measured).statistic),
            spearman=float(spearmanr(predicted, measured).statistic),
            mean_absolute_error=float(np.abs(predicted - measured).mean()),
            count=len(specs),
        )
