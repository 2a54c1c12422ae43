"""Analytic cost model against fvcore: time per architecture, speed-up, exact-match count.

For random specs of every built-in space, counts FLOPs analytically (from the spec) and
with fvcore's ``FlopCountAnalysis`` on the extracted static model (the anchor), at the
space's deployment size, interleaved, and prints per space the time per architecture,
the speed-up (target >= 1000x) and how many counts match exactly.

    python benchmarks/cost_model.py [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas_search.hw_models.flops import count_network  # noqa: E402
from nas_search.hw_models.fvcore_count import fvcore_flops  # noqa: E402
from nas_search.spaces.static import build_static_model  # noqa: E402
from nas_search.tasks import get_space, space_names  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 specs per space instead of 50")
    parser.add_argument("--json", help="write results as JSON")
    parser.add_argument("--specs", type=int)
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    count = arguments.specs or (10 if arguments.quick else 50)
    results = {}
    print(f"{'space':<8} {'specs':>5} {'exact':>5} {'analytic us':>12} {'fvcore ms':>10} {'speed-up':>9}")
    for name in space_names(task="classify"):
        space = get_space(name)
        rng = random.Random(0)
        specs = [space.sample(rng, bias=rng.random()) for _ in range(count)]
        analytic_times, fvcore_times, exact = [], [], 0
        for spec in specs:
            started = time.perf_counter()
            network = space.resolve(spec)
            analytic = count_network(network, space.input_size).flops
            analytic_times.append(time.perf_counter() - started)
            model = build_static_model(network)
            started = time.perf_counter()
            reference = fvcore_flops(model, space.input_size)
            fvcore_times.append(time.perf_counter() - started)
            exact += int(analytic == reference)
        analytic_time, fvcore_time = statistics.median(analytic_times), statistics.median(fvcore_times)
        results[name] = {
            "exact": exact,
            "total": count,
            "speedup_vs_fvcore": fvcore_time / analytic_time,
            "analytic_us": analytic_time * 1e6,
            "fvcore_ms": fvcore_time * 1e3,
            "input_size": space.input_size,
        }
        print(
            f"{name:<8} {count:>5} {exact:>5} {analytic_time * 1e6:>12.1f} {fvcore_time * 1e3:>10.1f} "
            f"{fvcore_time / analytic_time:>8.0f}x"
        )
    print(
        f"analytic = resolve spec + count (pure Python); fvcore = FlopCountAnalysis on the built model "
        f"(model construction excluded). {platform.processor() or platform.machine()}, {date.today()}"
    )
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"spaces": results, "date": date.today().isoformat()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
