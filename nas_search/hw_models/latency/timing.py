"""Timing modules on the local CPU: the clocks, the timing options, interleaved rounds of
samples, and whole subnets measured the same way as the parts."""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nas_search.errors import UserError
from nas_search.hw_models.latency.parts import build_subnet
from nas_search.hw_models.latency.runtimes import get_runtime, measurement_settings
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec

#: Clocks a sample can be read with. ``thread_cpu`` (CPU time of the calling thread) is
#: what the latency would be on an idle core: both runtimes compute in the calling thread
#: when given one intra-op thread, and time spent preempted by other processes is not
#: counted. On a shared 2-core machine it cut the spread of repeated samples several-fold
#: against the wall clock. With more threads only the wall clock measures latency.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread_cpu": time.thread_time}


@dataclass(frozen=True)
class TimingOptions:
    """How a latency is measured.

    Attributes:
        warmup: untimed runs of each module first (also used to calibrate ``loops``).
        repeats: timed samples per module; the median is the latency.
        min_sample_ms: a sample loops a module enough times to last at least this long
            (so that timer resolution does not matter for tiny blocks).
        max_loops: upper bound on the loops per sample.
        clock: one of :data:`CLOCKS`. ``auto`` is ``thread_cpu`` with one thread and
            ``wall`` otherwise.
        instances: independent instances of each module (onnxruntime sessions, module
            copies), each timed with ``repeats`` samples; the latency is the median of
            their medians. One instance of a small network can run much slower than
            another for its whole life (memory placement), while repeated timings of one
            instance agree closely (``benchmarks/RESULTS.md``).
    """

    warmup: int = 3
    repeats: int = 15
    min_sample_ms: float = 1.0
    max_loops: int = 200
    clock: str = "auto"
    instances: int = 1

    def __post_init__(self) -> None:
        if self.warmup < 1 or self.repeats < 1 or self.instances < 1:
            raise UserError(
                f"timing warmup={self.warmup}, repeats={self.repeats}, instances={self.instances} are "
                "invalid; allowed: at least 1 each"
            )
        if self.clock != "auto" and self.clock not in CLOCKS:
            raise UserError(f"timing clock {self.clock!r} is invalid; allowed: auto, {', '.join(CLOCKS)}")

    def clock_for(self, threads: int) -> str:
        """The clock actually used at ``threads`` intra-op threads."""
        if self.clock != "auto":
            return self.clock
        return "thread_cpu" if threads == 1 else "wall"


@dataclass(frozen=True)
class Timing:
    """The median and minimum of the samples of one module, in milliseconds."""

    median_ms: float
    min_ms: float


def time_interleaved(
    runs: Sequence[Callable[[], Any]], options: TimingOptions = TimingOptions(), seed: int = 0, threads: int = 1
) -> list[Timing]:
    """Time several callables in interleaved rounds (each round runs every callable once,
    in a shuffled order), so that load from other processes is shared among them.

    Each timed sample of an interleaved callable follows one untimed run of it: the
    callable timed just before has evicted its weights and activations from the caches,
    and a cold run of a small network is much slower than a steady-state one
    (``benchmarks/RESULTS.md``).
    """
    clock = CLOCKS[options.clock_for(threads)]
    loops = []
    for run in runs:
        started = clock()
        for _ in range(options.warmup):
            run()
        per_call = max((clock() - started) / options.warmup, 1e-7)
        loops.append(max(1, min(options.max_loops, math.ceil(options.min_sample_ms / 1000 / per_call))))
    samples: list[list[float]] = [[] for _ in runs]
    interleaved = len(runs) > 1
    order = list(range(len(runs)))
    shuffler = random.Random(seed)
    for _ in range(options.repeats):
        shuffler.shuffle(order)
        for index in order:
            run, count = runs[index], loops[index]
            if interleaved:
                run()  # untimed: the previous callable of the round has evicted this one's data
            started = clock()
            for _ in range(count):
                run()
            samples[index].append((clock() - started) * 1000 / count)
    return [Timing(statistics.median(values), min(values)) for values in samples]


def measure_modules(
    modules: Sequence[tuple[Any, Any]], runtime: str, threads: int, options: TimingOptions = TimingOptions(), seed: int = 0
) -> list[Timing]:
    """Latency of ``(module, example input)`` pairs on the local CPU with ``runtime``."""
    chosen = get_runtime(runtime)
    with measurement_settings(threads):
        compiled = [chosen.compile(module, example) for module, example in modules]
        rounds = []
        for instance in range(options.instances):
            runs = [chosen.instantiate(item, example, threads) for item, (_, example) in zip(compiled, modules)]
            rounds.append(time_interleaved(runs, options, seed + 7919 * instance, threads))
            del runs  # free this instance before the next is made
    if options.instances == 1:
        return rounds[0]
    return [
        Timing(statistics.median(timing.median_ms for timing in timings), min(timing.min_ms for timing in timings))
        for timings in zip(*rounds)
    ]


def example_image(input_size: int) -> Any:
    """The fixed random batch-1 image a whole network is timed with."""
    import torch

    return torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))


def measure_subnets(
    space: SearchSpace,
    specs: Sequence[ArchSpec],
    runtime: str,
    threads: int,
    input_size: int | None = None,
    options: TimingOptions = TimingOptions(),
    chunk: int = 1,
    num_classes: int | None = None,
) -> list[Timing]:
    """Measured latency of whole subnets on the local CPU (interleaved in chunks);
    ``num_classes`` as in :func:`build_subnet` (default: the space's)."""
    size = space.input_size if input_size is None else input_size
    timings: list[Timing] = []
    for start in range(0, len(specs), chunk):
        modules = [(build_subnet(space, spec, num_classes, size), example_image(size)) for spec in specs[start : start + chunk]]
        timings += measure_modules(modules, runtime, threads, options, seed=start)
    return timings


__all__ = ["CLOCKS", "Timing", "TimingOptions", "measure_modules", "measure_subnets", "example_image", "time_interleaved"]
