"""Profiling a latency table on the local CPU: every distinct part of a space and random
whole subnets, timed side by side, saved as they go and resumed; and :func:`profile_device`,
what ``nas-search profile`` runs."""

from __future__ import annotations

import platform
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas_search.errors import UserError
from nas_search.hw_models.latency.model import MIN_CORRECTION_SUBNETS, cross_validate
from nas_search.hw_models.latency.parts import (
    BlockConfig,
    build_part,
    build_subnet,
    check_table_input_size,
    distinct_blocks,
    part_example,
    restrict_widths,
    table_task,
)
from nas_search.hw_models.latency.runtimes import get_runtime, local_hardware
from nas_search.hw_models.latency.table import LatencyTable, default_table_path, load_table, now
from nas_search.hw_models.latency.timing import TimingOptions, example_image, measure_modules
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec
from nas_search.units import check_input_size
from nas_search.utils import check_output_path

if TYPE_CHECKING:
    from nas_search.hw_models.devices import Device


@dataclass(frozen=True)
class ProfileOptions:
    """Everything :func:`profile_table` needs besides the space.

    Attributes:
        device: registry name of the device (``cpu`` is this machine).
        runtime: ``onnxruntime`` or ``torch``.
        threads: intra-op threads (fixed for the whole profile).
        input_size: deployment input size (default: the space's).
        widths: profile only these width ratios (a quick, partial table); None = all.
        subnets: random whole subnets to measure for the correction and its validation.
        seed: seed of the random subnets.
        chunk: parts prepared and timed together (interleaved) at a time.
        subnet_chunk: whole subnets timed together (1: one after the other).
        timing: warm-up and repeats.
        save_every_s: how often the half-built table is written.
    """

    device: str = "cpu"
    runtime: str = "onnxruntime"
    threads: int = 1
    input_size: int | None = None
    widths: tuple[float, ...] | None = None
    subnets: int = 100
    seed: int = 0
    chunk: int = 8
    subnet_chunk: int = 1
    timing: TimingOptions = TimingOptions()
    save_every_s: float = 10.0


@dataclass
class ProfileResult:
    """What a profile run did."""

    table: LatencyTable
    path: Path
    distinct_blocks: int
    measured_blocks: int
    resumed_blocks: int
    measured_subnets: int
    resumed_subnets: int
    seconds: float
    validation: dict[str, float] = field(default_factory=dict)


def sample_subnets(space: SearchSpace, count: int, seed: int, spread: bool = True) -> list[ArchSpec]:
    """``count`` random distinct subnets. With ``spread`` each is drawn with its own random
    size bias, which covers the space's whole cost range (as a budgeted search does);
    otherwise every choice is uniform (mid-sized subnets)."""
    rng = random.Random(seed)
    specs: dict[str, ArchSpec] = {}
    attempts = 0
    while len(specs) < count and attempts < count * 20:
        attempts += 1
        try:
            spec = space.sample(rng, bias=rng.random() if spread else None)
            space.resolve(spec)
        except UserError:
            continue
        specs.setdefault(spec.key, spec)
    return list(specs.values())


def _new_table(space: SearchSpace, options: ProfileOptions, input_size: int, distinct: int) -> LatencyTable:
    runtime = get_runtime(options.runtime)
    return LatencyTable(
        space=space.name,
        device=options.device,
        hardware=local_hardware(),
        runtime=options.runtime,
        threads=options.threads,
        input_size=input_size,
        channel_divisor=8,
        num_classes=space.num_classes,
        versions={"python": platform.python_version(), **runtime.versions()},
        created=now(),
        timing={
            **asdict(options.timing),
            "clock": options.timing.clock_for(options.threads),
            "statistic": "median of interleaved samples"
            if options.timing.instances == 1
            else f"median over {options.timing.instances} instances of the median of interleaved samples",
        },
        widths=options.widths,
        distinct_blocks=distinct,
    )


