"""CLI commands of the device cost models: ``profile`` (build a latency table on this
machine) and ``devices`` (list the registry).

Each command parses its arguments and calls one public function.
"""

from __future__ import annotations

import argparse

from nas_search.cli.base import Command, emit
from nas_search.errors import UserError
from nas_search.units import check_input_size


def _parse_widths(text: str | None) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        widths = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--widths {text!r} is invalid; accepted: comma-separated ratios such as 0.25,0.5,1") from None
    if not widths or any(not 0 < width <= 1 for width in widths):
        raise UserError(f"--widths {text!r} is invalid; accepted: comma-separated ratios in (0, 1] such as 0.25,0.5,1")
    return widths


def _profile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", default="mobile", help="search space (see `nas-search spaces`)")
    parser.add_argument(
        "--device",
        default="cpu",
        help="local device to profile: cpu or cpu-onnxruntime (this machine; see `nas-search devices`)",
    )
    parser.add_argument("--runtime", help="onnxruntime (default) or torch")
    parser.add_argument("--threads", type=int, help="intra-op threads, fixed for the whole profile (default 1)")
    parser.add_argument(
        "--out", help="table file (default latency_tables/SPACE-SIZEpx_DEVICE_RUNTIME_Nt.json); an existing one is resumed"
    )
    parser.add_argument("--input-size", type=int, help="deployment input size (default: the space's)")
    parser.add_argument("--widths", help="profile only these width ratios, e.g. 0.25,0.5,1 (a quick partial table)")
    parser.add_argument("--subnets", type=int, default=100, help="random whole subnets to measure (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random subnets")
    parser.add_argument("--repeats", type=int, default=5, help="timed samples per module instance (default 5)")
    parser.add_argument(
        "--instances",
        type=int,
        default=3,
        help="independent instances of each module (onnxruntime sessions, module copies); the latency "
        "is the median of their medians (default 3: one instance can run slow for its whole life)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per module first")
    parser.add_argument("--count-only", action="store_true", help="print the number of distinct blocks and stop")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="machine-readable summary")


def _profile_run(arguments: argparse.Namespace) -> None:
    from nas_search.hw_models.devices import get_device
    from nas_search.hw_models.latency import TimingOptions, count_parts, profile_device
    from nas_search.tasks import get_space

    space = get_space(arguments.space)
    check_input_size(arguments.input_size)
    input_size = arguments.input_size or space.input_size
    widths = _parse_widths(arguments.widths)
    if arguments.count_only:
        counted = count_parts(space, input_size, widths)
        emit(
            arguments,
            counted,
            f"space {space.name} at {input_size} px: {counted['distinct_blocks']} distinct blocks to profile ("
            + ", ".join(f"{kind} {count}" for kind, count in counted["by_kind"].items())
            + ")",
        )
        return
    result = profile_device(
        space,
        get_device(arguments.device),
        arguments.out,
        runtime=arguments.runtime,
        threads=arguments.threads,
        input_size=input_size,
        widths=widths,
        subnets=arguments.subnets,
        seed=arguments.seed,
        timing=TimingOptions(warmup=arguments.warmup, repeats=arguments.repeats, instances=arguments.instances),
        progress=not arguments.quiet,
    )
    summary = {
        "table": str(result.path),
        "space": space.name,
        "device": result.table.label,
        "hardware": result.table.hardware,
        "input_size": input_size,
        "distinct_blocks": result.distinct_blocks,
        "measured_blocks": result.measured_blocks,
        "resumed_blocks": result.resumed_blocks,
        "subnets": len(result.table.subnets),
        "measured_subnets": result.measured_subnets,
        "seconds": result.seconds,
        "validation": result.validation,
    }

    def human() -> None:
        print(
            f"latency table {result.path}: space {space.name} at {input_size} px on {result.table.label} "
            f"({result.table.hardware})"
        )
        print(
            f"  blocks: {result.distinct_blocks} distinct, {result.measured_blocks} measured now, "
            f"{result.resumed_blocks} already in the table"
        )
        print(f"  whole subnets: {len(result.table.subnets)} measured ({result.measured_subnets} now), {result.seconds:.0f} s")
        if result.validation:
            check = result.validation
            print(
                f"  5-fold check of LUT + correction on the measured subnets: {check['within_10pct'] * 100:.0f}% "
                f"within ±10%, RMSE {check['rmse_pct']:.1f}%, Spearman {check['spearman']:.3f}"
            )

    emit(arguments, summary, human)


def _devices_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _devices_run(arguments: argparse.Namespace) -> None:
    from nas_search.hw_models.devices import describe_devices

    rows = describe_devices()

    def human() -> None:
        for row in rows:
            print(f"{row['name']:<16} runtimes: {','.join(row['runtimes']):<18} {row['description']}")
        print("add your own: --device NAME --lut TABLE.json (a table measured on that device)")

    emit(arguments, rows, human)


#: The commands of this module, in the order ``--help`` lists them.
COMMANDS: list[Command] = [
    Command(
        "profile", "measure a latency lookup table of a space on this machine (resumable)", _profile_arguments, _profile_run
    ),
    Command("devices", "list the devices latency can be predicted for", _devices_arguments, _devices_run),
]
