"""Predicting latency from a table: the sum of the table entries of an architecture's
parts plus a learned correction (:class:`LatencyModel`), the FLOPs-proportional baseline,
and the metrics and cross-validation that compare them with measurements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nas_search.errors import UserError
from nas_search.hw_models.flops import count_flops
from nas_search.hw_models.latency.parts import BlockConfig, PartFeatures, part_features, part_kinds, table_task
from nas_search.hw_models.latency.table import BlockMeasurement, LatencyTable, SubnetMeasurement
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec

#: Fewest measured subnets for which the learned correction is fitted (else: LUT sum only).
MIN_CORRECTION_SUBNETS = 12


#: Which number of a measurement a model uses: the median of the samples (the default) or
#: their minimum (what an undisturbed run takes; steadier on a busy machine).
STATISTICS: dict[str, Callable[[BlockMeasurement | SubnetMeasurement], float]] = {
    "median": lambda measurement: measurement.latency_ms,
    "min": lambda measurement: measurement.min_ms,
}


def _check_statistic(statistic: str) -> str:
    if statistic not in STATISTICS:
        raise UserError(f"latency statistic {statistic!r} is invalid; accepted: {', '.join(STATISTICS)}")
    return statistic


@dataclass
class _KindFallback:
    """Non-negative fit ``latency ~ a * GFLOPs + b * MB of traffic + c * layers`` over one
    kind's entries, for parts missing from a partial table."""

    coefficients: np.ndarray

    @staticmethod
    def row(features: PartFeatures) -> list[float]:
        return [features.flops / 1e9, features.traffic_bytes / 1e6, float(features.layers)]

    def predict(self, features: PartFeatures) -> float:
        return float(np.asarray(self.row(features)) @ self.coefficients)


def _fit_fallbacks(table: LatencyTable, statistic: str, space: SearchSpace) -> dict[str, _KindFallback]:
    from scipy.optimize import nnls

    grouped: dict[str, list[BlockMeasurement]] = {}
    for entry in table.entries.values():
        grouped.setdefault(entry.config.op, []).append(entry)
    fallbacks = {}
    for kind, entries in grouped.items():
        design = np.array([_KindFallback.row(part_features(entry.config, space)) for entry in entries])
        target = np.array([STATISTICS[statistic](entry) for entry in entries])
        weights = 1.0 / target  # relative error
        coefficients, _ = nnls(design * weights[:, None], target * weights)
        fallbacks[kind] = _KindFallback(coefficients)
    return fallbacks


#: Names of the correction features, in order: whole-network sums of per-part numbers
#: (the table latency, fused layers = kernel launches, FLOPs, activation traffic, weight
#: bytes). Per-kind latencies and counts were tried as well; on the tables tried they
#: overfitted (``benchmarks/RESULTS.md``).
CORRECTION_FEATURES: tuple[str, ...] = ("lut_ms", "layers", "GFLOPs", "traffic_MB", "weights_MB")


