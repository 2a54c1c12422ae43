"""The device registry: what ``--device NAME`` means, and where a device's latency table is.

A *device* is a (hardware, runtime) pair.  Built in:

* ``cpu``: this machine's CPU, with the ``onnxruntime`` (default) or ``torch`` runtime and a
  fixed number of threads (default 1).  ``nas-search profile --device cpu`` measures its
  table, written by default to ``latency_tables/<space>-<size>px_cpu_<runtime>_<N>t.json``
  in the working directory, where ``cost`` and ``run`` find it again.

Users add their own device with a table they measured elsewhere (same JSON format, see
:mod:`nas_search.hw_models.latency`): ``--device my-phone --lut PATH`` registers
``my-phone`` from the table (whose ``device`` field must say ``my-phone``), and
:func:`register_device` does the same from Python.

``cpu-onnxruntime`` and ``cpu-torch`` are the same CPU with the runtime fixed by the name
(``--device cpu-onnxruntime`` reads as "this CPU, onnxruntime"); each has its own table.

Named analytic devices (``pixel2``, ``samsung-a50``, ``samsung-s7``) need no table: a
roofline model whose constants were fitted to published measurements
(:mod:`nas_search.hw_models.analytic`, where their error is stated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_search.errors import UserError
from nas_search.hw_models.analytic import AnalyticDeviceModel, AnalyticLatencyModel, load_constants
from nas_search.hw_models.latency.model import LatencyModel
from nas_search.hw_models.latency.parts import has_table_support
from nas_search.hw_models.latency.runtimes import RUNTIMES
from nas_search.hw_models.latency.table import DEFAULT_TABLE_DIR, LatencyTable, default_table_path, load_table
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec


@dataclass(frozen=True)
class Device:
    """A registered device.

    Attributes:
        name: what ``--device`` takes.
        description: one line for ``nas-search devices``.
        runtimes: runtimes it has (the first is the default).
        local: whether ``nas-search profile`` can measure it on this machine.
        default_threads: thread count used when ``--threads`` is not given.
        table_path: the table of a user device (``--lut``); local devices use
            :func:`default_table_path` instead.
        analytic: the fitted roofline model of a named analytic device (no table needed).
    """

    name: str
    description: str
    runtimes: tuple[str, ...]
    local: bool
    default_threads: int = 1
    table_path: Path | None = None
    analytic: AnalyticDeviceModel | None = None

    @property
    def default_runtime(self) -> str:
        """The runtime used when ``--runtime`` is not given."""
        return self.runtimes[0]

    def check_runtime(self, runtime: str | None) -> str:
        """``runtime`` (or the default) after checking that this device has it."""
        chosen = self.default_runtime if runtime is None else runtime
        if chosen not in self.runtimes:
            raise UserError(f"device {self.name!r} has no runtime {chosen!r}; accepted: {', '.join(self.runtimes)}")
        return chosen

    def check_threads(self, threads: int | None) -> int:
        """``threads`` (or the default) after checking it is positive."""
        chosen = self.default_threads if threads is None else threads
        if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 1:
            raise UserError(f"--threads {threads!r} is invalid; accepted: a positive integer")
        return chosen


_DEVICES: dict[str, Device] = {
    "cpu": Device(
        name="cpu",
        description="this machine's CPU (profile it with `nas-search profile --device cpu`)",
        runtimes=tuple(RUNTIMES),
        local=True,
    ),
    **{
        f"cpu-{runtime}": Device(
            name=f"cpu-{runtime}",
            description=f"this machine's CPU with {runtime} (profile it with `nas-search profile --device cpu-{runtime}`)",
            runtimes=(runtime,),
            local=True,
        )
        for runtime in RUNTIMES
    },
    **{
        name: Device(name=name, description=model.description, runtimes=("published",), local=False, analytic=model)
        for name, model in load_constants().items()
    },
}


def register_device(device: Device, *, replace: bool = False) -> Device:
    """Add a device to the registry (``replace=True`` to redefine an existing name)."""
    if not device.name or any(character.isspace() or character in "/\\" for character in device.name):
        raise UserError(f"device name {device.name!r} is invalid; accepted: a non-empty name without spaces or slashes")
    if device.name in _DEVICES and not replace and _DEVICES[device.name] != device:
        raise UserError(f"device {device.name!r} is already registered; pick another name")
    _DEVICES[device.name] = device
    return device


def device_names() -> list[str]:
    """Names of the registered devices, sorted."""
    return sorted(_DEVICES)


def get_device(name: str) -> Device:
    """The registered device called ``name``; :class:`UserError` listing them otherwise."""
    if name not in _DEVICES:
        raise UserError(
            f"unknown device {name!r}; available: {', '.join(device_names())} (or your own: --device {name} --lut TABLE.json)"
        )
    return _DEVICES[name]


def register_table_device(name: str, table_path: str | Path) -> Device:
    """Register (or refresh) a user device from a table file whose ``device`` is ``name``."""
    path = Path(table_path)
    table = load_table(path)
    table.check(device=name, source=f"latency table {path}")
    existing = _DEVICES.get(name)
    if existing is not None and existing.local:
        return existing
    return register_device(
        Device(
            name=name,
            description=f"user device: {table.hardware}, {table.runtime} (table {path})",
            runtimes=(table.runtime,),
            local=False,
            default_threads=table.threads,
            table_path=path,
        ),
        replace=True,
    )


def open_table(
    space: SearchSpace,
    device_name: str,
    *,
    lut_path: str | Path | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    input_size: int | None = None,
) -> LatencyTable:
    """The latency table of ``device_name`` for ``space``, checked against what is asked
    (space, device, runtime, threads, input size); every problem is a one-line
    :class:`UserError`."""
    size = space.input_size if input_size is None else input_size
    if lut_path is not None:
        device = register_table_device(device_name, lut_path)
        path = Path(lut_path)
        chosen_runtime = runtime  # the table says which runtime it holds
    else:
        device = get_device(device_name)
        chosen_runtime = device.check_runtime(runtime)
        path = device.table_path or _local_table_path(space, device, chosen_runtime, threads, size)
    table = load_table(path, space)
    table.check(
        space=space.name,
        device=device.name,
        runtime=chosen_runtime,
        input_size=size,
        threads=threads,
        source=f"latency table {path}",
    )
    return table


def _local_table_path(space: SearchSpace, device: Device, runtime: str, threads: int | None, size: int) -> Path:
    """Where ``profile`` wrote the table of a local device; a one-line error naming the
    command that makes it when there is none."""
    chosen_threads = device.check_threads(threads)
    path = default_table_path(space.name, device.name, runtime, chosen_threads, size)
    if not path.is_file():
        raise UserError(
            f"no latency table for space {space.name!r} on device {device.name!r} ({runtime}, "
            f"{chosen_threads} thread(s), {size} px) at {path}; create it with `nas-search profile --space "
            f"{space.name} --device {device.name} --runtime {runtime} --threads {chosen_threads}` "
            f"or pass --lut PATH"
        )
    return path


def latency_model_for(
    space: SearchSpace,
    device_name: str,
    lut_path: str | Path | None = None,
    input_size: int | None = None,
    *,
    runtime: str | None = None,
    threads: int | None = None,
    statistic: str = "median",
) -> LatencyModel | AnalyticLatencyModel:
    """The latency cost model (``spec -> ms``) of ``space`` on a registered device, or on a
    user device given by its table (``lut_path``)."""
    analytic = _DEVICES[device_name].analytic if lut_path is None and device_name in _DEVICES else None
    if analytic is not None:
        _DEVICES[device_name].check_runtime(runtime)
        return AnalyticLatencyModel(analytic, space, input_size)
    if lut_path is None:
        get_device(device_name)  # an unknown name is named as such first
    check_table_space(space, device_name, lut_path)
    table = open_table(space, device_name, lut_path=lut_path, runtime=runtime, threads=threads, input_size=input_size)
    return LatencyModel(table, space, statistic=statistic)


def analytic_device_names() -> tuple[str, ...]:
    """The registered devices that need no table (named analytic models)."""
    return tuple(name for name, device in _DEVICES.items() if device.analytic is not None)


def check_table_space(space: SearchSpace, device_name: str, lut_path: str | Path | None = None) -> None:
    """Refuse a latency table for a space latency tables do not cover (one whose
    ``network_costs`` carry no ``latency_table``,
    :func:`~nas_search.hw_models.latency.parts.has_table_support`), naming what works instead."""
    if not has_table_support(space):
        what = f"--lut {lut_path}" if lut_path is not None else f"device {device_name!r} (a latency table)"
        raise UserError(
            f"{what}: latency tables are profiled for classifier and detection spaces only; accepted for space "
            f"{space.name!r} (task {space.task}): the analytic devices {', '.join(analytic_device_names())} "
            "(without --lut), or --budget / --memory"
        )


def device_cost(
    spec: ArchSpec,
    space: SearchSpace,
    device_name: str,
    *,
    lut_path: str | Path | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    input_size: int | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Predicted latency and peak activation memory of ``spec`` on a device, as a dict for
    ``nas-search cost ARCH --device NAME`` (printed next to the FLOPs); ``num_classes``
    as in :func:`~nas_search.hw_models.flops.count_flops` (default: the space's)."""
    from nas_search.hw_models.memory import model_program, peak_of_program

    model = latency_model_for(space, device_name, lut_path, input_size, runtime=runtime, threads=threads)
    model = model.for_classes(num_classes)
    memory = peak_of_program(model_program(space, spec, model.input_size, num_classes))
    if isinstance(model, AnalyticLatencyModel):
        return {
            "device": model.device,
            "hardware": model.device_model.description,
            "latency_ms": model(spec),
            "model": model.describe(),
            "errors": dict(model.device_model.errors),
            "peak_memory_bytes": memory.peak_bytes,
            "peak_memory_layer": memory.peak_layer,
        }
    prediction = model.predict(spec)
    return {
        "device": model.device,
        "hardware": model.table.hardware,
        "latency_ms": prediction.latency_ms,
        "lut_sum_ms": prediction.lut_sum_ms,
        "parts": prediction.parts,
        "estimated_parts": prediction.estimated_parts,
        "corrected": prediction.corrected,
        "model": model.describe(),
        "peak_memory_bytes": memory.peak_bytes,
        "peak_memory_layer": memory.peak_layer,
    }


def describe_devices() -> list[dict[str, Any]]:
    """One row per registered device, for ``nas-search devices``."""
    return [
        {
            "name": device.name,
            "description": device.description,
            "runtimes": list(device.runtimes),
            "local": device.local,
            "default_threads": device.default_threads,
            "table": None if device.table_path is None else str(device.table_path),
            "analytic": device.analytic is not None,
        }
        for device in (_DEVICES[name] for name in device_names())
    ]


__all__ = [
    "DEFAULT_TABLE_DIR",
    "Device",
    "analytic_device_names",
    "check_table_space",
    "default_table_path",
    "describe_devices",
    "device_cost",
    "device_names",
    "get_device",
    "latency_model_for",
    "open_table",
    "register_device",
    "register_table_device",
]
