"""Named analytic latency models of common targets, fitted to published measurements.

A target we cannot profile (a phone, a server CPU someone else measured) still needs a
latency estimate. This module holds a *roofline-style* model per named device::

    latency_ms = sum over kernel kinds k of  macs_k / throughput_k
               + memory_elements / bandwidth
               + kernel_count * overhead
               + constant

with one throughput per kind of multiply-add kernel (dense conv, 1x1, grouped 1x1,
depthwise, linear), one memory bandwidth (activations read and written plus weights, in
elements), a fixed cost per launched kernel and a constant. All coefficients are
non-negative (a non-negative least-squares fit that minimises *relative* error), so each
is a physical quantity and the model extrapolates monotonically: more work never costs
less time.

The constants of each device are fitted to the latencies HELP (NeurIPS'21) publishes for
two search spaces — FBNet on CIFAR-100 (5,000 architectures) and the NAS-Bench-201 cell
(15,625) — read from ``shared/data/latency`` by ``scripts/fit_analytic_devices.py`` and
stored as plain numbers in ``analytic_devices.json`` next to this file, together with
their error:

* ``in_space``: fitted on a random 80% of both spaces, scored on the other 20% of each;
* ``new_space``: fitted on one space only, scored on the whole other one. This is the
  honest estimate for *your* space, which the fit never saw. It is poor in absolute terms
  and moderate in rank (``benchmarks/RESULTS.md``; the JSON file stores it): use these
  devices to compare architectures of one space coarsely, and profile a real device
  (``nas-search profile``) or bring its table (``--lut``) when the figure matters.

The measured networks are 32x32 CIFAR models; the built-in ``mobile`` space runs at
224 px, far outside that range. A per-kind throughput transfers across sizes better than
any learned correction would, but the error above is measured at 32 px only.

The layers of a nas-search network are listed by :func:`network_layers`, each block's by
its op's ``BlockKind.layers`` (``nas_search.spaces.ops``), with the same :class:`LayerCost`
records (and the same kernel kinds) that featurise the published spaces.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas_search.errors import UserError
from nas_search.spaces.ops import BLOCK_KINDS, KindTable
from nas_search.spaces.ops.costs import LayerCost, append_convolution, linear, pooling
from nas_search.spaces.space import ResolvedBlock, ResolvedNetwork, SearchSpace
from nas_search.spec import ArchSpec

if TYPE_CHECKING:
    from nas_search.hw_models.published import LatencyTable

#: Where the fitted constants live (written by ``scripts/fit_analytic_devices.py``).
CONSTANTS_PATH = Path(__file__).with_name("analytic_devices.json")
#: Kernel kinds that get their own multiply-add throughput.
THROUGHPUT_KINDS: tuple[str, ...] = ("conv", "pointwise", "grouped_pointwise", "depthwise")
#: Kinds whose multiply-adds share another kind's throughput: a linear layer is a 1x1 conv
#: on a 1x1 map. (Fitted on its own, a classifier's MACs are constant within a published
#: space and the fit turned them into a per-space offset.)
THROUGHPUT_ALIASES: dict[str, str] = {"linear": "pointwise"}
#: Feature names of the model, in coefficient order (then the constant).
FEATURE_NAMES: tuple[str, ...] = (*(f"{kind}_macs" for kind in THROUGHPUT_KINDS), "memory_elements", "kernel_count")

#: Named devices: nas-search name -> (HELP column, description). The three phones, batch 1.
#: The Xeon columns (gold_6226, silver_4114, ...) were fitted too and left out: their 32 px
#: measurements are dominated by per-kernel overhead, and extrapolated to 224 px networks
#: they predicted far more than such a CPU takes (``benchmarks/RESULTS.md``).
PUBLISHED_DEVICES: dict[str, tuple[str, str]] = {
    "pixel2": ("pixel2", "Google Pixel 2 phone CPU, analytic model fitted to published latencies (HELP)"),
    "samsung-a50": ("samsung_a50", "Samsung Galaxy A50 phone CPU, analytic model fitted to published latencies (HELP)"),
    "samsung-s7": ("samsung_s7", "Samsung Galaxy S7 phone CPU, analytic model fitted to published latencies (HELP)"),
}


# --------------------------------------------------------------------------------------
# The layers of a nas-search network


#: The layer listing of each block op (a live view of ``BLOCK_KINDS[op].layers``):
#: (block, stage index, input size) -> (layers, output size).
BLOCK_LAYERS: KindTable[Callable[[ResolvedBlock, int, int], tuple[list[LayerCost], int]]] = KindTable("layers")


def network_layers(network: ResolvedNetwork, input_size: int) -> list[LayerCost]:
    """Every kernel a runtime launches for ``network`` at a square ``input_size`` (batch
    norm folded into its conv, activations fused), in order."""
    layers: list[LayerCost] = []
    size = append_convolution(layers, 0, network.input_channels, network.stem_channels, 3, input_size, network.stem_stride)
    for stage_index, stage in enumerate(network.stages, start=1):
        for block in stage:
            if block.spec.op not in BLOCK_KINDS:
                raise KeyError(f"no layer listing for block op {block.spec.op!r}; known: {', '.join(BLOCK_KINDS)}")
            block_layers, size = BLOCK_KINDS[block.spec.op].layers(block, stage_index, size)
            layers.extend(block_layers)
    head_stage = len(network.stages) + 1
    append_convolution(layers, head_stage, network.last_channels, network.head_channels, 1, size)
    layers.append(pooling(stage=head_stage, channels=network.head_channels, in_size=size, out_size=1))
    layers.append(linear(stage=head_stage, in_features=network.head_channels, out_features=network.num_classes))
    return layers


def model_layers(space: SearchSpace, spec: ArchSpec, input_size: int, num_classes: int | None = None) -> list[LayerCost]:
    """Every kernel of ``spec`` in ``space`` at ``input_size`` (a classifier's listing, or
    the one its ``network_costs`` give)."""
    resolved = space.resolve(spec, num_classes=num_classes)
    if space.network_costs is not None:  # a space whose networks are not plain classifiers
        layers: list[LayerCost] = space.network_costs.layers(resolved, input_size)
        return layers
    return network_layers(resolved, input_size)


def layer_features(layers: Sequence[LayerCost]) -> np.ndarray:
    """The model's features (:data:`FEATURE_NAMES`) of one list of layers."""
    macs = {kind: 0.0 for kind in THROUGHPUT_KINDS}
    memory = 0.0
    for layer in layers:
        kind = THROUGHPUT_ALIASES.get(layer.kind, layer.kind)
        if kind in macs:
            macs[kind] += layer.macs
        memory += layer.memory_elements
    return np.array([*(macs[kind] for kind in THROUGHPUT_KINDS), memory, float(len(layers))])