def _open_or_new_table(space: SearchSpace, options: ProfileOptions, input_size: int, parts: int, out: Path) -> LatencyTable:
    """The table at ``out`` to resume (checked to match these options), or a new one."""
    if not out.exists():
        return _new_table(space, options, input_size, parts)
    table = load_table(out)
    table.check(
        space=space.name,
        runtime=options.runtime,
        device=options.device,
        input_size=input_size,
        threads=options.threads,
        source=f"existing latency table {out}",
    )
    return table


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive chunks of ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def profile_table(
    space: SearchSpace,
    out: str | Path,
    options: ProfileOptions = ProfileOptions(),
    *,
    progress: bool = True,
    blocks: Iterable[BlockConfig] | None = None,
    specs: Sequence[ArchSpec] | None = None,
) -> ProfileResult:
    """Profile the distinct parts of ``space`` and random whole subnets on the local CPU,
    writing (and resuming) the table at ``out``.

    ``blocks`` / ``specs`` replace the enumerated parts / the random subnets (e.g. to
    profile only what a set of architectures needs).
    """
    from nas_search.progress import progress_bar

    if options.threads < 1:
        raise UserError(f"--threads {options.threads} is invalid; accepted: a positive integer")
    get_runtime(options.runtime)
    started = time.perf_counter()
    input_size = space.input_size if options.input_size is None else options.input_size
    check_table_input_size(space, input_size)
    profiled_space = restrict_widths(space, options.widths)
    targets = list(blocks) if blocks is not None else distinct_blocks(profiled_space, input_size)
    out = Path(out)
    table = _open_or_new_table(space, options, input_size, len(targets), out)
    if blocks is None:
        table.distinct_blocks = max(table.distinct_blocks, len(targets))
    resumed_blocks = sum(config.key in table.entries for config in targets)
    todo = [config for config in targets if config.key not in table.entries]
    last_save = time.perf_counter()

    def maybe_save(force: bool = False) -> None:
        nonlocal last_save
        if force or time.perf_counter() - last_save >= options.save_every_s:
            table.save(out)
            last_save = time.perf_counter()

    subnet_specs = list(specs) if specs is not None else sample_subnets(profiled_space, options.subnets, options.seed)
    measured_keys = {item.spec.key for item in table.subnets}
    resumed_subnets = sum(spec.key in measured_keys for spec in subnet_specs)
    remaining = [spec for spec in subnet_specs if spec.key not in measured_keys]
    block_chunks, subnet_chunks = _chunks(todo, options.chunk), _chunks(remaining, options.subnet_chunk)
    bar = progress_bar(
        len(todo) + len(remaining), f"profile {space.name} ({options.runtime}, {options.threads}t)", "item", progress
    )

    def measure_blocks(chunk: list[BlockConfig], seed: int) -> None:
        modules = [(build_part(config, space), part_example(config, space)) for config in chunk]
        for config, timing in zip(chunk, measure_modules(modules, options.runtime, options.threads, options.timing, seed)):
            table.add_entry(config, timing)

    def measure_specs(chunk: list[ArchSpec], seed: int) -> None:
        modules = [(build_subnet(space, spec, table.num_classes, input_size), example_image(input_size)) for spec in chunk]
        for spec, timing in zip(chunk, measure_modules(modules, options.runtime, options.threads, options.timing, seed)):
            table.add_subnet(spec, timing)

    try:
        for step, (kind, chunk) in enumerate(_interleave(block_chunks, subnet_chunks)):
            (measure_blocks if kind == "blocks" else measure_specs)(chunk, step)
            bar.update(len(chunk))
            maybe_save()
        bar.close()
    finally:
        table.save(out)
    validation = cross_validate(table, space) if len(table.subnets) >= MIN_CORRECTION_SUBNETS * 2 else {}
    return ProfileResult(
        table=table,
        path=out,
        distinct_blocks=len(targets),
        measured_blocks=len(todo),
        resumed_blocks=resumed_blocks,
        measured_subnets=len(remaining),
        resumed_subnets=resumed_subnets,
        seconds=time.perf_counter() - started,
        validation=validation,
    )


def _interleave(block_chunks: list[list[BlockConfig]], subnet_chunks: list[list[ArchSpec]]) -> Iterator[tuple[str, list[Any]]]:
    """Block chunks with the subnet chunks spread evenly among them.

    The speed of a shared machine drifts over minutes; measuring the table entries and the
    whole subnets side by side keeps the correction from learning that drift."""
    total = len(subnet_chunks)
    placed = 0
    for index, chunk in enumerate(block_chunks):
        yield "blocks", chunk
        due = (index + 1) * total // len(block_chunks)
        while placed < due:
            yield "subnets", subnet_chunks[placed]
            placed += 1
    for remaining in subnet_chunks[placed:]:
        yield "subnets", remaining


def count_parts(space: SearchSpace, input_size: int | None = None, widths: Sequence[float] | None = None) -> dict[str, Any]:
    """How many distinct parts a profile of ``space`` at ``input_size`` (default: the
    deployment size), limited to ``widths``, would time, in all and by kind
    (``nas-search profile --count-only``)."""
    check_input_size(input_size)
    size = space.input_size if input_size is None else input_size
    check_table_input_size(space, size)
    blocks = distinct_blocks(restrict_widths(space, widths), size)
    return {
        "space": space.name,
        "input_size": size,
        "distinct_blocks": len(blocks),
        "by_kind": dict(Counter(block.op for block in blocks)),
    }


def profile_device(
    space: SearchSpace,
    device: Device,
    out: str | Path | None = None,
    *,
    runtime: str | None = None,
    threads: int | None = None,
    input_size: int | None = None,
    widths: Sequence[float] | None = None,
    subnets: int = 100,
    seed: int = 0,
    timing: TimingOptions = TimingOptions(),
    progress: bool = True,
) -> ProfileResult:
    """Profile ``space`` on a local registered device (what ``nas-search profile`` runs):
    check that the space has table support, that the device can be measured here, its
    runtime and threads and the input size, then :func:`profile_table` into ``out``
    (default: the device's table path,
    :func:`~nas_search.hw_models.latency.table.default_table_path`, where ``cost`` and
    ``run`` find it again)."""
    table_task(space)  # a space without table support is refused first
    check_input_size(input_size)
    if subnets < 0:
        raise UserError(f"--subnets {subnets} is invalid; accepted: 0 or more")
    size = space.input_size if input_size is None else input_size
    check_table_input_size(space, size)
    if not device.local:
        raise UserError(
            f"device {device.name!r} cannot be profiled on this machine; accepted: a local device (cpu); "
            f"measure it on the device itself and pass its table with --lut"
        )
    chosen_runtime = device.check_runtime(runtime)
    chosen_threads = device.check_threads(threads)
    options = ProfileOptions(
        device=device.name,
        runtime=chosen_runtime,
        threads=chosen_threads,
        input_size=size,
        widths=None if widths is None else tuple(widths),
        subnets=subnets,
        seed=seed,
        timing=timing,
    )
    path = default_table_path(space.name, device.name, chosen_runtime, chosen_threads, size) if out is None else out
    check_output_path(path, "--out")
    return profile_table(space, path, options, progress=progress)


__all__ = ["ProfileOptions", "ProfileResult", "count_parts", "profile_device", "profile_table", "sample_subnets"]