@dataclass(frozen=True)
class LatencyPrediction:
    """A latency prediction with its parts.

    Attributes:
        latency_ms: the prediction (LUT sum plus correction).
        lut_sum_ms: the sum of the table entries (some may be estimated).
        parts: number of parts (stem, blocks, head).
        estimated_parts: parts not in the table, estimated from entries of their kind.
        corrected: whether a learned correction was applied.
    """

    latency_ms: float
    lut_sum_ms: float
    parts: int
    estimated_parts: int
    corrected: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class LatencyCorrection:
    """Ridge regression of ``measured - LUT sum`` on :data:`CORRECTION_FEATURES`
    (standardised), weighted by ``1 / measured^2`` so that it minimises relative error,
    with the ridge strength chosen by leave-one-out cross-validation. Its numbers are plain
    arrays, refit from the table's subnet measurements whenever a table is loaded."""

    mean: np.ndarray
    scale: np.ndarray
    coefficients: np.ndarray
    intercept: float
    alpha: float

    def predict(self, row: np.ndarray) -> float:
        """Correction in milliseconds for one feature row."""
        return float(((row - self.mean) / self.scale) @ self.coefficients + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers, for inspection."""
        return {
            "features": list(CORRECTION_FEATURES),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coefficients": self.coefficients.tolist(),
            "intercept": self.intercept,
            "alpha": self.alpha,
        }


def fit_correction(rows: np.ndarray, lut_sums: np.ndarray, measured: np.ndarray) -> LatencyCorrection:
    """Fit the correction on feature rows (one per measured subnet)."""
    from sklearn.linear_model import RidgeCV

    mean = rows.mean(axis=0)
    scale = rows.std(axis=0)
    scale[scale == 0] = 1.0
    standardised = (rows - mean) / scale
    weights = 1.0 / measured**2
    weights = weights / weights.mean()
    model = RidgeCV(alphas=np.logspace(-3, 3, 25)).fit(standardised, measured - lut_sums, sample_weight=weights)
    return LatencyCorrection(mean, scale, np.asarray(model.coef_, dtype=float), float(model.intercept_), float(model.alpha_))


def _check_part_kinds(table: LatencyTable, space: SearchSpace) -> None:
    """Refuse a table holding parts that are not of the space's part kinds (a table read
    without its space, :func:`~nas_search.hw_models.latency.table.load_table`)."""
    kinds = part_kinds(space)
    foreign = sorted({entry.config.op for entry in table.entries.values()} - set(kinds))
    if foreign:
        raise UserError(
            f"latency table for space {table.space!r} on {table.label} has parts of kind(s) "
            f"{', '.join(foreign)}; allowed for space {space.name!r}: {', '.join(kinds)}"
        )


class LatencyModel:
    """Cost model: predicted batch-1 latency (ms) of an architecture on a profiled device.

    ``model(spec)`` returns milliseconds; :meth:`predict` also says how much of the
    prediction came from the table.

    Args:
        table: the device's latency table.
        space: the space the table was profiled for.
        correction: fit the learned correction (needs :data:`MIN_CORRECTION_SUBNETS`
            measured subnets); ``False`` gives the plain LUT sum.
        training: the subnet measurements to fit on (default: all of the table's).
        statistic: ``median`` (default) or ``min`` of the stored samples (:data:`STATISTICS`).
        num_classes: classes of the networks predicted (default: the table's, which its
            measurements were fitted with); parts that depend on it and are not in the table
            (the classifier or the detector's predictors) are estimated (:meth:`predict`).
    """

    unit = "ms"

    def __init__(
        self,
        table: LatencyTable,
        space: SearchSpace,
        *,
        correction: bool = True,
        training: Sequence[SubnetMeasurement] | None = None,
        statistic: str = "median",
        num_classes: int | None = None,
    ) -> None:
        if table.space != space.name:
            raise UserError(f"latency table is for space {table.space!r}, not {space.name!r}")
        if not table.entries:
            raise UserError(f"latency table for space {table.space!r} on {table.label} has no block entries")
        self.table, self.space, self.statistic = table, space, _check_statistic(statistic)
        self.num_classes = table.num_classes if num_classes is None else num_classes
        self._task = table_task(space)
        _check_part_kinds(table, space)
        self.name = "latency"
        self.device = table.label
        self.input_size = table.input_size
        self._value = STATISTICS[statistic]
        self._fallbacks: dict[str, _KindFallback] | None = None  # fitted on the first missing part
        measurements = list(table.subnets if training is None else training)
        self.training_subnets = len(measurements)
        self.correction: LatencyCorrection | None = None
        if correction and len(measurements) >= MIN_CORRECTION_SUBNETS:
            rows, sums = zip(*(self._features(item.spec, table.num_classes)[:2] for item in measurements))
            measured = np.array([self._value(item) for item in measurements])
            self.correction = fit_correction(np.array(rows), np.array(sums), measured)

    def _part_latency(self, config: BlockConfig) -> tuple[float, bool]:
        entry = self.table.entries.get(config.key)
        if entry is not None:
            return self._value(entry), False
        if self._fallbacks is None:
            self._fallbacks = _fit_fallbacks(self.table, self.statistic, self.space)
        fallback = self._fallbacks.get(config.op)
        if fallback is None:
            raise UserError(
                f"latency table for space {self.table.space!r} on {self.table.label} has no {config.op!r} entries, so "
                f"it cannot estimate {config.key}; profile the full space with `nas-search profile`"
            )
        return max(fallback.predict(part_features(config, self.space)), 1e-4), True

    def for_classes(self, num_classes: int | None) -> LatencyModel:
        """The same table and correction, predicting networks with ``num_classes`` classes."""
        if num_classes is None or num_classes == self.num_classes:
            return self
        other = object.__new__(LatencyModel)
        other.__dict__.update(self.__dict__)
        other.num_classes = num_classes
        return other

    def _features(self, spec: ArchSpec, num_classes: int | None = None) -> tuple[np.ndarray, float, int, int]:
        """(correction feature row, LUT sum, number of parts, number of estimated parts)."""
        network = self.space.resolve(spec, num_classes=self.num_classes if num_classes is None else num_classes)
        parts = self._task.parts(network, self.input_size)
        total = 0.0
        estimated = layers = flops = traffic = params = 0
        if self._task.extra_features is not None:
            flops, params, traffic, layers = self._task.extra_features(network, self.input_size)
        for config in parts:
            latency, was_estimated = self._part_latency(config)
            total += latency
            estimated += was_estimated
            features = part_features(config, self.space)
            layers += features.layers
            flops, traffic, params = flops + features.flops, traffic + features.traffic_bytes, params + features.params
        row = np.array([total, layers, flops / 1e9, traffic / 1e6, params * 4 / 1e6])
        return row, total, len(parts), estimated

    def predict(self, spec: ArchSpec) -> LatencyPrediction:
        """Prediction with the LUT sum and the number of estimated parts."""
        row, total, parts, estimated = self._features(spec)
        latency = total
        if self.correction is not None:
            # The correction never takes a prediction below a third of the LUT sum.
            latency = max(total + self.correction.predict(row), total / 3)
        return LatencyPrediction(latency, total, parts, estimated, self.correction is not None)

    def __call__(self, spec: ArchSpec) -> float:
        """Predicted latency (ms) of ``spec`` (:class:`~nas_search.hw_models.CostModel`)."""
        return self.predict(spec).latency_ms

    def describe(self) -> str:
        """One line: device, table size and whether a correction is used."""
        correction = (
            f"LUT sum + correction fitted on {self.training_subnets} measured subnets"
            if self.correction is not None
            else f"LUT sum (no correction: {self.training_subnets} measured subnets, needs {MIN_CORRECTION_SUBNETS})"
        )
        return f"{self.device} on {self.table.hardware}: {len(self.table.entries)} table entries, {correction}"


class FlopsProportionalModel:
    """The baseline: ``latency = a * FLOPs + b`` fitted by least squares on measured subnets
    (a cost model in ms, ``device`` = ``fitted``; a prediction below zero is returned as 0)."""

    unit = "ms"

    def __init__(
        self,
        space: SearchSpace,
        measurements: Sequence[SubnetMeasurement],
        input_size: int | None = None,
        statistic: str = "median",
    ) -> None:
        self.space, self.name, self.device = space, "flops_proportional", "fitted"
        self.input_size = space.input_size if input_size is None else input_size
        flops = np.array([self._flops(item.spec) for item in measurements])
        measured = np.array([STATISTICS[_check_statistic(statistic)](item) for item in measurements])
        design = np.stack([flops, np.ones_like(flops)], axis=1)
        self.slope, self.intercept = np.linalg.lstsq(design, measured, rcond=None)[0]

    def _flops(self, spec: ArchSpec) -> float:
        return count_flops(spec, self.space, self.input_size).flops / 1e9

    def __call__(self, spec: ArchSpec) -> float:
        """Fitted latency (ms) of ``spec``, never below zero (:class:`~nas_search.hw_models.CostModel`)."""
        return max(0.0, float(self.slope * self._flops(spec) + self.intercept))


def prediction_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Share of predictions within +-10% of the measurement, RMSE in percent of the
    measurement, and Spearman's rank correlation."""
    from scipy.stats import spearmanr

    predicted_array, measured_array = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    relative = (predicted_array - measured_array) / measured_array
    rho = spearmanr(predicted_array, measured_array).statistic if len(measured_array) > 2 else float("nan")
    return {
        "within_10pct": float(np.mean(np.abs(relative) <= 0.10)),
        "rmse_pct": float(np.sqrt(np.mean(relative**2)) * 100),
        "spearman": float(rho),
        "count": int(len(measured_array)),
    }


def cross_validate(table: LatencyTable, space: SearchSpace, folds: int = 5, statistic: str = "median") -> dict[str, float]:
    """K-fold validation of the model on the table's measured subnets (correction refit on
    the other folds each time)."""
    subnets = list(table.subnets)
    predicted: list[float] = []
    measured: list[float] = []
    for fold in range(folds):
        held_out = subnets[fold::folds]
        training = [item for index, item in enumerate(subnets) if index % folds != fold]
        model = LatencyModel(table, space, training=training, statistic=statistic)
        predicted += [model(item.spec) for item in held_out]
        measured += [STATISTICS[statistic](item) for item in held_out]
    return prediction_metrics(predicted, measured)