# --------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class AnalyticDeviceModel:
    """A fitted roofline model of one named device.

    Attributes:
        name: the ``--device`` name.
        description: what the device is and whose measurements fitted it.
        source_column: the HELP column the constants were fitted to.
        coefficients: milliseconds per unit of each feature in :data:`FEATURE_NAMES`.
        constant_ms: fixed latency per inference.
        errors: held-out error figures (see the module docstring), by evaluation.
    """

    name: str
    description: str
    source_column: str
    coefficients: Mapping[str, float]
    constant_ms: float
    errors: Mapping[str, Any] = field(default_factory=dict)

    def predict_layers(self, layers: Sequence[LayerCost]) -> float:
        """Predicted latency (ms) of a network given as its kernels."""
        features = layer_features(layers)
        return float(sum(self.coefficients[name] * value for name, value in zip(FEATURE_NAMES, features)) + self.constant_ms)

    def throughput_summary(self) -> dict[str, float]:
        """The constants as physical quantities: GMAC/s per kind, Gelement/s, us per kernel."""
        summary = {}
        for kind in THROUGHPUT_KINDS:
            per_mac = self.coefficients[f"{kind}_macs"]
            summary[f"{kind}_gmacs_per_s"] = float("inf") if per_mac == 0 else 1e-6 / per_mac
        per_element = self.coefficients["memory_elements"]
        summary["memory_gelements_per_s"] = float("inf") if per_element == 0 else 1e-6 / per_element
        summary["kernel_overhead_us"] = self.coefficients["kernel_count"] * 1e3
        return summary

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (what the JSON file holds)."""
        return {
            "name": self.name,
            "description": self.description,
            "source_column": self.source_column,
            "coefficients": dict(self.coefficients),
            "constant_ms": self.constant_ms,
            "errors": dict(self.errors),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalyticDeviceModel:
        """Rebuild from :meth:`to_dict` output, checking every coefficient is present."""
        coefficients = dict(data["coefficients"])
        missing = [name for name in FEATURE_NAMES if name not in coefficients]
        if missing:
            raise UserError(f"analytic device {data.get('name')!r} lacks coefficients {', '.join(missing)}")
        return cls(
            name=data["name"],
            description=data["description"],
            source_column=data["source_column"],
            coefficients={name: float(coefficients[name]) for name in FEATURE_NAMES},
            constant_ms=float(data["constant_ms"]),
            errors=data.get("errors", {}),
        )


class AnalyticLatencyModel:
    """``spec -> ms`` for one space on one named analytic device (a cost model)."""

    name = "latency"
    unit = "ms"

    def __init__(
        self, device: AnalyticDeviceModel, space: SearchSpace, input_size: int | None = None, num_classes: int | None = None
    ) -> None:
        self.device_model = device
        self.device = device.name
        self.space = space
        self.input_size = space.input_size if input_size is None else input_size
        self.num_classes = num_classes

    def for_classes(self, num_classes: int | None) -> AnalyticLatencyModel:
        """The same model for networks with ``num_classes`` outputs."""
        return AnalyticLatencyModel(self.device_model, self.space, self.input_size, num_classes)

    def __call__(self, spec: ArchSpec) -> float:
        return self.device_model.predict_layers(model_layers(self.space, spec, self.input_size, self.num_classes))

    def describe(self) -> str:
        """One line for reports."""
        errors = self.device_model.errors.get("new_space", {})
        mape = errors.get("mean_abs_error")
        stated = (
            ""
            if mape is None
            else f"; error on a space it was not fitted to: {mape:.0%} mean, Spearman {errors.get('spearman', float('nan')):.2f}"
        )
        return f"analytic roofline model of {self.device} fitted to published measurements{stated}"


# --------------------------------------------------------------------------------------
# Fitting (used by scripts/fit_analytic_devices.py and the test that checks the JSON)


def fit_coefficients(features: np.ndarray, latency_ms: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative coefficients and constant minimising the relative squared error."""
    from scipy.optimize import nnls

    features = np.asarray(features, dtype=np.float64)
    latency_ms = np.asarray(latency_ms, dtype=np.float64)
    scale = np.maximum(np.abs(features).max(axis=0), 1.0)
    design = np.hstack([features / scale, np.ones((len(features), 1))]) / latency_ms[:, None]
    solution, _ = nnls(design, np.ones(len(latency_ms)), maxiter=5000)
    return solution[:-1] / scale, float(solution[-1])


