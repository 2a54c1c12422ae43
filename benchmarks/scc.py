"""Sliding-channel convolution speed, side by side with its anchors.

For each shape (channels, spatial size), batch size and overlap ratio, at ``cg`` channel
groups, it times four 1x1 layers on the same input (Cin = Cout = channels):

* ``scc``: :class:`nas_search.spaces.scc.conv.SlidingChannelConv2d` (this project): its native
  kernel when it is built (the header says which), else the pure-PyTorch kernels; run with
  ``NAS_SEARCH_SCC_NATIVE=0`` to time the latter;
* ``dense``: a dense 1x1 ``conv2d`` (``cg`` times the FLOPs);
* ``grouped``: a grouped 1x1 ``conv2d`` with ``groups=cg`` (the same FLOPs as SCC);
* ``naive``: gather every output's window into a new tensor (a copy of the input per
  call), then a grouped 1x1 conv with one group per output channel.

Measurements are interleaved round-robin (several rounds, rotating order, median), because
the machine is shared and noisy. Ratios are speed ratios: ``a_vs_b = time(b) / time(a)``,
so above 1 means ``a`` is faster. The target is ``scc_vs_grouped >= 0.8``. The last column
(and ``scc_vs_grouped_p10`` in the JSON) compares the 10th percentiles instead of the
medians: on a busy machine, two-thread kernels stall whenever the other core is taken, and
the fast tail is the best estimate of the undisturbed cost. The load average is printed.

    python benchmarks/scc.py [--quick] [--json OUT] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F

from nas_search.spaces.scc import native as scc_native
from nas_search.spaces.scc.conv import SlidingChannelConv2d, reference_sliding_channel_conv2d, window_index

SHAPES: tuple[tuple[int, int], ...] = ((64, 56), (128, 28), (256, 14), (512, 7))
BATCHES: tuple[int, ...] = (1, 8)
OVERLAPS: tuple[float, ...] = (0.25, 0.33, 0.5)
CANDIDATES: tuple[str, ...] = ("scc", "dense", "grouped", "naive")
TARGET = 0.8


@dataclass(frozen=True)
class Settings:
    """How long and how often each candidate is timed."""

    rounds: int  # round-robin rounds (fewer for a candidate slower than its time budget)
    block_seconds: float  # wall time of one timed block of repeated calls
    candidate_seconds: float  # time budget of one candidate over all its rounds
    warmup_calls: int


# Many short blocks: on a busy machine, blocks that no neighbour disturbed then exist, and
# the 10th percentile finds them; the median is what a user of a busy machine would see.
FULL = Settings(rounds=200, block_seconds=0.0005, candidate_seconds=1.5, warmup_calls=5)
QUICK = Settings(rounds=60, block_seconds=0.0005, candidate_seconds=0.4, warmup_calls=2)


def build_candidates(
    channels: int, size: int, batch: int, groups: int, overlap: float | Fraction
) -> dict[str, Callable[[], torch.Tensor]]:
    """The four layers, closed over one shared input."""
    generator = torch.Generator().manual_seed(channels * 1000 + size * 10 + batch)
    x = torch.randn(batch, channels, size, size, generator=generator)
    length = channels // groups
    scc = SlidingChannelConv2d(channels, channels, groups, overlap).eval()
    dense_weight = torch.randn(channels, channels, 1, 1, generator=generator)
    grouped_weight = torch.randn(channels, length, 1, 1, generator=generator)
    naive_index = window_index(channels, channels, groups, overlap).reshape(-1)
    naive_weight = scc.weight.detach().reshape(channels, length, 1, 1)

    expected = reference_sliding_channel_conv2d(x, scc.weight.detach(), groups, overlap)
    error = (scc(x) - expected).abs().max().item()
    if error > 1e-4:
        raise AssertionError(f"SCC differs from the reference by {error} at {channels}ch {size}px batch {batch}")

    def naive() -> torch.Tensor:
        windows = x.index_select(1, naive_index)  # (N, Cout * L, H, W): a copy every call
        return F.conv2d(windows, naive_weight, groups=channels)

    return {
        "scc": lambda: scc(x),
        "dense": lambda: F.conv2d(x, dense_weight),
        "grouped": lambda: F.conv2d(x, grouped_weight, groups=groups),
        "naive": naive,
    }


def time_interleaved(
    candidates: dict[str, Callable[[], torch.Tensor]], settings: Settings
) -> tuple[dict[str, float], dict[str, float]]:
    """Median and 10th-percentile seconds per call of each candidate, measured round-robin
    in rotating order (the low percentile is the least disturbed by other processes)."""
    names = list(candidates)
    repetitions: dict[str, int] = {}
    rounds: dict[str, int] = {}
    for name in names:
        function = candidates[name]
        for _ in range(settings.warmup_calls):
            function()
        start = time.perf_counter()
        function()
        single = max(time.perf_counter() - start, 1e-6)
        repetitions[name] = max(1, int(settings.block_seconds / single))
        calls_per_round = repetitions[name] + 1
        rounds[name] = min(settings.rounds, max(7, int(settings.candidate_seconds / (single * calls_per_round))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(settings.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if round_index >= rounds[name]:
                continue
            function, count = candidates[name], repetitions[name]
            function()  # untimed: warm caches, as inside a network (the naive gather evicts them)
            start = time.perf_counter()
            for _ in range(count):
                function()
            samples[name].append((time.perf_counter() - start) / count)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    low = {name: sorted(values)[len(values) // 10] for name, values in samples.items()}
    return medians, low


def machine_description(threads: int) -> dict[str, object]:
    """Processor, thread count, date and load: the context of the figures."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average": [round(value, 2) for value in load],
        "scc_kernel": "native" if scc_native.library() is not None else "pytorch",
    }


