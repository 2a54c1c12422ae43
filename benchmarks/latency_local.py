"""Latency models on this CPU: LUT sum + learned correction against a FLOPs-proportional fit.

For each space (``cifar`` at 32 px, ``mobile`` at 224 px; ``--spaces detect`` adds the
``detect`` space's whole detectors at 320 px, SSDlite's deployment size) and runtime (onnxruntime and
PyTorch eager, fixed thread count), draws random subnets spread over the space's cost range,
profiles the distinct blocks they contain (the lookup table restricted to what these
subnets need: the full ``mobile`` table has tens of thousands of entries), measures every
whole subnet, fits the correction and the baseline ``latency = a * FLOPs + b`` on the
training subnets, and scores both on the held-out subnets: share of predictions within
+-10% of the measurement (target >= 90%), RMSE in percent, Spearman's rho. The plain LUT
sum (no correction) is shown as well.

    python benchmarks/latency_local.py [--quick] [--json OUT] [--work-dir DIR]

``--quick`` uses fewer subnets, 64 px for ``mobile`` and 128 px for ``detect`` (printed in the table). Tables are
written under ``--work-dir`` and a rerun resumes them.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas_search.hw_models.latency import (  # noqa: E402
    STATISTICS,
    FlopsProportionalModel,
    LatencyModel,
    ProfileOptions,
    TimingOptions,
    local_hardware,
    measure_subnets,
    model_parts,
    prediction_metrics,
    profile_table,
    sample_subnets,
)
from nas_search.tasks import get_space  # noqa: E402


@dataclass(frozen=True)
class Setting:
    """One space's benchmark setting."""

    space: str
    input_size: int
    train: int
    test: int


FULL = (Setting("cifar", 32, 50, 100), Setting("mobile", 224, 40, 100), Setting("detect", 320, 40, 60))
QUICK = (Setting("cifar", 32, 12, 8), Setting("mobile", 64, 12, 8), Setting("detect", 128, 12, 8))
RUNTIMES = ("onnxruntime", "torch")


def run_setting(
    setting: Setting,
    runtime: str,
    threads: int,
    timing: TimingOptions,
    work_dir: Path,
    seed: int,
    progress: bool,
    repeat_check: int,
) -> dict:
    """Profile, fit and score one (space, runtime) pair."""
    space = get_space(setting.space)
    specs = sample_subnets(space, setting.train + setting.test, seed, spread=False)
    # Training and held-out subnets are drawn at random from one list that is measured in
    # order, so that both see the same drift of the machine's speed.
    order = list(range(len(specs)))
    random.Random(seed).shuffle(order)
    training_keys = {specs[index].key for index in order[: setting.train]}
    parts = {}
    for spec in specs:
        for config in model_parts(space, space.resolve(spec), setting.input_size):
            parts.setdefault(config.key, config)
    options = ProfileOptions(runtime=runtime, threads=threads, input_size=setting.input_size, timing=timing, seed=seed)
    path = work_dir / f"{setting.space}_{setting.input_size}px_{runtime}_{threads}t_seed{seed}.json"
    started = time.perf_counter()
    result = profile_table(space, path, options, progress=progress, blocks=parts.values(), specs=specs)
    training = [item for item in result.table.subnets if item.spec.key in training_keys]
    held_out = [item for item in result.table.subnets if item.spec.key not in training_keys]
    scores = {}
    for statistic in STATISTICS:
        truth = [STATISTICS[statistic](item) for item in held_out]
        models = {
            "lut+correction": LatencyModel(result.table, space, training=training, statistic=statistic),
            "lut_sum": LatencyModel(result.table, space, correction=False, statistic=statistic),
            "flops": FlopsProportionalModel(space, training, input_size=setting.input_size, statistic=statistic),
        }
        scores[statistic] = {
            name: prediction_metrics([model(item.spec) for item in held_out], truth) for name, model in models.items()
        }
    # Repeatability: measure some held-out subnets again; how often does a second
    # measurement land within 10% of the first? No predictor can beat that by much.
    again = measure_subnets(
        space, [item.spec for item in held_out[:repeat_check]], runtime, threads, setting.input_size, timing
    )
    repeat = (
        {
            statistic: prediction_metrics(
                [getattr(timing_, field) for timing_ in again],
                [STATISTICS[statistic](item) for item in held_out[:repeat_check]],
            )
            for statistic, field in (("median", "median_ms"), ("min", "min_ms"))
        }
        if repeat_check >= 3
        else {}
    )
    truth = [item.latency_ms for item in held_out]
    return {
        "space": setting.space,
        "input_size": setting.input_size,
        "runtime": runtime,
        "threads": threads,
        "train_subnets": len(training),
        "test_subnets": len(held_out),
        "table_entries": len(parts),
        "latency_ms_range": [min(truth), max(truth)],
        "seconds": time.perf_counter() - started,
        "scores": scores,
        "repeatability": repeat,
        "repeat_check_subnets": min(repeat_check, len(held_out)),
    }


