"""The latency table file: measured parts and whole subnets of one space on one device,
written as JSON and read back with every problem reported as a one-line error."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nas_search.errors import UserError, missing_file
from nas_search.hw_models.latency.parts import BlockConfig, part_kinds
from nas_search.hw_models.latency.runtimes import RUNTIMES
from nas_search.hw_models.latency.timing import Timing
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec
from nas_search.utils import atomic_write_text

TABLE_FORMAT = "nas-search-latency-table"
TABLE_FORMAT_VERSION = 1
#: Where ``profile`` writes, and ``cost`` / ``run`` look for, tables of local devices.
DEFAULT_TABLE_DIR = Path("latency_tables")


@dataclass(frozen=True)
class BlockMeasurement:
    """A table entry: a part and its measured latency."""

    config: BlockConfig
    latency_ms: float
    min_ms: float


@dataclass(frozen=True)
class SubnetMeasurement:
    """A whole subnet and its measured latency."""

    spec: ArchSpec
    latency_ms: float
    min_ms: float


@dataclass
class LatencyTable:
    """A latency lookup table of one space on one device, with whole-subnet measurements.

    Attributes:
        space / device / hardware / runtime / threads: what was profiled where.
        input_size / channel_divisor / num_classes: the deployment shape profiled.
        versions: library versions; created / updated: ISO dates (UTC).
        timing: the timing options used; widths: width subset profiled (None = all).
        distinct_blocks: number of distinct parts of the (possibly restricted) space.
        entries: measured parts by key; subnets: measured whole subnets.
    """

    space: str
    device: str
    hardware: str
    runtime: str
    threads: int
    input_size: int
    channel_divisor: int = 8
    num_classes: int = 10
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    timing: dict[str, Any] = field(default_factory=dict)
    widths: tuple[float, ...] | None = None
    distinct_blocks: int = 0
    entries: dict[str, BlockMeasurement] = field(default_factory=dict)
    subnets: list[SubnetMeasurement] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``device/runtime/Nthread(s)``, used as a cost model's ``device``."""
        return f"{self.device}/{self.runtime}/{self.threads}thread{'s' if self.threads != 1 else ''}"

    def add_entry(self, config: BlockConfig, timing: Timing) -> None:
        """Record a measured part."""
        self.entries[config.key] = BlockMeasurement(config, timing.median_ms, timing.min_ms)

    def add_subnet(self, spec: ArchSpec, timing: Timing) -> None:
        """Record a measured whole subnet."""
        self.subnets.append(SubnetMeasurement(spec, timing.median_ms, timing.min_ms))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the file format)."""
        return {
            "format": TABLE_FORMAT,
            "format_version": TABLE_FORMAT_VERSION,
            "space": self.space,
            "device": self.device,
            "hardware": self.hardware,
            "runtime": self.runtime,
            "threads": self.threads,
            "input_size": self.input_size,
            "channel_divisor": self.channel_divisor,
            "num_classes": self.num_classes,
            "versions": dict(self.versions),
            "created": self.created,
            "updated": self.updated,
            "timing": dict(self.timing),
            "widths": None if self.widths is None else list(self.widths),
            "distinct_blocks": self.distinct_blocks,
            "blocks": [
                {**entry.config.to_dict(), "latency_ms": round(entry.latency_ms, 6), "min_ms": round(entry.min_ms, 6)}
                for entry in self.entries.values()
            ],
            "subnets": [
                {
                    "arch": str(item.spec),
                    "spec": item.spec.to_dict(),
                    "latency_ms": round(item.latency_ms, 6),
                    "min_ms": round(item.min_ms, 6),
                }
                for item in self.subnets
            ],
        }

    def save(self, path: str | Path) -> Path:
        """Write the table atomically as JSON."""
        self.updated = now()
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    def check(
        self,
        *,
        space: str | None = None,
        runtime: str | None = None,
        device: str | None = None,
        input_size: int | None = None,
        threads: int | None = None,
        source: str = "latency table",
    ) -> None:
        """Raise :class:`UserError` when the table does not match what is asked for."""
        wanted = {"space": space, "runtime": runtime, "device": device, "input_size": input_size, "threads": threads}
        for name, value in wanted.items():
            actual = getattr(self, name)
            if value is not None and value != actual:
                raise UserError(
                    f"{source} was profiled for {name} {actual!r}, not {value!r}; profile one with "
                    f"`nas-search profile` for {name} {value!r} or pass a matching table"
                )


def now() -> str:
    """The current UTC time, ISO format, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _positive_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{what}={value!r} is invalid; allowed: a positive number of milliseconds")
    return float(value)


