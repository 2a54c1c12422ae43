"""Tabular NAS-Bench-201 space: a ground truth for checking a search strategy.

NAS-Bench-201 (Dong and Yang, ICLR 2020) searches one cell with four nodes.  Every one of
the six edges ``j <- i`` (``i < j``) carries one of five operations, so the space holds
``5 ** 6 = 15,625`` cells.  A cell is written as the standard architecture string::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|

where the group after the ``k``-th ``+`` lists the inputs of node ``k + 1`` and ``op~i``
means "operation ``op`` applied to node ``i``".

:class:`NasBench201Table` reads a CSV that lists every cell once with its accuracy per
dataset and its measured latency per device (the HELP / NATS-Bench table in
``../shared/data/latency/nb201_cifar10_latency_ms.csv``; nothing is bundled).  It samples
cells from an Optuna trial, looks them up, and finds the true constrained optimum by an
exhaustive scan, so a search run can be scored by its exact regret.

Column convention of the CSV: ``arch_str``; one ``lat_<device>`` column per device
(milliseconds); one ``acc_<dataset>_test`` column per dataset (percent); an optional
``nb201_idx`` with the standard NAS-Bench-201 index.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nas_search.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import optuna

#: The five NAS-Bench-201 operations, in the benchmark's own order.
OPERATIONS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: The six edges as ``(to_node, from_node)``, in the order the architecture string lists them.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

#: Nodes that receive edges (node 0 is the cell input).
INTERMEDIATE_NODES: int = len({to_node for to_node, _ in EDGES})

#: Number of cells in the full space.
SPACE_SIZE: int = len(OPERATIONS) ** len(EDGES)

ARCH_COLUMN = "arch_str"
INDEX_COLUMN = "nb201_idx"
LATENCY_PREFIX = "lat_"
ACCURACY_PREFIX = "acc_"
ACCURACY_SUFFIX = "_test"

#: Friendlier dataset names accepted besides the column stems (``cifar10``, ``cifar100``,
#: ``imagenet16``).
DATASET_ALIASES: dict[str, str] = {"imagenet16-120": "imagenet16", "imagenet16_120": "imagenet16"}

#: Name of the constraint (and user attribute suffix) that :meth:`NasBench201Table.make_objective`
#: records on each trial.
LATENCY_CONSTRAINT = "latency_ms"


def edge_parameter_name(to_node: int, from_node: int) -> str:
    """Optuna parameter name of one edge, e.g. ``edge_1<-0``; stable across releases."""
    return f"edge_{to_node}<-{from_node}"


#: Parameter names in edge order.
EDGE_PARAMETERS: tuple[str, ...] = tuple(edge_parameter_name(to_node, from_node) for to_node, from_node in EDGES)


def format_arch(operations: tuple[str, ...] | list[str]) -> str:
    """Architecture string of the cell whose edges (in :data:`EDGES` order) carry ``operations``."""
    if len(operations) != len(EDGES):
        raise UserError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(operations)} operations")
    unknown = [operation for operation in operations if operation not in OPERATIONS]
    if unknown:
        raise UserError(f"unknown NAS-Bench-201 operation {unknown[0]!r}; accepted: {', '.join(OPERATIONS)}")
    inputs_by_node: dict[int, list[str]] = {}
    for (to_node, from_node), operation in zip(EDGES, operations):
        inputs_by_node.setdefault(to_node, []).append(f"{operation}~{from_node}")
    return "+".join("|" + "|".join(inputs) + "|" for inputs in inputs_by_node.values())


def parse_arch(arch_str: str) -> tuple[str, ...]:
    """Operations on the six edges (in :data:`EDGES` order) of an architecture string.

    Raises:
        UserError: when the string is not a NAS-Bench-201 cell.
    """
    expected = "expected e.g. |nor_conv_3x3~0|+|skip_connect~0|none~1|+|op~0|op~1|op~2| with ops " + ", ".join(OPERATIONS)
    groups = arch_str.strip().split("+")
    if len(groups) != INTERMEDIATE_NODES:
        raise UserError(f"bad NAS-Bench-201 arch string {arch_str!r}: {expected}")
    operations: list[str] = []
    for to_node, group in enumerate(groups, start=1):
        well_formed = len(group) > 2 and group.startswith("|") and group.endswith("|")
        items = group[1:-1].split("|") if well_formed else []
        if len(items) != to_node:
            raise UserError(f"bad NAS-Bench-201 arch string {arch_str!r}: {expected}")
        for from_node, item in enumerate(items):
            operation, _, source = item.partition("~")
            if operation not in OPERATIONS or source != str(from_node):
                raise UserError(f"bad NAS-Bench-201 arch string {arch_str!r} at {item!r}: {expected}")
            operations.append(operation)
    return tuple(operations)


def arch_from_params(params: Mapping[str, object]) -> str:
    """Architecture string from a trial's parameters (``trial.params`` or ``FrozenTrial.params``)."""
    missing = [name for name in EDGE_PARAMETERS if name not in params]
    if missing:
        raise UserError(f"trial parameters lack {', '.join(missing)}; expected all of {', '.join(EDGE_PARAMETERS)}")
    return format_arch([str(params[name]) for name in EDGE_PARAMETERS])


