"""The cost report behind ``nas-search cost``: analytic FLOPs and params, fvcore's count as a
check, and a device's latency and memory."""

from __future__ import annotations

from pathlib import Path

from nas_search.errors import UserError
from nas_search.hw_models.flops import count_flops
from nas_search.spec import ArchSpec, load_arch
from nas_search.tasks import get_space, get_task
from nas_search.units import check_input_size


def cost_report(
    arch: str | Path | ArchSpec,
    *,
    space_name: str | None = None,
    input_size: int | None = None,
    num_classes: int | None = None,
    check_fvcore: bool = False,
    device: str | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    lut: str | Path | None = None,
) -> dict:
    """FLOPs, params and per-stage breakdown of an architecture; with ``check_fvcore``
    also fvcore's count on the extracted (randomly initialised) static model; with
    ``device`` the predicted latency and peak activation memory on that device (a
    registered device, or ``lut`` for a user device's own table)."""
    spec = arch if isinstance(arch, ArchSpec) else load_arch(arch)
    space = get_space(space_name or spec.space)
    if space_name and spec.space != space_name:
        raise UserError(f"architecture is for space {spec.space!r}, not {space_name!r}")
    check_input_size(input_size)
    if num_classes is not None and num_classes < 1:
        raise UserError(f"--num-classes {num_classes}; accepted: 1 or more")
    size = space.input_size if input_size is None else input_size
    breakdown = count_flops(spec, space, size, num_classes)
    report = {"arch_string": str(spec), "space": space.name, "input_size": size, **breakdown.to_dict()}
    if check_fvcore:
        from nas_search.hw_models.fvcore_count import fvcore_flops

        report["fvcore_flops"] = fvcore_flops(_reference_model(spec, space, num_classes), size)
    if device is not None or lut is not None:
        from nas_search.hw_models.devices import device_cost

        if device is None:
            raise UserError("--lut needs --device NAME (the device the table was profiled on)")
        report["device"] = device_cost(
            spec, space, device, lut_path=lut, runtime=runtime, threads=threads, input_size=size, num_classes=num_classes
        )
    return report


def _reference_model(spec: ArchSpec, space, num_classes: int | None):
    return get_task(space.task).reference_model(spec, space, num_classes).eval()