_REQUIRED_TYPES: dict[str, type | tuple[type, ...]] = {
    "space": str,
    "device": str,
    "hardware": str,
    "runtime": str,
    "threads": int,
    "input_size": int,
    "channel_divisor": int,
    "num_classes": int,
    "blocks": list,
    "subnets": list,
}


def table_from_dict(data: Any, source: str = "latency table", space: SearchSpace | None = None) -> LatencyTable:
    """Parse and check the file format; every problem is a one-line :class:`UserError`.

    With ``space`` the table must be of that space and its parts of the space's part kinds
    (:func:`~nas_search.hw_models.latency.parts.part_kinds`); without it any part kind
    name is read, and the kinds are checked when the table meets its space."""
    if not isinstance(data, Mapping) or data.get("format") != TABLE_FORMAT:
        raise UserError(f"{source} is not a nas-search latency table (expected a JSON object with format {TABLE_FORMAT!r})")
    if data.get("format_version") != TABLE_FORMAT_VERSION:
        raise UserError(f"{source} has format_version {data.get('format_version')!r}; supported: {TABLE_FORMAT_VERSION}")
    for name, expected in _REQUIRED_TYPES.items():
        value = data.get(name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise UserError(
                f"{source} field {name}={value!r} is missing or invalid; expected {getattr(expected, '__name__', expected)}"
            )
    if data["runtime"] not in RUNTIMES and data["device"] == "cpu":
        raise UserError(f"{source} has runtime {data['runtime']!r}; accepted for device 'cpu': {', '.join(RUNTIMES)}")
    table = LatencyTable(
        space=data["space"],
        device=data["device"],
        hardware=data["hardware"],
        runtime=data["runtime"],
        threads=data["threads"],
        input_size=data["input_size"],
        channel_divisor=data["channel_divisor"],
        num_classes=data["num_classes"],
        versions=dict(data.get("versions") or {}),
        created=str(data.get("created", "")),
        updated=str(data.get("updated", "")),
        timing=dict(data.get("timing") or {}),
        widths=None if data.get("widths") is None else tuple(float(width) for width in data["widths"]),
        distinct_blocks=int(data.get("distinct_blocks") or 0),
    )
    kinds = None
    if space is not None:
        table.check(space=space.name, source=source)
        kinds = part_kinds(space)
    for index, row in enumerate(data["blocks"]):
        if not isinstance(row, Mapping):
            raise UserError(f"{source} blocks[{index}] is not an object")
        row = dict(row)
        latency = _positive_number(row.pop("latency_ms", None), f"{source} blocks[{index}].latency_ms")
        minimum = _positive_number(row.pop("min_ms", latency), f"{source} blocks[{index}].min_ms")
        try:
            config = BlockConfig.from_dict(row, kinds)
        except UserError as error:
            raise UserError(f"{source} blocks[{index}]: {error}") from None
        table.entries[config.key] = BlockMeasurement(config, latency, minimum)
    for index, row in enumerate(data["subnets"]):
        if not isinstance(row, Mapping) or "spec" not in row:
            raise UserError(f"{source} subnets[{index}] is not an object with a 'spec'")
        latency = _positive_number(row.get("latency_ms"), f"{source} subnets[{index}].latency_ms")
        minimum = _positive_number(row.get("min_ms", latency), f"{source} subnets[{index}].min_ms")
        try:
            spec = ArchSpec.from_dict(row["spec"])
        except UserError as error:
            raise UserError(f"{source} subnets[{index}]: {error}") from None
        if spec.space != table.space:
            raise UserError(f"{source} subnets[{index}] is an architecture of space {spec.space!r}, not {table.space!r}")
        table.subnets.append(SubnetMeasurement(spec, latency, minimum))
    return table


def load_table(path: str | Path, space: SearchSpace | None = None) -> LatencyTable:
    """Read a latency table file (JSON); with ``space``, check that it is a table of that
    space whose parts are of the space's part kinds (see :func:`table_from_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latency table {missing_file(path)}: {path} (create one with `nas-search profile`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"latency table {path} is not valid JSON: {str(error).splitlines()[0]}") from None
    return table_from_dict(data, source=f"latency table {path}", space=space)


def default_table_path(space: str, device: str, runtime: str, threads: int, input_size: int) -> Path:
    """Where the table of a local device is written by ``profile`` and looked up later."""
    return DEFAULT_TABLE_DIR / f"{space}-{input_size}px_{device}_{runtime}_{threads}t.json"


__all__ = [
    "DEFAULT_TABLE_DIR",
    "TABLE_FORMAT",
    "TABLE_FORMAT_VERSION",
    "BlockMeasurement",
    "LatencyTable",
    "SubnetMeasurement",
    "default_table_path",
    "load_table",
    "table_from_dict",
]