def run(settings: Settings, groups: int, overlaps: tuple[float | Fraction, ...]) -> list[dict[str, object]]:
    """All rows: every shape, batch and overlap."""
    rows: list[dict[str, object]] = []
    with torch.no_grad():
        for channels, size in SHAPES:
            for batch in BATCHES:
                for overlap in overlaps:
                    seconds, undisturbed = time_interleaved(build_candidates(channels, size, batch, groups, overlap), settings)
                    rows.append(
                        {
                            "channels": channels,
                            "size": size,
                            "batch": batch,
                            "cg": groups,
                            "co": overlap if isinstance(overlap, float) else str(overlap),
                            "scc_vs_dense": seconds["dense"] / seconds["scc"],
                            "grouped_vs_dense": seconds["dense"] / seconds["grouped"],
                            "scc_vs_grouped": seconds["grouped"] / seconds["scc"],
                            "naive_vs_dense": seconds["dense"] / seconds["naive"],
                            "scc_vs_grouped_p10": undisturbed["grouped"] / undisturbed["scc"],
                            "microseconds": {name: round(value * 1e6, 1) for name, value in seconds.items()},
                        }
                    )
                    print(format_row(rows[-1]), flush=True)
    return rows


HEADER = (
    f"{'ch':>4} {'px':>3} {'N':>2} {'cg':>2} {'co':>6} | {'scc us':>8} {'dense us':>9} {'grp us':>8} {'naive us':>9}"
    f" | {'scc/dense':>9} {'grp/dense':>9} {'scc/grp':>8} {'naive/dense':>11} | {'scc/grp p10':>11}"
)


def format_row(row: dict[str, object]) -> str:
    """One line of the table."""
    micro = row["microseconds"]
    assert isinstance(micro, dict)
    flag = "" if float(row["scc_vs_grouped"]) >= TARGET else "  < target"  # type: ignore[arg-type]
    return (
        f"{row['channels']:>4} {row['size']:>3} {row['batch']:>2} {row['cg']:>2} {str(row['co']):>6} |"
        f" {micro['scc']:>8.1f} {micro['dense']:>9.1f} {micro['grouped']:>8.1f} {micro['naive']:>9.1f} |"
        f" {row['scc_vs_dense']:>9.2f} {row['grouped_vs_dense']:>9.2f} {row['scc_vs_grouped']:>8.2f}"
        f" {row['naive_vs_dense']:>11.2f} | {row['scc_vs_grouped_p10']:>11.2f}{flag}"
    )


def parse_overlap(text: str) -> float | Fraction:
    """``0.33`` (read as the simplest fraction that rounds to it) or an exact ``33/100``."""
    return Fraction(text) if "/" in text else float(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about a minute)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--groups", type=int, default=4, help="channel groups cg (default 4)")
    parser.add_argument(
        "--overlaps",
        type=parse_overlap,
        nargs="+",
        default=list(OVERLAPS),
        help="overlap ratios co (default 0.25 0.33 0.5); a fraction such as 33/100 is used exactly",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_description(torch.get_num_threads())
    print(
        f"SCC benchmark: {machine['processor']} ({machine['cpu_model']}), {machine['threads']} threads,"
        f" torch {machine['torch']}, {machine['date']}, load {machine['load_average']},"
        f" SCC kernel: {machine['scc_kernel']}"
    )
    print("ratios are speed ratios: a/b = time(b) / time(a); target scc/grp >= 0.8")
    print(HEADER)
    started = time.perf_counter()
    rows = run(QUICK if args.quick else FULL, args.groups, tuple(args.overlaps))
    passed = sum(float(row["scc_vs_grouped"]) >= TARGET for row in rows)  # type: ignore[arg-type]
    print(f"{passed}/{len(rows)} rows at scc/grp >= {TARGET}; {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
