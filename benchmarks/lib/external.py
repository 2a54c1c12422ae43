"""Latency predictors for devices we do not have, fit on a few measured architectures.

A user deploys to a device, not to a FLOPs count.  Given a table of latencies measured on
many devices for architectures of one search space (the HELP data, NeurIPS'21), this module
fits a predictor for one *target* device from ``n`` of its measurements and predicts the
rest.  Two sources of information are combined:

* the **layer-wise features** of each architecture (:mod:`nas_search.hw_models.features`):
  analytic MACs, memory traffic and kernel counts per kernel kind and per stage, and
  one-hot choices per position; this is all a user with a brand-new device has;
* the **latency signature** of each architecture on the *other* devices of the table, as
  HELP uses: devices that rank architectures alike are good references for each other.

The target's own column is read only at the sample indices (see
:func:`fit_transfer_predictor`).  Fitted models hold plain numbers (coefficients, tree
arrays) and export to a dict of lists with :meth:`TransferPredictor.to_dict`.

The latency tables themselves are read by :mod:`nas_search.hw_models.published` (the
analytic devices are fitted on them); this module, research code used only by the
benchmarks and their tests, keeps the predictors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nas_search.errors import UserError
from nas_search.hw_models import features as feature_module
from nas_search.hw_models.features import ArchitectureFeatures
from nas_search.hw_models.published import (
    BATCH_SUFFIX,
    DEVICE_COLUMN_PREFIX,
    NON_DEVICE_PREFIXES,
    TABLE_FORMATS,
    LatencyTable,
    TableFormat,
    hardware_of,
    load_latency_table,
)

__all__ = [
    "BATCH_SUFFIX",
    "DEVICE_COLUMN_PREFIX",
    "NON_DEVICE_PREFIXES",
    "TABLE_FORMATS",
    "LatencyTable",
    "TableFormat",
    "hardware_of",
    "load_latency_table",
]


# --------------------------------------------------------------------------------------
# Predictors


@dataclass(frozen=True)
class TransferOptions:
    """Every default of :func:`fit_transfer_predictor`, in one place.

    Attributes:
        max_reference_devices: largest number of best-correlated devices in a
            reference-regression candidate (one candidate per count 1..this).
        ridge_alphas: ridge penalties tried (by leave-one-out) in the ridge candidates.
        layer_weight: scale of the layer-wise features relative to a device signature
            column in the signature ridge (smaller = trust other devices more).
        layer_ridge_with_references: keep the layer-only ridge among the candidates when
            other devices are used too.
        smoothing_penalty: ridge penalty per 1,000 architectures when fitting each
            reference device on the layer-wise features (its "smoothed" signature).
        leave_one_out_max_samples: up to this n, candidates are scored by leave-one-out.
        cross_validation_folds: folds used to score candidates on larger samples.
        cross_validation_trim: share of the largest held-out squared errors left out of
            a candidate's score (a trimmed mean), so that one spike in the target's few
            measurements does not make every candidate look equally bad.
        ensemble_temperature: candidates are averaged (in log latency) with weights
            ``exp(-(error / best_error - 1) / temperature)``; small = pick the best.
        tree_min_samples: from this n on, gradient-boosted trees join the candidates;
            None (the default) never fits them: on the HELP data they add at most about
            0.01 Spearman at n=500 for 10-50 times the fit time.
        tree_count, tree_depth, tree_learning_rate, tree_subsample, tree_feature_fraction:
            the gradient-boosted trees fit on the residuals of the best log-linear candidate.
        seed: seed of the tree ensemble's row subsampling.
    """

    max_reference_devices: int = 3
    ridge_alphas: tuple[float, ...] = tuple(float(value) for value in np.logspace(-3, 3, 25))
    layer_weight: float = 0.2
    layer_ridge_with_references: bool = True
    smoothing_penalty: float = 1.0
    leave_one_out_max_samples: int = 10
    cross_validation_folds: int = 5
    cross_validation_trim: float = 0.1
    ensemble_temperature: float = 1.0
    tree_min_samples: int | None = None
    tree_count: int = 100
    tree_depth: int = 3
    tree_learning_rate: float = 0.1
    tree_subsample: float = 0.8
    tree_feature_fraction: float = 0.3
    seed: int = 0


@dataclass(frozen=True)
class LayerFeatureScaling:
    """Standardisation of the layer-wise feature matrix: ``(log1p(aggregate) | positional - mean) / scale``.

    Columns constant over the table are dropped; ``columns`` are the kept names.
    """

    columns: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray


def _raw_layer_matrix(features: ArchitectureFeatures) -> np.ndarray:
    return np.hstack([np.log1p(features.aggregate), features.positional])


_SCALING_CACHE: dict[int, tuple[ArchitectureFeatures, LayerFeatureScaling, np.ndarray, np.ndarray]] = {}
_SCALING_CACHE_SIZE = 4


def _layer_design(features: ArchitectureFeatures) -> tuple[LayerFeatureScaling, np.ndarray, np.ndarray]:
    """Scaling, standardised matrix and its Gram matrix for a table's features (cached)."""
    cached = _SCALING_CACHE.get(id(features))
    if cached is not None and cached[0] is features:
        return cached[1], cached[2], cached[3]
    raw = _raw_layer_matrix(features)
    spread = raw.max(axis=0) - raw.min(axis=0)
    keep = spread > 1e-9 * (1.0 + np.abs(raw).max(axis=0))
    mean = raw[:, keep].mean(axis=0)
    scale = raw[:, keep].std(axis=0)
    names = tuple(name for name, kept in zip(features.combined_names, keep) if kept)
    scaling = LayerFeatureScaling(names, mean, scale)
    design = (raw[:, keep] - mean) / scale
    gram = design.T @ design
    while len(_SCALING_CACHE) >= _SCALING_CACHE_SIZE:  # forget the oldest table
        del _SCALING_CACHE[next(iter(_SCALING_CACHE))]
    _SCALING_CACHE[id(features)] = (features, scaling, design, gram)
    return scaling, design, gram