def error_figures(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Share within +-10%, mean absolute relative error and Spearman rho."""
    from scipy.stats import spearmanr

    relative = np.asarray(predicted) / np.asarray(measured) - 1.0
    return {
        "within_10pct": float(np.mean(np.abs(relative) <= 0.10)),
        "mean_abs_error": float(np.mean(np.abs(relative))),
        "spearman": float(spearmanr(predicted, measured)[0]),
        "count": int(len(measured)),
    }


@lru_cache(maxsize=1)
def load_constants(path: str | None = None) -> dict[str, AnalyticDeviceModel]:
    """The fitted named devices, by name."""
    source = Path(path) if path else CONSTANTS_PATH
    try:
        data = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"analytic device constants {source} are unreadable ({error}); reinstall nas-search") from None
    return {entry["name"]: AnalyticDeviceModel.from_dict(entry) for entry in data["devices"]}


__all__ = [
    "AnalyticDeviceModel",
    "AnalyticLatencyModel",
    "BLOCK_LAYERS",
    "CONSTANTS_PATH",
    "FEATURE_NAMES",
    "PUBLISHED_DEVICES",
    "THROUGHPUT_KINDS",
    "error_figures",
    "fit_coefficients",
    "layer_features",
    "load_constants",
    "model_layers",
    "network_layers",
]


def _published_features(table: LatencyTable) -> np.ndarray:
    """The model's features of every architecture of a HELP latency table."""
    names = table.features.aggregate_names
    aggregate = table.features.aggregate
    macs = {kind: aggregate[:, names.index(f"{kind}_macs")].copy() for kind in THROUGHPUT_KINDS}
    for alias, kind in THROUGHPUT_ALIASES.items():
        macs[kind] += aggregate[:, names.index(f"{alias}_macs")]
    extra = aggregate[:, [names.index("total_memory"), names.index("kernel_count")]]
    return np.hstack([np.stack([macs[kind] for kind in THROUGHPUT_KINDS], axis=1), extra])


def fit_published_devices(data_dir: str | Path, seed: int = 0, held_out: float = 0.2) -> dict[str, Any]:
    """Fit every device of :data:`PUBLISHED_DEVICES` to the FBNet and NAS-Bench-201 tables
    in ``data_dir`` and measure the errors; returns the content of ``analytic_devices.json``."""
    from nas_search.hw_models.published import load_latency_table

    directory = Path(data_dir)
    files = {"fbnet": "fbnet_cifar100_latency_ms.csv", "nb201": "nb201_cifar10_latency_ms.csv"}
    tables = {space: load_latency_table(directory / name) for space, name in files.items()}
    features = {space: _published_features(table) for space, table in tables.items()}
    rng = np.random.default_rng(seed)
    splits = {}
    for space, table in tables.items():
        order = rng.permutation(len(table))
        cut = int(round(len(order) * (1 - held_out)))
        splits[space] = (order[:cut], order[cut:])
    devices = []
    for name, (column, description) in PUBLISHED_DEVICES.items():
        latency = {space: table.latency(column) for space, table in tables.items()}
        errors: dict[str, Any] = {"in_space": {}, "new_space": {}}
        train_x = np.vstack([features[space][splits[space][0]] for space in tables])
        train_y = np.concatenate([latency[space][splits[space][0]] for space in tables])
        coefficients, constant = fit_coefficients(train_x, train_y)
        for space in tables:
            test = splits[space][1]
            errors["in_space"][space] = error_figures(features[space][test] @ coefficients + constant, latency[space][test])
        new_space_predictions, new_space_measured = [], []
        for fitted_on in tables:
            other = next(space for space in tables if space != fitted_on)
            one_coefficients, one_constant = fit_coefficients(features[fitted_on], latency[fitted_on])
            predicted = features[other] @ one_coefficients + one_constant
            errors["new_space"][f"{fitted_on}_to_{other}"] = error_figures(predicted, latency[other])
            new_space_predictions.append(predicted)
            new_space_measured.append(latency[other])
        per_direction = [errors["new_space"][key] for key in list(errors["new_space"])]
        errors["new_space"]["mean_abs_error"] = float(np.mean([figures["mean_abs_error"] for figures in per_direction]))
        errors["new_space"]["spearman"] = float(np.mean([figures["spearman"] for figures in per_direction]))
        errors["new_space"]["within_10pct"] = float(np.mean([figures["within_10pct"] for figures in per_direction]))
        all_x = np.vstack([features[space] for space in tables])
        all_y = np.concatenate([latency[space] for space in tables])
        final_coefficients, final_constant = fit_coefficients(all_x, all_y)  # shipped: fitted on everything
        devices.append(
            AnalyticDeviceModel(
                name=name,
                description=description,
                source_column=column,
                coefficients={feature: float(value) for feature, value in zip(FEATURE_NAMES, final_coefficients)},
                constant_ms=final_constant,
                errors=errors,
            ).to_dict()
        )
    return {
        "format": "nas-search-analytic-devices",
        "model": "latency_ms = sum_k macs_k * c_k + memory_elements * c_m + kernel_count * c_n + constant (all >= 0)",
        "fitted_to": {space: name for space, name in files.items()},
        "source": "HELP (Lee et al., NeurIPS 2021), shared/data/latency; MIT licence",
        "seed": seed,
        "held_out": held_out,
        "devices": devices,
    }