@dataclass(frozen=True)
class NasBench201Record:
    """One cell of the table.

    Attributes:
        arch_str: the standard architecture string.
        index: the NAS-Bench-201 index (row order when the CSV has no index column).
        accuracy: test accuracy in percent, by dataset name.
        latency_ms: measured latency in milliseconds, by device name.
    """

    arch_str: str
    index: int
    accuracy: Mapping[str, float]
    latency_ms: Mapping[str, float]


class NasBench201Table:
    """The NAS-Bench-201 space as a lookup table of accuracies and latencies.

    Build it with :meth:`from_csv`.  Datasets and devices are named by their column stems:
    ``acc_cifar100_test`` is dataset ``cifar100``, ``lat_pixel2`` is device ``pixel2``
    (the full column name is accepted too).
    """

    operations: tuple[str, ...] = OPERATIONS
    edges: tuple[tuple[int, int], ...] = EDGES

    def __init__(
        self,
        arch_strings: list[str],
        indices: np.ndarray,
        accuracy: Mapping[str, np.ndarray],
        latency_ms: Mapping[str, np.ndarray],
    ) -> None:
        """Build from column arrays (row ``k`` of every array describes ``arch_strings[k]``)."""
        self._arch_strings = list(arch_strings)
        self._indices = np.asarray(indices, dtype=np.int64)
        self._accuracy = {name: np.asarray(values, dtype=np.float64) for name, values in accuracy.items()}
        self._latency = {name: np.asarray(values, dtype=np.float64) for name, values in latency_ms.items()}
        self._row_of = {arch: row for row, arch in enumerate(self._arch_strings)}

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_csv(cls, path: str | Path) -> NasBench201Table:
        """Read the table from a CSV (see the module docstring for its columns).

        Raises:
            UserError: when the file is missing, a required column is absent, a value is not
                a number, or the rows do not cover each of the 15,625 cells exactly once.
        """
        path = Path(path)
        if not path.is_file():
            raise UserError(
                f"NAS-Bench-201 table not found: {path}; expected a CSV such as "
                "../shared/data/latency/nb201_cifar10_latency_ms.csv"
            )
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None) or []
            accuracy_columns = {
                column[len(ACCURACY_PREFIX) : -len(ACCURACY_SUFFIX)]: column
                for column in header
                if column.startswith(ACCURACY_PREFIX) and column.endswith(ACCURACY_SUFFIX)
            }
            latency_columns = {column[len(LATENCY_PREFIX) :]: column for column in header if column.startswith(LATENCY_PREFIX)}
            problems = []
            if ARCH_COLUMN not in header:
                problems.append(f"column {ARCH_COLUMN!r}")
            if not accuracy_columns:
                problems.append(f"at least one {ACCURACY_PREFIX}<dataset>{ACCURACY_SUFFIX} column")
            if not latency_columns:
                problems.append(f"at least one {LATENCY_PREFIX}<device> column")
            if problems:
                raise UserError(f"{path} lacks {'; '.join(problems)} (found columns: {', '.join(header) or 'none'})")
            position = {column: number for number, column in enumerate(header)}
            arch_position = position[ARCH_COLUMN]
            index_position = position.get(INDEX_COLUMN)
            numeric = {
                **{f"acc:{name}": column for name, column in accuracy_columns.items()},
                **{f"lat:{name}": column for name, column in latency_columns.items()},
            }
            arch_strings: list[str] = []
            indices: list[int] = []
            values: dict[str, list[float]] = {key: [] for key in numeric}
            for line_number, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise UserError(f"{path}:{line_number}: {len(row)} fields, header has {len(header)}")
                arch = row[arch_position]
                parse_arch(arch)
                arch_strings.append(arch)
                indices.append(int(row[index_position]) if index_position is not None else line_number - 2)
                for key, column in numeric.items():
                    text = row[position[column]]
                    try:
                        number = float(text)
                    except ValueError:
                        raise UserError(f"{path}:{line_number}: column {column!r} holds {text!r}, expected a number") from None
                    if not math.isfinite(number):
                        raise UserError(f"{path}:{line_number}: column {column!r} holds {text!r}, expected a finite number")
                    values[key].append(number)
        unique = set(arch_strings)
        if len(unique) != len(arch_strings):
            raise UserError(f"{path}: {len(arch_strings) - len(unique)} duplicate {ARCH_COLUMN} rows; expected each cell once")
        if len(unique) != SPACE_SIZE:
            raise UserError(f"{path}: covers {len(unique)} of the {SPACE_SIZE} NAS-Bench-201 cells; expected the full space")
        return cls(
            arch_strings,
            np.asarray(indices),
            {name: np.asarray(values[f"acc:{name}"]) for name in accuracy_columns},
            {name: np.asarray(values[f"lat:{name}"]) for name in latency_columns},
        )

    # ----------------------------------------------------------------- names
    @property
    def devices(self) -> list[str]:
        """Device names (latency column stems), in CSV order."""
        return list(self._latency)

    @property
    def datasets(self) -> list[str]:
        """Dataset names (accuracy column stems), in CSV order."""
        return list(self._accuracy)

    @property
    def arch_strings(self) -> list[str]:
        """Every architecture string, in table order."""
        return list(self._arch_strings)

    def __len__(self) -> int:
        return len(self._arch_strings)

    def resolve_device(self, device: str) -> str:
        """Device name for ``device`` given as a stem (``gold_6226``) or column (``lat_gold_6226``)."""
        name = device[len(LATENCY_PREFIX) :] if device.startswith(LATENCY_PREFIX) else device
        if name not in self._latency:
            raise UserError(f"unknown device {device!r}; accepted: {', '.join(self.devices)}")
        return name

    def resolve_dataset(self, dataset: str) -> str:
        """Dataset name for ``dataset`` given as a stem, an alias or a full column name."""
        name = dataset
        if name.startswith(ACCURACY_PREFIX) and name.endswith(ACCURACY_SUFFIX):
            name = name[len(ACCURACY_PREFIX) : -len(ACCURACY_SUFFIX)]
        name = DATASET_ALIASES.get(name.lower(), name.lower())
        if name not in self._accuracy:
            raise UserError(f"unknown dataset {dataset!r}; accepted: {', '.join(self.datasets)}")
        return name

    # ----------------------------------------------------------------- queries
    def lookup(self, arch_str: str) -> NasBench201Record:
        """Accuracy per dataset and latency per device of one cell.

        Raises:
            UserError: when ``arch_str`` is not a cell of this table.
        """
        row = self._row_of.get(arch_str)
        if row is None:
            parse_arch(arch_str)  # raises with the expected format when malformed
            raise UserError(f"arch {arch_str!r} is not in the table")
        return NasBench201Record(
            arch_str=arch_str,
            index=int(self._indices[row]),
            accuracy={name: float(column[row]) for name, column in self._accuracy.items()},
            latency_ms={name: float(column[row]) for name, column in self._latency.items()},
        )

    def accuracy_column(self, dataset: str) -> np.ndarray:
        """Read-only view of every cell's accuracy on ``dataset``, in table order."""
        view = self._accuracy[self.resolve_dataset(dataset)].view()
        view.flags.writeable = False
        return view

    def latency_column(self, device: str) -> np.ndarray:
        """Read-only view of every cell's latency on ``device`` (ms), in table order."""
        view = self._latency[self.resolve_device(device)].view()
        view.flags.writeable = False
        return view

    def suggest(self, trial: optuna.Trial) -> str:
        """Sample one cell: one categorical parameter per edge, named ``edge_<to><-<from>``."""
        return format_arch([trial.suggest_categorical(name, OPERATIONS) for name in EDGE_PARAMETERS])

    def constrained_optimum(self, dataset: str, device: str, latency_budget_ms: float) -> tuple[str, float]:
        """The most accurate cell whose latency on ``device`` is at most ``latency_budget_ms``.

        Found by an exhaustive scan.  Ties in accuracy go to the lower latency, then to the
        earlier row.

        Raises:
            UserError: on an unknown dataset or device, or a budget no cell meets.
        """
        accuracy = self._accuracy[self.resolve_dataset(dataset)]
        latency = self._latency[self.resolve_device(device)]
        feasible = latency <= latency_budget_ms
        if not feasible.any():
            raise UserError(
                f"latency budget {latency_budget_ms} ms on {device!r} excludes every cell; "
                f"the fastest takes {latency.min():.4g} ms"
            )
        rows = np.flatnonzero(feasible)
        # lexsort: last key is primary -> highest accuracy, then lowest latency, then first row.
        order = np.lexsort((rows, latency[rows], -accuracy[rows]))
        best = int(rows[order[0]])
        return self._arch_strings[best], float(accuracy[best])

    def make_objective(self, dataset: str, device: str, latency_budget_ms: float) -> Callable[[optuna.Trial], float]:
        """An Optuna objective: one trial is one table query.

        The objective samples a cell, returns its accuracy (maximise), sets the constraint
        ``latency_ms`` = latency - budget (feasible when <= 0) through
        ``trial.set_constraint``, and records ``arch_str``, ``latency_ms``, the constraint
        value and ``feasible`` as user attributes so that optuna-dashboard shows them.
        """
        from nas_search.search.samplers import record_constraints

        dataset_name = self.resolve_dataset(dataset)
        device_name = self.resolve_device(device)
        accuracy = self._accuracy[dataset_name]
        latency = self._latency[device_name]
        budget = float(latency_budget_ms)

        def objective(trial: optuna.Trial) -> float:
            arch = self.suggest(trial)
            row = self._row_of[arch]
            trial.set_user_attr("arch_str", arch)
            trial.set_user_attr("latency_ms", float(latency[row]))
            record_constraints(trial, {LATENCY_CONSTRAINT: float(latency[row]) - budget})
            return float(accuracy[row])

        return objective