@dataclass(frozen=True)
class LogLinearModel:
    """``log(latency) = intercept + sum_d device_weights[d] * log(latency on d) + layer_weights . phi``.

    ``phi`` is the standardised layer-wise feature vector (see :class:`LayerFeatureScaling`).
    Covers the reference regressions and the signature/layer ridges (their smoothed
    signatures are linear in ``phi`` and fold into ``layer_weights``).
    """

    intercept: float
    device_weights: Mapping[str, float]
    layer_weights: np.ndarray | None

    def predict_log(self, table: LatencyTable, indices: np.ndarray) -> np.ndarray:
        """Predicted log latency (log ms) of the architectures at ``indices``."""
        result = np.full(len(indices), self.intercept)
        for device, weight in self.device_weights.items():
            result += weight * np.log(table.latency_ms[indices, table.device_index(device)])
        if self.layer_weights is not None:
            scaling, design, _gram = _layer_design(table.features)
            result += design[indices] @ self.layer_weights
        return result

    def to_dict(self) -> dict[str, object]:
        """Plain-data form."""
        return {
            "type": "log_linear",
            "intercept": float(self.intercept),
            "device_weights": {device: float(weight) for device, weight in self.device_weights.items()},
            "layer_weights": None if self.layer_weights is None else [float(value) for value in self.layer_weights],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LogLinearModel:
        """Inverse of :meth:`to_dict`."""
        layer_weights = data["layer_weights"]
        return cls(
            float(data["intercept"]),  # type: ignore[arg-type]
            dict(data["device_weights"]),  # type: ignore[arg-type]
            None if layer_weights is None else np.asarray(layer_weights, dtype=np.float64),
        )


#: Aggregate columns of the additive (lookup-table-like) model: MACs and kernel counts per kind.
ADDITIVE_COLUMNS: tuple[str, ...] = tuple(
    f"{kind}_{quantity}" for kind in feature_module.LAYER_KINDS for quantity in ("macs", "memory", "count")
)


@dataclass(frozen=True)
class AdditiveModel:
    """``latency = bias + sum_f weight_f * aggregate_f / scale_f`` with non-negative weights.

    The model of a latency lookup table: every kernel kind costs a fixed time per launch,
    per multiply-add and per element moved.  Fit by non-negative least squares in ms.
    """

    columns: tuple[str, ...]
    scale: np.ndarray
    bias: float
    weights: np.ndarray

    def predict_log(self, table: LatencyTable, indices: np.ndarray) -> np.ndarray:
        """Predicted log latency (log ms) of the architectures at ``indices``."""
        positions = [table.features.aggregate_names.index(name) for name in self.columns]
        values = self.bias + (table.features.aggregate[np.ix_(indices, positions)] / self.scale) @ self.weights
        return np.log(np.maximum(values, 1e-6))

    def to_dict(self) -> dict[str, object]:
        """Plain-data form."""
        return {
            "type": "additive",
            "columns": list(self.columns),
            "scale": [float(value) for value in self.scale],
            "bias": float(self.bias),
            "weights": [float(value) for value in self.weights],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> AdditiveModel:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(data["columns"]),  # type: ignore[arg-type]
            np.asarray(data["scale"], dtype=np.float64),
            float(data["bias"]),  # type: ignore[arg-type]
            np.asarray(data["weights"], dtype=np.float64),
        )


@dataclass(frozen=True)
class RegressionTree:
    """One regression tree as flat arrays (scikit-learn's layout); leaves have ``left == -1``."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Leaf value reached by each row of ``inputs``."""
        node = np.zeros(len(inputs), dtype=np.int64)
        rows = np.arange(len(inputs))
        while True:
            internal = self.left[node] >= 0
            if not internal.any():
                return self.value[node]
            goes_left = inputs[rows, np.maximum(self.feature[node], 0)] <= self.threshold[node]
            node = np.where(internal, np.where(goes_left, self.left[node], self.right[node]), node)

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        """Plain-data form."""
        return {
            "left": self.left.tolist(),
            "right": self.right.tolist(),
            "feature": self.feature.tolist(),
            "threshold": self.threshold.tolist(),
            "value": self.value.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> RegressionTree:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(data["left"], dtype=np.int64),
            np.asarray(data["right"], dtype=np.int64),
            np.asarray(data["feature"], dtype=np.int64),
            np.asarray(data["threshold"], dtype=np.float64),
            np.asarray(data["value"], dtype=np.float64),
        )


@dataclass(frozen=True)
class BoostedResidualModel:
    """A log-linear base model plus gradient-boosted trees on its residuals.

    Tree inputs: log latency on ``devices`` (in order), then the standardised layer-wise
    features.
    """

    base: LogLinearModel
    devices: tuple[str, ...]
    offset: float
    learning_rate: float
    trees: tuple[RegressionTree, ...]

    def tree_inputs(self, table: LatencyTable, indices: np.ndarray) -> np.ndarray:
        """The matrix the trees read: reference log latencies and layer-wise features."""
        _scaling, design, _gram = _layer_design(table.features)
        columns = [np.log(table.latency_ms[indices, table.device_index(device)]) for device in self.devices]
        return np.column_stack([*columns, design[indices]])

    def predict_log(self, table: LatencyTable, indices: np.ndarray) -> np.ndarray:
        """Predicted log latency (log ms) of the architectures at ``indices``."""
        inputs = self.tree_inputs(table, indices)
        correction = np.full(len(indices), self.offset)
        for tree in self.trees:
            correction += self.learning_rate * tree.predict(inputs)
        return self.base.predict_log(table, indices) + correction

    def to_dict(self) -> dict[str, object]:
        """Plain-data form."""
        return {
            "type": "boosted_residual",
            "base": self.base.to_dict(),
            "devices": list(self.devices),
            "offset": float(self.offset),
            "learning_rate": float(self.learning_rate),
            "trees": [tree.to_dict() for tree in self.trees],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BoostedResidualModel:
        """Inverse of :meth:`to_dict`."""
        return cls(
            LogLinearModel.from_dict(data["base"]),  # type: ignore[arg-type]
            tuple(data["devices"]),  # type: ignore[arg-type]
            float(data["offset"]),  # type: ignore[arg-type]
            float(data["learning_rate"]),  # type: ignore[arg-type]
            tuple(RegressionTree.from_dict(tree) for tree in data["trees"]),  # type: ignore[union-attr]
        )


ComponentModel = LogLinearModel | AdditiveModel | BoostedResidualModel
COMPONENT_TYPES: dict[str, Callable[[Mapping[str, object]], ComponentModel]] = {
    "log_linear": LogLinearModel.from_dict,
    "additive": AdditiveModel.from_dict,
    "boosted_residual": BoostedResidualModel.from_dict,
}


@dataclass(frozen=True)
class TransferPredictor:
    """Latency predictor for one device: a weighted average, in log latency, of fitted models.

    Attributes:
        table: the table it predicts for (features and the other devices' latencies).
        target_device: the device it predicts.
        components: ``(name, weight, model)``; weights sum to one.
        cross_validation_errors: mean squared log error of every candidate on the samples.
    """

    table: LatencyTable
    target_device: str
    components: tuple[tuple[str, float, ComponentModel], ...]
    cross_validation_errors: Mapping[str, float]

    def predict(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of the table's architectures at ``indices``."""
        indices = _as_indices(indices, len(self.table), "indices")
        log_latency = np.zeros(len(indices))
        for _name, weight, model in self.components:
            log_latency += weight * model.predict_log(self.table, indices)
        return np.exp(log_latency)

    def to_dict(self) -> dict[str, object]:
        """Plain-data form (JSON-ready): the space, device, and every component's numbers."""
        scaling, _design, _gram = _layer_design(self.table.features)
        return {
            "space": self.table.space,
            "target_device": self.target_device,
            "layer_features": {
                "columns": list(scaling.columns),
                "mean": scaling.mean.tolist(),
                "scale": scaling.scale.tolist(),
            },
            "components": [
                {"name": name, "weight": float(weight), "model": model.to_dict()} for name, weight, model in self.components
            ],
            "cross_validation_errors": {name: float(error) for name, error in self.cross_validation_errors.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object], table: LatencyTable) -> TransferPredictor:
        """Rebuild a predictor from :meth:`to_dict` output, bound to ``table``.

        The table must be of the same space, with the same layer-feature columns.
        """
        if data.get("space") != table.space:
            raise UserError(f"predictor space {data.get('space')!r} does not match the table's {table.space!r}")
        scaling, _design, _gram = _layer_design(table.features)
        stored = data["layer_features"]["columns"]  # type: ignore[index]
        if list(scaling.columns) != list(stored):
            raise UserError("predictor layer-feature columns do not match the table's; refit the predictor on it")
        components = []
        for entry in data["components"]:  # type: ignore[union-attr]
            model_data = entry["model"]
            components.append((entry["name"], float(entry["weight"]), COMPONENT_TYPES[model_data["type"]](model_data)))
        return cls(table, str(data["target_device"]), tuple(components), dict(data["cross_validation_errors"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class FlopsPredictor:
    """The FLOPs-proportional baseline: ``latency = slope * FLOPs``, fit by least squares."""

    table: LatencyTable
    target_device: str
    slope: float

    def predict(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of the table's architectures at ``indices``."""
        indices = _as_indices(indices, len(self.table), "indices")
        return self.slope * self.table.features.flops[indices]


def fit_flops_baseline(table: LatencyTable, target_device: str, sample_indices: Sequence[int] | np.ndarray) -> FlopsPredictor:
    """Fit ``latency = slope * FLOPs`` on the target's measured samples (least squares through 0)."""
    column = table.device_index(target_device)
    indices = _as_indices(sample_indices, len(table), "sample_indices", minimum=1)
    flops = table.features.flops[indices]
    slope = float(np.dot(flops, table.latency_ms[indices, column]) / np.dot(flops, flops))
    return FlopsPredictor(table, target_device, slope)


def _as_indices(indices: Sequence[int] | np.ndarray, size: int, name: str, minimum: int = 0) -> np.ndarray:
    array = np.asarray(indices)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise UserError(f"{name} must be a 1-D sequence of integer row indices; got shape {array.shape}, dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size < minimum or (array.size and (array.min() < 0 or array.max() >= size)):
        raise UserError(
            f"{name} must hold at least {minimum} row indices in [0, {size}); got {array.size} in [{array.min(initial=0)}, {array.max(initial=0)}]"
        )
    return array


def same_hardware_devices(table: LatencyTable, device: str) -> tuple[str, ...]:
    """Other columns of the table that measure the same hardware at another batch size."""
    hardware = hardware_of(device)
    return tuple(other for other in table.devices if other != device and hardware_of(other) == hardware)


def fit_transfer_predictor(
    table: LatencyTable,
    target_device: str,
    sample_indices: Sequence[int] | np.ndarray,
    *,
    use_other_devices: bool = True,
    reference_devices: Sequence[str] | None = None,
    exclude_same_hardware: bool = False,
    options: TransferOptions = TransferOptions(),
) -> TransferPredictor:
    """Fit a latency predictor for ``target_device`` from its latencies at ``sample_indices``.

    The target column is read at ``sample_indices`` only, once, before anything else;
    every other device column may be read in full (they are other devices' measurements,
    as in HELP's meta-learning setting).

    Candidates, each scored by cross-validation on the samples (mean squared log error):

    * ``reference_top{k}``: log latency regressed on the log latency of the ``k`` devices
      that correlate best with the target on the samples (HELP's "hardware signature" idea
      at its simplest);
    * ``signature_ridge``: ridge regression on all reference devices' log latencies, their
      layer-wise smoothed versions, and the layer-wise features;
    * ``layer_ridge``: ridge on the layer-wise features only;
    * ``additive``: a lookup-table-like model, non-negative cost per kernel, multiply-add
      and element moved for every kernel kind (no other device needed);
    * ``smoothed_signature_ridge``: the same without the raw reference columns (their
      noise), for noisy targets;
    * ``totals_additive``: non-negative time per kernel launch, multiply-add and element
      moved, over the whole network (four numbers);
    * ``power_<total>``: ``a * total^b`` for the kernel count, memory traffic, parameters
      and activations (:data:`POWER_LAW_COLUMNS`);
    * ``flops_proportional`` and ``flops_power``: ``a * FLOPs`` and ``a * FLOPs^b``, the
      low-variance fallbacks that win on devices whose few samples are mostly noise;
    * ``boosted_residual`` (only when ``options.tree_min_samples`` is set and reached):
      gradient-boosted trees on the residuals of the best log-linear candidate.

    The prediction averages the candidates in log latency, weighted by their scores
    (trimmed mean squared error, see ``options.cross_validation_trim``).

    Args:
        table: the latency table.
        target_device: the device to predict (one of ``table.devices``).
        sample_indices: rows of the table whose latency on the target is known.
        use_other_devices: False fits only the layer-wise candidates (a new device with
            nothing but its own measurements).
        reference_devices: the devices allowed as references (default: all others).
        exclude_same_hardware: drop references that are the target's hardware at another
            batch size (see :func:`hardware_of`).
        options: every tunable default.
    """
    column = table.device_index(target_device)
    indices = _as_indices(sample_indices, len(table), "sample_indices", minimum=3)
    if len(np.unique(indices)) != len(indices):
        raise UserError("sample_indices must not repeat a row")
    log_target = np.log(table.latency_ms[indices, column])  # the only read of the target column
    references: tuple[str, ...] = ()
    if use_other_devices:
        allowed = table.devices if reference_devices is None else tuple(reference_devices)
        for device in allowed:
            table.device_index(device)
        excluded = set(same_hardware_devices(table, target_device)) if exclude_same_hardware else set()
        references = tuple(device for device in allowed if device != target_device and device not in excluded)
    context = _FitContext.build(table, indices, log_target, references, options)
    return context.fit(target_device)


CandidateFit = Callable[["_FitContext", np.ndarray], "ComponentModel | None"]


@dataclass(frozen=True)
class _FitContext:
    """Everything a candidate may use: the samples' target values and other devices' columns."""

    table: LatencyTable
    indices: np.ndarray
    log_target: np.ndarray
    references: tuple[str, ...]
    options: TransferOptions
    design: np.ndarray  # standardised layer-wise features, all rows
    reference_log: np.ndarray  # log latency of the references, all rows
    reference_mean: np.ndarray
    reference_scale: np.ndarray
    smoothing: np.ndarray  # layer-feature weights of each reference's smoothed signature
    smoothed_scale: np.ndarray

    @classmethod
    def build(
        cls,
        table: LatencyTable,
        indices: np.ndarray,
        log_target: np.ndarray,
        references: tuple[str, ...],
        options: TransferOptions,
    ) -> _FitContext:
        """Precompute the reference signatures (full columns of the *other* devices only)."""
        _scaling, design, gram = _layer_design(table.features)
        columns = [table.device_index(device) for device in references]
        reference_log = np.log(table.latency_ms[:, columns]) if columns else np.zeros((len(table), 0))
        reference_mean = reference_log.mean(axis=0)
        reference_scale = np.maximum(reference_log.std(axis=0), 1e-12)
        penalty = options.smoothing_penalty * len(table) / 1000.0
        smoothing = np.linalg.solve(gram + penalty * np.eye(len(gram)), design.T @ (reference_log - reference_mean))
        smoothed_scale = np.maximum((design @ smoothing).std(axis=0), 1e-12) if columns else np.ones(0)
        return cls(
            table,
            indices,
            log_target,
            references,
            options,
            design,
            reference_log,
            reference_mean,
            reference_scale,
            smoothing,
            smoothed_scale,
        )

    def candidates(self) -> dict[str, CandidateFit]:
        """The linear candidates that apply (boosting is added by :meth:`fit`)."""
        table: dict[str, CandidateFit] = {}
        if self.references:
            for count in range(1, min(self.options.max_reference_devices, len(self.references)) + 1):
                table[f"reference_top{count}"] = _reference_regression(count)
            table["signature_ridge"] = _signature_ridge
            table["smoothed_signature_ridge"] = _smoothed_signature_ridge
        if not self.references or self.options.layer_ridge_with_references:
            table["layer_ridge"] = _layer_ridge
        table["additive"] = _additive
        table["totals_additive"] = _totals_additive
        table["flops_proportional"] = _power_law("total_macs", fixed_exponent=1.0)
        table["flops_power"] = _power_law("total_macs", fixed_exponent=None)
        for column in POWER_LAW_COLUMNS:
            table[f"power_{column}"] = _power_law(column, fixed_exponent=None)
        return table

    def folds(self) -> list[np.ndarray]:
        """Held-out positions (into the samples) of each cross-validation fold."""
        count = len(self.indices)
        leave_one_out = count <= self.options.leave_one_out_max_samples
        fold_count = count if leave_one_out else min(count, self.options.cross_validation_folds)
        order = np.random.default_rng(self.options.seed).permutation(count)
        return [np.sort(order[fold::fold_count]) for fold in range(fold_count)]

    def cross_validate(self, candidate: CandidateFit) -> float:
        """Trimmed mean squared log error of ``candidate`` over held-out folds (inf if it cannot fit).

        The largest ``options.cross_validation_trim`` share of the held-out squared errors
        is left out: with 10 samples, one measurement spike otherwise dominates every
        candidate's score and the weights become uniform, bad candidates included.
        """
        errors = []
        everything = np.arange(len(self.indices))
        for held_out in self.folds():
            training = np.setdiff1d(everything, held_out)
            model = candidate(self, training)
            if model is None:
                return float("inf")
            predicted = model.predict_log(self.table, self.indices[held_out])
            errors.append((predicted - self.log_target[held_out]) ** 2)
        squared = np.sort(np.concatenate(errors))
        dropped = int(np.floor(self.options.cross_validation_trim * len(squared)))
        return float(np.mean(squared[: len(squared) - dropped]))

    def fit(self, target_device: str) -> TransferPredictor:
        """Score every candidate, refit them on all samples and weight them by their scores."""
        candidates = self.candidates()
        errors = {name: self.cross_validate(candidate) for name, candidate in candidates.items()}
        linear = {
            name: error for name, error in errors.items() if name not in ("additive", "totals_additive") and np.isfinite(error)
        }
        minimum = self.options.tree_min_samples
        if linear and minimum is not None and len(self.indices) >= minimum:
            base_name = min(linear, key=linear.__getitem__)
            candidates["boosted_residual"] = _boosted_residual(candidates[base_name])
            errors["boosted_residual"] = self.cross_validate(candidates["boosted_residual"])
        finite = {name: error for name, error in errors.items() if np.isfinite(error)}
        if not finite:
            raise UserError(f"cannot fit a latency model for {target_device!r} from {len(self.indices)} samples")
        best = min(finite.values()) + 1e-12
        raw_weights = {
            name: float(np.exp(-(error / best - 1.0) / self.options.ensemble_temperature)) for name, error in finite.items()
        }
        kept = {name: weight for name, weight in raw_weights.items() if weight >= 1e-3}
        total = sum(kept.values())
        everything = np.arange(len(self.indices))
        components = []
        for name, weight in kept.items():
            model = candidates[name](self, everything)
            if model is not None:
                components.append((name, weight / total, model))
        return TransferPredictor(self.table, target_device, tuple(components), errors)


def _ridge_by_leave_one_out(
    inputs: np.ndarray, targets: np.ndarray, alphas: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge with an unpenalised intercept, penalty chosen by exact leave-one-out error.

    Returns ``(input_mean, weights, target_mean)``; the prediction for ``x`` is
    ``target_mean + (x - input_mean) @ weights``.
    """
    target_mean = float(targets.mean())
    centred_targets = targets - target_mean
    input_mean = inputs.mean(axis=0)
    centred = inputs - input_mean
    # eigenvectors of the kernel (hat-matrix basis), from the smaller of the two Gram matrices
    if centred.shape[0] <= centred.shape[1]:
        eigenvalues, eigenvectors = np.linalg.eigh(centred @ centred.T)
        eigenvalues = np.clip(eigenvalues, 0.0, None)
    else:
        eigenvalues, right_vectors = np.linalg.eigh(centred.T @ centred)
        eigenvalues = np.clip(eigenvalues, 0.0, None)
        useful = eigenvalues > 1e-10 * max(float(eigenvalues.max(initial=0.0)), 1e-300)
        eigenvalues = eigenvalues[useful]
        eigenvectors = centred @ right_vectors[:, useful] / np.sqrt(eigenvalues)
    projected = eigenvectors.T @ centred_targets
    count = len(targets)
    best_error, best_alpha = float("inf"), float(alphas[0])
    for alpha in alphas:
        shrink = eigenvalues / (eigenvalues + alpha)
        fitted = eigenvectors @ (shrink * projected)
        leverage = (eigenvectors**2) @ shrink + 1.0 / count
        residual = (centred_targets - fitted) / np.clip(1.0 - leverage, 1e-9, None)
        error = float(np.mean(residual**2))
        if error < best_error:
            best_error, best_alpha = error, float(alpha)
    # weights = X^T (X X^T + alpha I)^-1 y; the null space of X X^T contributes y_perp / alpha
    residual_targets = centred_targets - eigenvectors @ projected
    dual = eigenvectors @ (projected / (eigenvalues + best_alpha)) + residual_targets / best_alpha
    return input_mean, centred.T @ dual, target_mean


def _reference_regression(count: int) -> CandidateFit:
    """Log latency on the log latency of the ``count`` best-correlated references."""

    def fit(context: _FitContext, training: np.ndarray) -> LogLinearModel | None:
        if len(training) < count + 2:
            return None
        targets = context.log_target[training]
        inputs = context.reference_log[context.indices[training]]
        centred = inputs - inputs.mean(axis=0)
        spread = np.linalg.norm(centred, axis=0) * np.linalg.norm(targets - targets.mean())
        correlation = np.abs(centred.T @ (targets - targets.mean())) / np.where(spread > 0, spread, np.inf)
        chosen = np.argsort(-correlation, kind="stable")[:count]
        design = np.column_stack([np.ones(len(training)), inputs[:, chosen]])
        regulariser = 1e-6 * np.eye(design.shape[1])
        regulariser[0, 0] = 0.0
        coefficients = np.linalg.solve(design.T @ design + regulariser, design.T @ targets)
        weights = {context.references[column]: float(value) for column, value in zip(chosen, coefficients[1:])}
        return LogLinearModel(float(coefficients[0]), weights, None)

    return fit


def _signature_ridge(context: _FitContext, training: np.ndarray) -> LogLinearModel | None:
    """Ridge on standardised reference log latencies, their smoothed versions and layer features."""
    rows = context.indices[training]
    raw = (context.reference_log[rows] - context.reference_mean) / context.reference_scale
    smoothed = (context.design[rows] @ context.smoothing) / context.smoothed_scale
    layer = context.options.layer_weight * context.design[rows]
    inputs = np.hstack([raw, smoothed, layer])
    input_mean, weights, target_mean = _ridge_by_leave_one_out(
        inputs, context.log_target[training], context.options.ridge_alphas
    )
    device_count = len(context.references)
    raw_weights = weights[:device_count] / context.reference_scale
    smoothed_weights = weights[device_count : 2 * device_count] / context.smoothed_scale
    layer_weights = context.smoothing @ smoothed_weights + context.options.layer_weight * weights[2 * device_count :]
    intercept = target_mean - float(input_mean @ weights) - float(raw_weights @ context.reference_mean)
    device_weights = {device: float(weight) for device, weight in zip(context.references, raw_weights)}
    return LogLinearModel(intercept, device_weights, layer_weights)


def _smoothed_signature_ridge(context: _FitContext, training: np.ndarray) -> LogLinearModel | None:
    """Ridge on the references' smoothed signatures and the layer-wise features, no raw column.

    The smoothed signatures are the references' latencies projected on the layer-wise
    features, so their measurement noise is gone; on noisy targets (batch-1 GPUs) the raw
    columns of :func:`_signature_ridge` mostly add the references' noise.
    """
    rows = context.indices[training]
    smoothed = (context.design[rows] @ context.smoothing) / context.smoothed_scale
    layer = context.options.layer_weight * context.design[rows]
    inputs = np.hstack([smoothed, layer])
    input_mean, weights, target_mean = _ridge_by_leave_one_out(
        inputs, context.log_target[training], context.options.ridge_alphas
    )
    device_count = len(context.references)
    smoothed_weights = weights[:device_count] / context.smoothed_scale
    layer_weights = context.smoothing @ smoothed_weights + context.options.layer_weight * weights[device_count:]
    return LogLinearModel(target_mean - float(input_mean @ weights), {}, layer_weights)


def _layer_ridge(context: _FitContext, training: np.ndarray) -> LogLinearModel | None:
    """Ridge on the layer-wise features only."""
    inputs = context.design[context.indices[training]]
    input_mean, weights, target_mean = _ridge_by_leave_one_out(
        inputs, context.log_target[training], context.options.ridge_alphas
    )
    return LogLinearModel(target_mean - float(input_mean @ weights), {}, weights)


#: Architecture totals that get a power-law candidate of their own (besides FLOPs): on
#: batch-1 GPUs latency follows the kernel count (launch overhead), on memory-bound
#: devices the memory traffic, on some CPUs the parameter count.
POWER_LAW_COLUMNS: tuple[str, ...] = ("kernel_count", "total_memory", "total_params", "total_activations")
#: Columns of the ``totals_additive`` candidate: time per kernel launch, per multiply-add
#: and per element moved, the same for every kernel kind.
TOTALS_ADDITIVE_COLUMNS: tuple[str, ...] = ("kernel_count", "total_macs", "total_memory")


def _power_law(column_name: str, fixed_exponent: float | None) -> CandidateFit:
    """``latency = a * total^b`` for one architecture total: ``b`` fixed or fit.

    With ``total_macs`` and ``b = 1`` this is the FLOPs-proportional model.  Two numbers
    at most: the low-variance fallbacks for devices whose few samples are mostly noise.
    """

    def fit(context: _FitContext, training: np.ndarray) -> LogLinearModel | None:
        scaling, _design, _gram = _layer_design(context.table.features)
        if column_name not in scaling.columns or len(training) < (2 if fixed_exponent is None else 1):
            return None
        column = scaling.columns.index(column_name)
        # phi[column] = (log1p(total) - mean) / scale, so log1p(total) = scale * phi + mean
        log_flops = scaling.scale[column] * context.design[context.indices[training], column] + scaling.mean[column]
        targets = context.log_target[training]
        if fixed_exponent is None:
            centred = log_flops - log_flops.mean()
            exponent = float(centred @ (targets - targets.mean()) / max(float(centred @ centred), 1e-12))
        else:
            exponent = fixed_exponent
        offset = float(np.mean(targets - exponent * log_flops))
        layer_weights = np.zeros(len(scaling.columns))
        layer_weights[column] = exponent * scaling.scale[column]
        return LogLinearModel(offset + exponent * scaling.mean[column], {}, layer_weights)

    return fit


def _additive(context: _FitContext, training: np.ndarray) -> AdditiveModel | None:
    """Non-negative cost per kernel launch, multiply-add and element moved, per kernel kind."""
    from scipy.optimize import nnls

    aggregate = context.table.features.aggregate
    names = context.table.features.aggregate_names
    positions = [names.index(name) for name in ADDITIVE_COLUMNS]
    scale = aggregate[:, positions].max(axis=0)
    kept = [index for index, value in enumerate(scale) if value > 0]
    columns = tuple(ADDITIVE_COLUMNS[index] for index in kept)
    scale = scale[kept]
    inputs = aggregate[np.ix_(context.indices[training], [positions[index] for index in kept])] / scale
    design = np.column_stack([np.ones(len(training)), inputs])
    weights, _residual = nnls(design, np.exp(context.log_target[training]))
    return AdditiveModel(columns, scale, float(weights[0]), weights[1:])


def _totals_additive(context: _FitContext, training: np.ndarray) -> AdditiveModel | None:
    """``latency = bias + t_launch * kernels + t_mac * MACs + t_element * memory``, non-negative.

    The :func:`_additive` model with one cost per quantity instead of one per kernel kind:
    four numbers, so it can be fit from a handful of samples.
    """
    from scipy.optimize import nnls

    aggregate = context.table.features.aggregate
    names = context.table.features.aggregate_names
    positions = [names.index(name) for name in TOTALS_ADDITIVE_COLUMNS if name in names]
    columns = tuple(names[position] for position in positions)
    scale = aggregate[:, positions].max(axis=0)
    kept = [index for index, value in enumerate(scale) if value > 0]
    if not kept:
        return None
    columns = tuple(columns[index] for index in kept)
    positions = [positions[index] for index in kept]
    scale = scale[kept]
    inputs = aggregate[np.ix_(context.indices[training], positions)] / scale
    design = np.column_stack([np.ones(len(training)), inputs])
    weights, _residual = nnls(design, np.exp(context.log_target[training]))
    return AdditiveModel(columns, scale, float(weights[0]), weights[1:])


def _boosted_residual(base_fit: CandidateFit) -> CandidateFit:
    """Gradient-boosted trees on the residuals of ``base_fit``, reading references and layer features."""

    def fit(context: _FitContext, training: np.ndarray) -> BoostedResidualModel | None:
        from sklearn.ensemble import GradientBoostingRegressor

        base = base_fit(context, training)
        if not isinstance(base, LogLinearModel):
            return None
        options = context.options
        rows = context.indices[training]
        residual = context.log_target[training] - base.predict_log(context.table, rows)
        inputs = np.hstack([context.reference_log[rows], context.design[rows]])
        booster = GradientBoostingRegressor(
            n_estimators=options.tree_count,
            max_depth=options.tree_depth,
            learning_rate=options.tree_learning_rate,
            subsample=options.tree_subsample,
            max_features=options.tree_feature_fraction,
            random_state=options.seed,
        ).fit(inputs, residual)
        trees = tuple(
            RegressionTree(
                estimator.tree_.children_left.astype(np.int64),
                estimator.tree_.children_right.astype(np.int64),
                estimator.tree_.feature.astype(np.int64),
                estimator.tree_.threshold.astype(np.float64),
                estimator.tree_.value[:, 0, 0].astype(np.float64),
            )
            for estimator in booster.estimators_[:, 0]
        )
        offset = float(np.ravel(booster.init_.constant_)[0])
        return BoostedResidualModel(base, context.references, offset, options.tree_learning_rate, trees)

    return fit
