"""Search efficiency on the tabular NAS-Bench-201 ground truth, against random search.

Each Optuna study maximises NATS-Bench test accuracy under a latency budget on one
measured device.  One trial is one table query: the trial samples a cell, reads its accuracy
and latency, and sets the constraint ``latency - budget <= 0``.  Infeasible trials count as
queries, and so do repeats of a cell already queried (a real search would pay for them too
unless it cached results).

For every sampler and seed the benchmark records:

* the number of queries until the best *feasible* accuracy seen is within ``--target-regret``
  (default 0.3 percentage points of accuracy) of the true constrained optimum, found by an
  exhaustive scan; a seed that does not get there within ``--max-queries`` counts as the cap
  in the median and is reported in the ``reached`` column;
* the regret (optimum minus best feasible accuracy, in points) after 100 queries.

Random search is the anchor: each sampler's median queries is divided by random's.

Defaults: device ``gold_6226`` (Intel Xeon Gold 6226 CPU, the kind of target nas-search is
for), dataset ``cifar10``, budget = the device's median latency over all 15,625 cells, which
excludes the unconstrained optimum.

Usage::

    python benchmarks/search_nb201.py --quick
    python benchmarks/search_nb201.py --json nb201.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import optuna

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY_ROOT))

from benchmarks.lib.nb201 import NasBench201Table  # noqa: E402
from nas_search.errors import UserError  # noqa: E402
from nas_search.search.samplers import FEASIBLE_ATTRIBUTE, make_sampler, sampler_names  # noqa: E402

DEFAULT_CSV = REPOSITORY_ROOT.parent / "shared" / "data" / "latency" / "nb201_cifar10_latency_ms.csv"
DEFAULT_DEVICE = "gold_6226"
DEFAULT_DATASET = "cifar10"
DEFAULT_SAMPLERS = ("tpe", "nsga2", "random")
ANCHOR = "random"
REGRET_CHECKPOINT = 100

#: Run sizes: (seeds, max queries).
FULL_RUN = (50, 1000)
QUICK_RUN = (10, 500)


@dataclass(frozen=True)
class SeedResult:
    """Outcome of one study."""

    seed: int
    queries_to_target: int | None
    regret_at_checkpoint: float
    queries_run: int
    feasible_share: float
    repeat_share: float
    seconds: float


@dataclass(frozen=True)
class SamplerSummary:
    """Outcome of one sampler over all seeds."""

    median_queries: float
    median_censored: bool
    reached: int
    seeds: int
    regret_at_100: float
    ratio_to_random: float | None
    feasible_share: float
    repeat_share: float
    seconds_per_seed: float


def run_study(
    table: NasBench201Table,
    sampler_name: str,
    seed: int,
    *,
    dataset: str,
    device: str,
    budget_ms: float,
    optimum_accuracy: float,
    target_regret: float,
    max_queries: int,
) -> SeedResult:
    """Run one study through ask/tell until the target is reached (and 100 queries are in)."""
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(sampler_name, seed=seed, constrained=True, multi_objective=False)
    )
    objective = table.make_objective(dataset, device, budget_ms)
    best_feasible = -np.inf
    queries_to_target: int | None = None
    regret_at_checkpoint = float("nan")
    feasible_count = 0
    seen: set[str] = set()
    repeats = 0
    started = time.perf_counter()
    query = 0
    for query in range(1, max_queries + 1):
        trial = study.ask()
        accuracy = objective(trial)
        study.tell(trial, accuracy)
        arch = trial.user_attrs["arch_str"]
        repeats += arch in seen
        seen.add(arch)
        if trial.user_attrs[FEASIBLE_ATTRIBUTE]:
            feasible_count += 1
            best_feasible = max(best_feasible, accuracy)
        # With no feasible query yet the regret is the optimum itself (best counts as 0).
        regret = optimum_accuracy - max(best_feasible, 0.0)
        if queries_to_target is None and regret <= target_regret + 1e-9:
            queries_to_target = query
        if query == REGRET_CHECKPOINT:
            regret_at_checkpoint = regret
        if queries_to_target is not None and query >= REGRET_CHECKPOINT:
            break
    return SeedResult(
        seed=seed,
        queries_to_target=queries_to_target,
        regret_at_checkpoint=regret_at_checkpoint,
        queries_run=query,
        feasible_share=feasible_count / query,
        repeat_share=repeats / query,
        seconds=time.perf_counter() - started,
    )


def summarise(results: list[SeedResult], max_queries: int) -> SamplerSummary:
    """Median queries (unreached seeds count as the cap) and mean regret at 100 queries."""
    queries = [result.queries_to_target if result.queries_to_target is not None else max_queries for result in results]
    reached = sum(result.queries_to_target is not None for result in results)
    median = float(statistics.median(queries))
    # The median is a lower bound when it involves a capped seed: that is when fewer than
    # half of the seeds (rounded up) reached the target.
    censored = reached < (len(results) // 2 + 1)
    return SamplerSummary(
        median_queries=median,
        median_censored=censored,
        reached=reached,
        seeds=len(results),
        regret_at_100=float(np.mean([result.regret_at_checkpoint for result in results])),
        ratio_to_random=None,
        feasible_share=float(np.mean([result.feasible_share for result in results])),
        repeat_share=float(np.mean([result.repeat_share for result in results])),
        seconds_per_seed=float(np.mean([result.seconds for result in results])),
    )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"smaller run: {QUICK_RUN[0]} seeds, cap {QUICK_RUN[1]} queries")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="NAS-Bench-201 latency/accuracy table")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="latency column, e.g. gold_6226 or lat_pixel2")
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help="cifar10, cifar100 or imagenet16-120")
    parser.add_argument("--budget-ms", type=float, help="latency budget (default: the device's median latency)")
    parser.add_argument("--seeds", type=int, help=f"seeds per sampler (default {FULL_RUN[0]})")
    parser.add_argument("--max-queries", type=int, help=f"query cap per study (default {FULL_RUN[1]})")
    parser.add_argument(
        "--target-regret", type=float, default=0.3, help="accuracy points from the optimum that count as reached"
    )
    parser.add_argument(
        "--samplers",
        default=",".join(DEFAULT_SAMPLERS),
        help=f"comma-separated, from: {', '.join(sampler_names())} (random is always run as the anchor)",
    )
    return parser.parse_args(argv)


def ratio_marker(summary: SamplerSummary, anchor: SamplerSummary) -> str:
    """``>=`` / ``<=`` when a censored median makes the ratio a bound, ``~`` when both are."""
    if summary is anchor:
        return ""
    markers = {(False, False): "", (True, False): ">=", (False, True): "<=", (True, True): "~"}
    return markers[(summary.median_censored, anchor.median_censored)]


def format_table(summaries: dict[str, SamplerSummary]) -> str:
    """Human-readable table of the summaries."""
    header = f"{'sampler':<8} {'median q':>9} {'vs random':>9} {'reached':>8} {'regret@100':>10} {'feasible':>8} {'repeats':>7} {'s/seed':>7}"
    lines = [header, "-" * len(header)]
    for name, summary in summaries.items():
        median = f"{'>=' if summary.median_censored else ''}{summary.median_queries:.0f}"
        marker = ratio_marker(summary, summaries[ANCHOR])
        ratio = "-" if summary.ratio_to_random is None else f"{marker}{summary.ratio_to_random:.2f}x"
        lines.append(
            f"{name:<8} {median:>9} {ratio:>9} {summary.reached:>3}/{summary.seeds:<4} {summary.regret_at_100:>10.3f} "
            f"{summary.feasible_share:>8.0%} {summary.repeat_share:>7.0%} {summary.seconds_per_seed:>7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    arguments = parse_arguments(argv)
    default_seeds, default_cap = QUICK_RUN if arguments.quick else FULL_RUN
    seeds = arguments.seeds if arguments.seeds is not None else default_seeds
    max_queries = arguments.max_queries if arguments.max_queries is not None else default_cap
    samplers = [name.strip() for name in arguments.samplers.split(",") if name.strip()]
    if ANCHOR not in samplers:
        samplers.append(ANCHOR)
    try:
        for name in samplers:
            if name not in sampler_names():
                raise UserError(f"unknown sampler {name!r}; accepted: {', '.join(sampler_names())}")
        if seeds < 1:
            raise UserError(f"--seeds {seeds}: expected at least 1")
        if max_queries < REGRET_CHECKPOINT:
            raise UserError(f"--max-queries {max_queries}: expected at least {REGRET_CHECKPOINT}")
        table = NasBench201Table.from_csv(arguments.csv)
        device = table.resolve_device(arguments.device)
        dataset = table.resolve_dataset(arguments.dataset)
        latency = table.latency_column(device)
        budget = arguments.budget_ms if arguments.budget_ms is not None else float(np.median(latency))
        optimum_arch, optimum_accuracy = table.constrained_optimum(dataset, device, budget)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    accuracy = table.accuracy_column(dataset)
    unconstrained_best = int(np.argmax(accuracy))
    feasible = latency <= budget
    near_optimum = int(np.sum(feasible & (accuracy >= optimum_accuracy - arguments.target_regret)))
    optimum_latency = table.lookup(optimum_arch).latency_ms[device]

    mode = (
        f"QUICK run ({seeds} seeds, cap {max_queries} queries)"
        if arguments.quick
        else f"full run ({seeds} seeds, cap {max_queries} queries)"
    )
    print(f"NAS-Bench-201 constrained search, {mode}")
    print(
        f"device {device}, dataset {dataset}, budget {budget:.3f} ms ({'median latency' if arguments.budget_ms is None else 'given'})"
    )
    print(
        f"feasible cells {int(feasible.sum())}/{len(table)}; within {arguments.target_regret} points of the optimum: {near_optimum}"
    )
    print(f"constrained optimum {optimum_accuracy:.3f}% at {optimum_latency:.3f} ms: {optimum_arch}")
    print(
        f"unconstrained optimum {accuracy[unconstrained_best]:.3f}% at {latency[unconstrained_best]:.3f} ms "
        f"({'outside' if latency[unconstrained_best] > budget else 'inside'} the budget)"
    )

    per_sampler: dict[str, list[SeedResult]] = {}
    for name in samplers:
        per_sampler[name] = [
            run_study(
                table,
                name,
                seed,
                dataset=dataset,
                device=device,
                budget_ms=budget,
                optimum_accuracy=optimum_accuracy,
                target_regret=arguments.target_regret,
                max_queries=max_queries,
            )
            for seed in range(seeds)
        ]
    summaries = {name: summarise(results, max_queries) for name, results in per_sampler.items()}
    anchor_median = summaries[ANCHOR].median_queries
    summaries = {
        name: SamplerSummary(**{**asdict(summary), "ratio_to_random": summary.median_queries / anchor_median})
        for name, summary in summaries.items()
    }

    print()
    print(format_table(summaries))
    print(
        f"median q: queries until regret <= {arguments.target_regret} points (median over seeds; unreached seeds count as "
        f"{max_queries}; '>=' marks a median set by unreached seeds, so a lower bound). vs random: median q / random's "
        "(lower is better; '<=' / '>=' / '~' where a censored median makes it a bound or unclear)."
    )
    print("regret@100: mean over seeds of (optimum - best feasible accuracy) after 100 queries, in points.")
    print("feasible / repeats: mean share of queries inside the budget / repeating a cell already queried.")

    if arguments.json is not None:
        payload = {
            "samplers": {
                name: {
                    "median_queries": summary.median_queries,
                    "median_censored": summary.median_censored,
                    "ratio_to_random": summary.ratio_to_random,
                    "regret_at_100": summary.regret_at_100,
                    "reached": summary.reached,
                    "seeds": summary.seeds,
                    "feasible_share": summary.feasible_share,
                    "repeat_share": summary.repeat_share,
                    "seconds_per_seed": summary.seconds_per_seed,
                    "per_seed": [asdict(result) for result in per_sampler[name]],
                }
                for name, summary in summaries.items()
            },
            "device": device,
            "dataset": dataset,
            "budget_ms": budget,
            "target_regret": arguments.target_regret,
            "max_queries": max_queries,
            "quick": arguments.quick,
            "optimum": {"arch_str": optimum_arch, "accuracy": optimum_accuracy, "latency_ms": optimum_latency},
        }
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