def print_row(row: dict, statistic: str) -> None:
    """One line per model of a (space, runtime) result."""
    for name, score in row["scores"][statistic].items():
        print(
            f"{row['space']:<7}{row['input_size']:>4} {row['runtime']:<12} {statistic:<7}{name:<15} "
            f"{score['within_10pct'] * 100:>6.1f}% {score['rmse_pct']:>6.1f}% {score['spearman']:>6.3f}   "
            f"{row['train_subnets']:>3}/{row['test_subnets']:<3} {row['table_entries']:>5}  "
            f"{row['latency_ms_range'][0]:.2f}-{row['latency_ms_range'][1]:.2f} ms"
        )
    if row["repeatability"]:
        repeat = row["repeatability"][statistic]
        print(
            f"{'':<25}{statistic:<7}{'re-measured':<15} {repeat['within_10pct'] * 100:>6.1f}% {repeat['rmse_pct']:>6.1f}% "
            f"{repeat['spearman']:>6.3f}   ({row['repeat_check_subnets']} held-out subnets measured a second time)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer subnets, mobile at 64 px (about 2 minutes)")
    parser.add_argument("--json", help="write results as JSON")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both runtimes (default 1)")
    parser.add_argument("--repeats", type=int, help="timed samples per module (default 11, quick 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", help="keep (and resume) the profiled tables here (default: a temporary folder)")
    parser.add_argument(
        "--spaces",
        default="cifar,mobile",
        help="comma-separated subset of cifar,mobile,detect "
        "(detect: whole detectors at 320 px, not part of the issue's default pair)",
    )
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated subset of onnxruntime,torch")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--instances",
        type=int,
        default=3,
        help="independent instances (sessions, module copies) timed per module; median of their "
        "medians (default 3; 1 was the protocol before session 6)",
    )
    arguments = parser.parse_args()
    settings = [setting for setting in (QUICK if arguments.quick else FULL) if setting.space in arguments.spaces.split(",")]
    timing = TimingOptions(warmup=2, repeats=arguments.repeats or (5 if arguments.quick else 11), instances=arguments.instances)
    temporary = None if arguments.work_dir else tempfile.TemporaryDirectory(prefix="latency_local_")
    work_dir = Path(arguments.work_dir or temporary.name)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    for setting in settings:
        for runtime in arguments.runtimes.split(","):
            rows.append(
                run_setting(
                    setting,
                    runtime,
                    arguments.threads,
                    timing,
                    work_dir,
                    arguments.seed,
                    not arguments.quiet,
                    4 if arguments.quick else 30,
                )
            )
    print(
        f"\n{'space':<7}{'px':>4} {'runtime':<12} {'stat':<7}{'model':<15} {'±10%':>7} {'RMSE':>7} {'rho':>6}   "
        f"train/test entries  measured"
    )
    for statistic in STATISTICS:
        for row in rows:
            print_row(row, statistic)
    print("\nratios (LUT+correction vs FLOPs-proportional, held-out subnets, median of samples):")
    for row in rows:
        ours, anchor = row["scores"]["median"]["lut+correction"], row["scores"]["median"]["flops"]
        print(
            f"  {row['space']:<7} {row['runtime']:<12} within ±10%: {ours['within_10pct'] * 100:.0f}% vs "
            f"{anchor['within_10pct'] * 100:.0f}%   RMSE {ours['rmse_pct']:.1f}% vs {anchor['rmse_pct']:.1f}% "
            f"({anchor['rmse_pct'] / max(ours['rmse_pct'], 1e-9):.1f}x lower)   rho {ours['spearman']:.3f} vs {anchor['spearman']:.3f}"
        )
    mode = "QUICK (fewer subnets, mobile at 64 px instead of 224)" if arguments.quick else "full"
    print(
        f"\n{mode}; uniformly random subnets; batch 1, {arguments.threads} thread(s), {timing.repeats} samples per module "
        f"in each of {timing.instances} instance(s) (stat: median of the instances' medians, or the minimum), thread CPU clock with 1 thread; "
        f"{local_hardware()}, Python {platform.python_version()}, {date.today()}; {time.perf_counter() - started:.0f} s"
    )
    if arguments.json:
        payload = {
            "runtimes": {},
            "spaces": {},
            "mode": "quick" if arguments.quick else "full",
            "threads": arguments.threads,
            "instances": timing.instances,
            "repeats": timing.repeats,
            "hardware": local_hardware(),
            "date": date.today().isoformat(),
            "rows": rows,
        }
        for runtime in {row["runtime"] for row in rows}:
            mine = [row for row in rows if row["runtime"] == runtime]
            payload["runtimes"][runtime] = _summary(mine)
            for row in mine:
                payload["spaces"].setdefault(row["space"], {})[runtime] = _summary([row])
        Path(arguments.json).write_text(json.dumps(payload, indent=2) + "\n")
    if temporary is not None:
        temporary.cleanup()


def _summary(rows: list[dict]) -> dict:
    """Scores pooled over rows (each weighted by its held-out count); the headline keys use
    the median of samples, ``by_statistic`` holds both statistics."""
    total = sum(row["test_subnets"] for row in rows)

    def pooled(statistic: str, model: str, key: str) -> float:
        return sum(row["scores"][statistic][model][key] * row["test_subnets"] for row in rows) / total

    def block(statistic: str) -> dict:
        return {
            "within_10pct": pooled(statistic, "lut+correction", "within_10pct"),
            "rmse_pct": pooled(statistic, "lut+correction", "rmse_pct"),
            "spearman": pooled(statistic, "lut+correction", "spearman"),
            "flops_within_10pct": pooled(statistic, "flops", "within_10pct"),
            "flops_rmse_pct": pooled(statistic, "flops", "rmse_pct"),
            "flops_spearman": pooled(statistic, "flops", "spearman"),
            "lut_sum_within_10pct": pooled(statistic, "lut_sum", "within_10pct"),
        }

    return {**block("median"), "test_subnets": total, "by_statistic": {statistic: block(statistic) for statistic in STATISTICS}}


if __name__ == "__main__":
    main()
