"""The ``nas-search`` command line: thin wrappers that parse arguments and call one public
function each.

FLOPs follow fvcore's convention: one multiply-add counts as one FLOP (FLOPs = MACs).
Bad input exits with status 2 and one line on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from nas_search.cli import commands as search_commands
from nas_search.cli import hardware as hardware_commands
from nas_search.cli.base import FLOPS_NOTE, JSON_STREAMS, Command, OneLineParser, emit, is_main_rank, json_stream
from nas_search.errors import UserError
from nas_search.units import check_input_size


# ---------------------------------------------------------------------------- spaces
def _spaces_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _spaces_run(arguments: argparse.Namespace) -> None:
    from nas_search.tasks import describe_space, space_names
    from nas_search.units import format_count, format_flops

    rows = [describe_space(name) for name in space_names()]

    def human() -> None:
        print(
            f"{'space':<10} {'task':<9} {'input':>5}  {'FLOPs min':>14} {'FLOPs max':>14}  {'params min':>10} {'params max':>10}"
        )
        for row in rows:
            print(
                f"{row['name']:<10} {row['task']:<9} {row['input_size']:>5}  {format_flops(row['flops']['min']):>14} "
                f"{format_flops(row['flops']['max']):>14}  {format_count(row['params']['min']):>10} "
                f"{format_count(row['params']['max']):>10}"
            )
        print(FLOPS_NOTE)

    emit(arguments, rows, human)


# ---------------------------------------------------------------------------- sample
def _sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", default="mobile", help="search space (see `nas-search spaces`)")
    parser.add_argument("--n", type=int, default=10, help="number of specs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", help="FLOPs budget, e.g. 4.5GFLOPs, 4.5G, 450MFLOPs, 4.5GMACs, 4500000000")
    parser.add_argument("--input-size", type=int, help="deployment input size (default: the space's)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def _sample_run(arguments: argparse.Namespace) -> None:
    from nas_search.hw_models.flops import count_flops
    from nas_search.search.sampling import sample_specs
    from nas_search.tasks import get_space
    from nas_search.units import format_count, format_flops, parse_flops

    space = get_space(arguments.space)
    budget = parse_flops(arguments.budget) if arguments.budget else None
    input_size = _input_size(arguments.input_size, space)
    for spec, flops in sample_specs(space, arguments.n, arguments.seed, budget, input_size):
        params = count_flops(spec, space, input_size).params
        if arguments.json:
            print(
                json.dumps({"arch": spec.to_dict(), "arch_string": str(spec), "flops": flops, "params": params}),
                file=json_stream(),
            )
        else:
            print(f"{format_flops(flops):>14} {format_count(params):>8}  {spec}")


# ---------------------------------------------------------------------------- cost
def _cost_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arch", help="architecture file (.yaml or .json)")
    parser.add_argument("--space", help="check the spec against this space (default: the spec's own)")
    parser.add_argument("--input-size", type=int, help="deployment input size (default: the space's)")
    parser.add_argument("--num-classes", type=int, help="classifier outputs (default: the space's)")
    parser.add_argument("--check-fvcore", action="store_true", help="also count with fvcore on the extracted model")
    parser.add_argument("--device", help="also predict latency and peak memory on this device (`nas-search devices`)")
    parser.add_argument("--runtime", help="runtime of a local device: onnxruntime or torch")
    parser.add_argument("--threads", type=int, help="thread count of a local device's table (default 1)")
    parser.add_argument("--lut", help="latency table of your own device (with --device NAME)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _cost_run(arguments: argparse.Namespace) -> None:
    from nas_search.cost import cost_report
    from nas_search.units import format_bytes, format_count, format_flops

    report = cost_report(
        arguments.arch,
        space_name=arguments.space,
        input_size=arguments.input_size,
        num_classes=arguments.num_classes,
        check_fvcore=arguments.check_fvcore,
        device=arguments.device,
        runtime=arguments.runtime,
        threads=arguments.threads,
        lut=arguments.lut,
    )

    def human() -> None:
        print(f"arch:   {report['arch_string']}")
        print(f"input:  {report['input_size']} px")
        print(f"FLOPs:  {format_flops(report['flops'])} ({report['flops']})   params: {format_count(report['params'])}")
        for name, part in report["breakdown"].items():
            print(f"  {name:<8} {format_flops(part['flops']):>14} {format_count(part['params']):>9}")
        if "fvcore_flops" in report:
            match = "equal" if report["fvcore_flops"] == report["flops"] else "DIFFERENT"
            print(f"fvcore: {report['fvcore_flops']} ({match})")
        if "device" in report:
            device = report["device"]
            print(f"latency: {device['latency_ms']:.2f} ms on {device['device']} ({device['model']})")
            if device.get("estimated_parts"):
                print(
                    f"  {device['estimated_parts']} of {device['parts']} parts are not in the table and were estimated "
                    "from the measured parts of their kind"
                )
            print(f"peak activation memory: {format_bytes(device['peak_memory_bytes'])} (at {device['peak_memory_layer']})")
        print(FLOPS_NOTE)

    emit(arguments, report, human)


def _input_size(value: int | None, space) -> int:
    if value is None:
        return space.input_size
    check_input_size(value)
    return value


ARCHITECTURE_COMMANDS: list[Command] = [
    Command("spaces", "list the built-in search spaces with their FLOPs and params ranges", _spaces_arguments, _spaces_run),
    Command("sample", "draw random architectures (budget-aware with --budget)", _sample_arguments, _sample_run),
    Command("cost", "FLOPs, params and per-stage breakdown of an architecture file", _cost_arguments, _cost_run),
]


#: Every command, in the order ``--help`` lists them: the one table of the command line.
COMMANDS: list[Command] = [*ARCHITECTURE_COMMANDS, *search_commands.COMMANDS, *hardware_commands.COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered command."""
    parser = OneLineParser(
        prog="nas-search",
        description="Hardware-aware neural architecture search for compact classifiers and detectors. " + FLOPS_NOTE,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for command in COMMANDS:
        subparser = subparsers.add_parser(command.name, help=command.help, description=command.help + ". " + FLOPS_NOTE)
        command.add_arguments(subparser)
        subparser.set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nas-search`` console script."""
    parser = build_parser()
    arguments = parser.parse_args(_attach_negative_values(sys.argv[1:] if argv is None else list(argv)))
    as_json = getattr(arguments, "json", False)
    try:
        with contextlib.ExitStack() as stack:
            if as_json:
                JSON_STREAMS.append(sys.stdout)
                stack.callback(JSON_STREAMS.pop)
                stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            result = arguments.handler(arguments)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except UserError as error:
        if is_main_rank():  # under torchrun every rank checks; one says so
            print(f"nas-search {arguments.command}: error: {error}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print(
            f"nas-search {arguments.command}: interrupted; finished epochs, trials and finalists are saved: "
            f"{RESUME_HINTS.get(arguments.command, 'the same command continues from them')}",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        # the reader of stdout went away (`nas-search devices --json | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return int(result) if isinstance(result, int) else 0


#: Options whose value may be written negative by mistake (``--budget -1G``): argparse would
#: take the value for an option and say "expected one argument"; attached, it reaches the
#: option's own parser, whose error names the value and the accepted forms.
BUDGET_OPTIONS: tuple[str, ...] = ("--budget", "--params", "--latency", "--memory")


def _attach_negative_values(argv: list[str]) -> list[str]:
    attached: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else ""
        if token in BUDGET_OPTIONS and following[:1] == "-" and following[1:2].isdigit():
            attached.append(f"{token}={following}")
            index += 2
            continue
        attached.append(token)
        index += 1
    return attached


#: How an interrupted command continues, where it is not "the same command again".
RESUME_HINTS: dict[str, str] = {
    "train": "the same command with --resume continues from them",
    "supernet": "the same command with --resume continues from them",
}


def _stdout_closed() -> bool:
    """Whether writing to stdout fails with a broken pipe (its reader is gone)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    return False
