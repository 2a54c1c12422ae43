"""Published latency tables (the HELP data, NeurIPS'21): CSVs of measured latencies of the
architectures of one search space (FBNet, OFA MobileNetV3, NAS-Bench-201) on many devices.

:func:`load_latency_table` reads one, detects its space from the header and featurises
every architecture (:mod:`nas_search.hw_models.features`). The analytic devices are fitted
on these tables (:func:`nas_search.hw_models.analytic.fit_published_devices`); the
transfer predictors of the research benchmarks (``benchmarks/lib/external.py``) read them
too.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nas_search.errors import UserError
from nas_search.hw_models import features as feature_module
from nas_search.hw_models.features import ArchitectureFeatures, Block


@dataclass(frozen=True)
class TableFormat:
    """How one search space's latency CSV is laid out and turned into layers.

    Attributes:
        space: short name of the search space.
        id_column: the column holding the architecture id.
        architecture_columns: the columns that encode an architecture.
        describe: ``row -> (blocks of layers, positional encoding)`` for one CSV row.
        positional_names: names of the positional encoding values.
        stage_count: number of stages, stem and head included.
    """

    space: str
    id_column: str
    architecture_columns: tuple[str, ...]
    describe: Callable[[Mapping[str, str]], tuple[list[Block], list[float]]]
    positional_names: tuple[str, ...]
    stage_count: int

    def signature(self) -> str:
        """One-line description of the expected header, for error messages."""
        return f"{self.space} ({', '.join((self.id_column, *self.architecture_columns))}, then one column per device)"


def _describe_fbnet(row: Mapping[str, str]) -> tuple[list[Block], list[float]]:
    operations = feature_module.parse_fbnet(row["layers"])
    return feature_module.fbnet_blocks(operations), feature_module.fbnet_positional(operations)


def _describe_ofa(row: Mapping[str, str]) -> tuple[list[Block], list[float]]:
    architecture = feature_module.parse_ofa(row["kernel_sizes"], row["expand_ratios"], row["depths"], row["resolution"])
    return feature_module.ofa_blocks(architecture), feature_module.ofa_positional(architecture)


def _describe_nb201(row: Mapping[str, str]) -> tuple[list[Block], list[float]]:
    operations = feature_module.parse_nb201(row["arch_str"])
    return feature_module.nb201_blocks(operations), feature_module.nb201_positional(operations)


#: Known latency table layouts, detected from the CSV header.
TABLE_FORMATS: dict[str, TableFormat] = {
    "fbnet": TableFormat(
        "fbnet",
        "arch_id",
        ("layers",),
        _describe_fbnet,
        feature_module.FBNET_POSITIONAL_NAMES,
        feature_module.FBNET_STAGE_COUNT,
    ),
    "ofa_mbv3": TableFormat(
        "ofa_mbv3",
        "arch_id",
        ("kernel_sizes", "expand_ratios", "depths", "resolution"),
        _describe_ofa,
        feature_module.OFA_POSITIONAL_NAMES,
        feature_module.OFA_STAGE_COUNT,
    ),
    "nb201": TableFormat(
        "nb201",
        "nb201_idx",
        ("arch_str",),
        _describe_nb201,
        feature_module.NB201_POSITIONAL_NAMES,
        feature_module.NB201_STAGE_COUNT,
    ),
}
#: Columns that are neither architecture nor device (accuracies in the NAS-Bench-201 table).
NON_DEVICE_PREFIXES: tuple[str, ...] = ("acc_",)
#: Prefix some tables put before device names (``lat_gold_6226``); dropped from device names.
DEVICE_COLUMN_PREFIX = "lat_"
#: A device name ending in ``_<power of two>`` is that hardware at that batch size.
BATCH_SUFFIX = re.compile(r"^(?P<hardware>.+)_(?P<batch>1|2|4|8|16|32|64|128|256|512|1024)$")


def hardware_of(device: str) -> str:
    """The hardware a device column measures: ``'titan_rtx_256'`` -> ``'titan_rtx'``.

    Only a power-of-two suffix is read as a batch size, so ``gold_6226`` stays itself.
    """
    match = BATCH_SUFFIX.match(device)
    return match.group("hardware") if match else device


@dataclass(frozen=True)
class LatencyTable:
    """Measured latencies (ms) of the architectures of one search space on several devices.

    Attributes:
        path: the CSV it was read from.
        space: the search space, a key of :data:`TABLE_FORMATS`.
        architecture_ids: the id column, one per row.
        devices: device names (column names without a ``lat_`` prefix).
        latency_ms: ``(architectures, devices)`` array of latencies in milliseconds.
        features: layer-wise features of every architecture.
        extra_columns: other numeric columns (e.g. NAS-Bench-201 accuracies), by name.
    """

    path: Path
    space: str
    architecture_ids: tuple[str, ...]
    devices: tuple[str, ...]
    latency_ms: np.ndarray
    features: ArchitectureFeatures
    extra_columns: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.architecture_ids)

    def device_index(self, device: str) -> int:
        """Column index of ``device``; :class:`UserError` naming the known devices otherwise."""
        if device not in self.devices:
            raise UserError(f"device {device!r} is not in {self.path.name}; known devices: {', '.join(self.devices)}")
        return self.devices.index(device)

    def latency(self, device: str) -> np.ndarray:
        """Latencies (ms) of every architecture on ``device``."""
        return self.latency_ms[:, self.device_index(device)]

    def with_latency(self, latency_ms: np.ndarray) -> LatencyTable:
        """A copy of the table with other latency values (same shape)."""
        latency_ms = np.asarray(latency_ms, dtype=np.float64)
        if latency_ms.shape != self.latency_ms.shape:
            raise UserError(f"latency array shape {latency_ms.shape} does not match the table's {self.latency_ms.shape}")
        return replace(self, latency_ms=latency_ms)


def load_latency_table(path: str | Path) -> LatencyTable:
    """Read a latency CSV, detect its search space from the header and featurise every row.

    Raises :class:`UserError` when the file is missing, its header matches none of
    :data:`TABLE_FORMATS`, or a device value is not a positive number.
    """
    path = Path(path)
    accepted = "; ".join(table_format.signature() for table_format in TABLE_FORMATS.values())
    if not path.is_file():
        raise UserError(f"latency table {str(path)!r} does not exist; expected a CSV in one of the formats: {accepted}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = tuple(reader.fieldnames or ())
        table_format = _detect_format(header)
        if table_format is None:
            raise UserError(f"{path}: header {','.join(header)[:120]!r} matches no latency table format; accepted: {accepted}")
        rows = list(reader)
    if not rows:
        raise UserError(f"{path}: no architecture rows; expected one row per architecture")
    reserved = {table_format.id_column, *table_format.architecture_columns}
    extra_names = [name for name in header if name not in reserved and name.startswith(NON_DEVICE_PREFIXES)]
    device_columns = [name for name in header if name not in reserved and name not in extra_names]
    if not device_columns:
        raise UserError(f"{path}: no device columns besides {', '.join(sorted(reserved))}; expected latencies in ms")
    latency = _numeric_columns(path, rows, device_columns, positive=True)
    extra = _numeric_columns(path, rows, extra_names, positive=False)
    block_lists: list[list[Block]] = []
    positional_rows: list[list[float]] = []
    for line, row in enumerate(rows, start=2):
        try:
            blocks, positional = table_format.describe(row)
        except UserError as error:
            raise UserError(f"{path}, line {line}: {error}") from None
        block_lists.append(blocks)
        positional_rows.append(positional)
    architecture_features = feature_module.build_features(
        block_lists, positional_rows, table_format.positional_names, table_format.stage_count
    )
    devices = tuple(name.removeprefix(DEVICE_COLUMN_PREFIX) for name in device_columns)
    return LatencyTable(
        path=path,
        space=table_format.space,
        architecture_ids=tuple(row[table_format.id_column] for row in rows),
        devices=devices,
        latency_ms=latency,
        features=architecture_features,
        extra_columns={name: extra[:, index] for index, name in enumerate(extra_names)},
    )


def _detect_format(header: Sequence[str]) -> TableFormat | None:
    for table_format in TABLE_FORMATS.values():
        if {table_format.id_column, *table_format.architecture_columns} <= set(header):
            return table_format
    return None


def _numeric_columns(path: Path, rows: Sequence[Mapping[str, str]], names: Sequence[str], *, positive: bool) -> np.ndarray:
    values = np.zeros((len(rows), len(names)))
    for line, row in enumerate(rows, start=2):
        for column, name in enumerate(names):
            text = row.get(name) or ""
            try:
                value = float(text)
            except ValueError:
                value = float("nan")
            if not np.isfinite(value) or (positive and value <= 0):
                accepted = "a positive number of milliseconds" if positive else "a number"
                raise UserError(f"{path}, line {line}, column {name!r}: value {text!r} is invalid; expected {accepted}")
            values[line - 2, column] = value
    return values


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
