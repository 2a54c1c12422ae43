"""Latency prediction on devices we do not have, checked on real measurements (HELP data).

For every latency table in ``--data-dir`` (default ``../shared/data/latency`` beside the
repository) and every device column, draw ``n`` architectures (n = 10, 20, 100, 500) with
a seeded random draw, fit on their measured latency, predict all the other architectures
and report Spearman's rho and the share of predictions within +-10% of the measurement.
Side by side in the same run:

* ``ours``: :func:`fit_transfer_predictor` with every other device of the table as a
  reference (HELP's setting: other devices' measurements are known);
* ``other-hw``: the same without the target's own hardware at other batch sizes
  (``titan_rtx_32`` is not a reference for ``titan_rtx_256``);
* ``layer``: layer-wise features only, no other device (a brand-new device);
* ``flops``: the anchor baseline ``latency = a * FLOPs`` fit on the same n samples;
* on NAS-Bench-201, ``help-refs``: only HELP's meta-training devices as references, next to
  HELP's published figures with 10 samples.

Usage: ``python benchmarks/latency_external.py [--quick] [--json OUT] [--data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY_ROOT))

from benchmarks.lib.external import (  # noqa: E402
    LatencyTable,
    fit_flops_baseline,
    fit_transfer_predictor,
    load_latency_table,
    same_hardware_devices,
)
from nas_search.errors import UserError  # noqa: E402

SAMPLE_COUNTS = (10, 20, 100, 500)
FULL_SEEDS = 3
QUICK_SEEDS = 1
QUICK_DEVICES_PER_TABLE = 2
#: HELP (NeurIPS'21, Table 3) on NAS-Bench-201 with 10 samples of the target, and the FLOPs
#: baseline of the same table.  Our device names are the CSV columns without "lat_".
HELP_NB201_SPEARMAN = {"titan_rtx_256": 0.987, "gold_6226": 0.989, "pixel2": 0.802, "eyeriss": 0.940}
HELP_NB201_FLOPS_SPEARMAN = {"titan_rtx_256": 0.950, "gold_6226": 0.826, "pixel2": 0.765, "eyeriss": 0.437}
#: HELP's meta-training devices for NAS-Bench-201 that this table has (pixel3 and
#: essential_ph_1 are not in it).  HELP's test devices never saw titan_rtx_1/32, 2080ti or gold_6240.
HELP_NB201_REFERENCE_DEVICES = (
    "1080ti_1",
    "1080ti_32",
    "1080ti_256",
    "silver_4114",
    "silver_4210r",
    "samsung_a50",
    "samsung_s7",
)
TARGET_MEAN_SPEARMAN_AT_10 = 0.95


@dataclass(frozen=True)
class Variant:
    """One way of fitting, named for the tables."""

    name: str
    use_other_devices: bool
    exclude_same_hardware: bool
    reference_devices: tuple[str, ...] | None = None


VARIANTS: dict[str, Variant] = {
    "ours": Variant("ours", True, False),
    "other_hardware": Variant("other_hardware", True, True),
    "layer_only": Variant("layer_only", False, False),
}
HELP_VARIANT = Variant("help_references", True, False, HELP_NB201_REFERENCE_DEVICES)


def metrics(predicted: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and the share of predictions within +-10% of the measurement."""
    rho = float(spearmanr(predicted, measured).correlation)
    within = float(np.mean(np.abs(predicted / measured - 1.0) <= 0.10))
    return rho, within


def evaluate_device(
    table: LatencyTable, table_index: int, device: str, seeds: int, variants: list[Variant]
) -> dict[int, dict[str, float]]:
    """Per n: mean over seeds of every variant's and the FLOPs baseline's metrics on held-out rows."""
    device_index = table.device_index(device)
    measured_all = table.latency(device)
    sums: dict[int, dict[str, list[float]]] = {n: {} for n in SAMPLE_COUNTS}
    for seed in range(seeds):
        order = np.random.default_rng([seed, table_index, device_index]).permutation(len(table))
        for n in SAMPLE_COUNTS:
            if n >= len(table):
                continue
            samples, held_out = order[:n], order[n:]
            measured = measured_all[held_out]
            results = sums[n]
            rho, within = metrics(fit_flops_baseline(table, device, samples).predict(held_out), measured)
            results.setdefault("flops_spearman", []).append(rho)
            results.setdefault("flops_within_10pct", []).append(within)
            for variant in variants:
                if variant.exclude_same_hardware and not same_hardware_devices(table, device):
                    rho, within = results["spearman"][-1], results["within_10pct"][-1]  # same references as ours
                else:
                    predictor = fit_transfer_predictor(
                        table,
                        device,
                        samples,
                        use_other_devices=variant.use_other_devices,
                        exclude_same_hardware=variant.exclude_same_hardware,
                        reference_devices=variant.reference_devices,
                    )
                    rho, within = metrics(predictor.predict(held_out), measured)
                prefix = "" if variant.name == "ours" else f"{variant.name}_"
                results.setdefault(f"{prefix}spearman", []).append(rho)
                results.setdefault(f"{prefix}within_10pct", []).append(within)
    return {n: {key: float(np.mean(values)) for key, values in results.items()} for n, results in sums.items() if results}


def print_table(name: str, results: dict[str, dict[int, dict[str, float]]]) -> None:
    """Per device and n: ours / other-hw / layer-only / FLOPs rho and within-10%."""
    print(f"\n== {name}: Spearman rho (within +-10%) on held-out architectures, mean over seeds")
    header = f"{'device':16s} {'n':>4s}  {'ours':>13s}  {'other-hw':>13s}  {'layer-only':>13s}  {'FLOPs':>13s}  {'rho ours/FLOPs':>14s}"
    print(header)
    print("-" * len(header))
    for device, per_n in results.items():
        for n, values in per_n.items():
            cells = []
            for prefix in ("", "other_hardware_", "layer_only_", "flops_"):
                rho = values.get(f"{prefix}spearman", float("nan"))
                within = values.get(f"{prefix}within_10pct", float("nan"))
                cells.append(f"{rho:6.3f} ({within:4.2f})")
            ratio = values["spearman"] / values["flops_spearman"] if values["flops_spearman"] > 0 else float("nan")
            print(f"{device:16s} {n:4d}  {'  '.join(cells)}  {ratio:14.2f}")


def summarise(results: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean over devices of every metric, per n."""
    summary: dict[str, dict[str, float]] = {}
    for n in SAMPLE_COUNTS:
        rows = [per_n[n] for per_n in results.values() if n in per_n]
        if rows:
            keys = rows[0].keys()
            summary[str(n)] = {key: float(np.mean([row[key] for row in rows if key in row])) for key in keys}
    return summary


def help_comparison(table: LatencyTable, table_index: int, seeds: int) -> dict[str, dict[str, float]]:
    """Our n=10 figures on HELP's four NAS-Bench-201 test devices, including HELP's reference set."""
    comparison: dict[str, dict[str, float]] = {}
    for device in HELP_NB201_SPEARMAN:
        if device not in table.devices:
            continue
        device_index = table.device_index(device)
        rhos: list[float] = []
        for seed in range(seeds):
            order = np.random.default_rng([seed, table_index, device_index]).permutation(len(table))
            samples, held_out = order[:10], order[10:]
            predictor = fit_transfer_predictor(table, device, samples, reference_devices=HELP_VARIANT.reference_devices)
            rhos.append(metrics(predictor.predict(held_out), table.latency(device)[held_out])[0])
        comparison[device] = {"help_references_spearman": float(np.mean(rhos))}
    return comparison


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 seed; HELP's 4 devices on NAS-Bench-201, 2 devices of other tables (about a minute)",
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON to this path")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPOSITORY_ROOT.parent / "shared" / "data" / "latency",
        help="folder of latency CSVs (default: ../shared/data/latency beside the repository)",
    )
    arguments = parser.parse_args(argv)
    paths = sorted(arguments.data_dir.glob("*.csv")) if arguments.data_dir.is_dir() else []
    if not paths:
        print(f"error: no latency CSVs in {arguments.data_dir}", file=sys.stderr)
        return 2
    seeds = QUICK_SEEDS if arguments.quick else FULL_SEEDS
    variants = list(VARIANTS.values())
    started = time.perf_counter()
    datasets: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    summary: dict[str, object] = {"seeds": seeds, "sample_counts": list(SAMPLE_COUNTS), "per_file": {}}
    comparison: dict[str, dict[str, float]] = {}
    for table_index, path in enumerate(paths):
        try:
            table = load_latency_table(path)
        except UserError as error:
            print(f"skipping {path.name}: {error}", file=sys.stderr)
            continue
        devices = list(table.devices)
        if arguments.quick:
            preferred = [device for device in HELP_NB201_SPEARMAN if device in devices]
            devices = preferred or devices[:QUICK_DEVICES_PER_TABLE]
        results = {}
        for device in devices:
            results[device] = evaluate_device(table, table_index, device, seeds, variants)
            print(f"  {path.name} {device}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        datasets[path.name] = results
        print_table(f"{path.name} ({table.space}, {len(table)} architectures)", results)
        summary["per_file"][path.name] = summarise(results)  # type: ignore[index]
        if table.space == "nb201":
            help_rows = help_comparison(table, table_index, seeds)
            for device, values in help_rows.items():
                comparison[device] = {**results[device][10], **values} if device in results else values
    print_summary(summary, comparison)
    summary["help_nb201_n10"] = {
        device: {
            **values,
            "help_spearman": HELP_NB201_SPEARMAN[device],
            "help_flops_spearman": HELP_NB201_FLOPS_SPEARMAN[device],
        }
        for device, values in comparison.items()
    }
    summary["seconds"] = time.perf_counter() - started
    print(f"\ntotal time {summary['seconds']:.0f} s")
    if arguments.json:
        document = {
            "datasets": {
                name: {device: {str(n): values for n, values in per_n.items()} for device, per_n in results.items()}
                for name, results in datasets.items()
            },
            "summary": summary,
        }
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(document, indent=1))
    return 0


def print_summary(summary: dict[str, object], comparison: dict[str, dict[str, float]]) -> None:
    """Mean rho over devices per file and n, the n=10 target, and the HELP comparison."""
    print("\n== Summary: mean over devices, Spearman rho (within +-10%)")
    print(f"{'file':36s} {'n':>4s}  {'ours':>13s}  {'other-hw':>13s}  {'layer-only':>13s}  {'FLOPs':>13s}")
    overall: list[float] = []
    for name, per_n in summary["per_file"].items():  # type: ignore[union-attr]
        for n, values in per_n.items():
            cells = [
                f"{values.get(prefix + 'spearman', float('nan')):6.3f} ({values.get(prefix + 'within_10pct', float('nan')):4.2f})"
                for prefix in ("", "other_hardware_", "layer_only_", "flops_")
            ]
            print(f"{name:36s} {n:>4s}  {'  '.join(cells)}")
            if n == "10":
                overall.append(values["spearman"])
    if overall:
        mean = float(np.mean(overall))
        verdict = "meets" if mean >= TARGET_MEAN_SPEARMAN_AT_10 else "misses"
        print(
            f"mean over files of the per-file mean rho at n=10: {mean:.3f} ({verdict} the {TARGET_MEAN_SPEARMAN_AT_10} target)"
        )
        summary["mean_spearman_n10"] = mean
    if comparison:
        print("\n== NAS-Bench-201, n=10, against HELP (device = CSV column without 'lat_', same names as HELP's)")
        print(
            f"{'device':14s} {'ours':>6s} {'other-hw':>8s} {'help-refs':>9s} {'layer':>6s} {'HELP':>6s} {'ours/HELP':>9s} {'FLOPs':>6s} {'HELP FLOPs':>10s}"
        )
        for device, values in comparison.items():
            help_rho = HELP_NB201_SPEARMAN[device]
            print(
                f"{device:14s} {values.get('spearman', float('nan')):6.3f} {values.get('other_hardware_spearman', float('nan')):8.3f} "
                f"{values['help_references_spearman']:9.3f} {values.get('layer_only_spearman', float('nan')):6.3f} {help_rho:6.3f} "
                f"{values.get('spearman', float('nan')) / help_rho:9.3f} {values.get('flops_spearman', float('nan')):6.3f} "
                f"{HELP_NB201_FLOPS_SPEARMAN[device]:10.3f}"
            )
        means = {
            key: float(np.mean([values.get(key, float("nan")) for values in comparison.values()]))
            for key in (
                "spearman",
                "other_hardware_spearman",
                "help_references_spearman",
                "layer_only_spearman",
                "flops_spearman",
            )
        }
        help_mean = float(np.mean(list(HELP_NB201_SPEARMAN.values())))
        print(
            f"{'mean':14s} {means['spearman']:6.3f} {means['other_hardware_spearman']:8.3f} {means['help_references_spearman']:9.3f} "
            f"{means['layer_only_spearman']:6.3f} {help_mean:6.3f} {means['spearman'] / help_mean:9.3f} {means['flops_spearman']:6.3f} "
            f"{float(np.mean(list(HELP_NB201_FLOPS_SPEARMAN.values()))):10.3f}"
        )


if __name__ == "__main__":
    # one BLAS thread: the fits are small, and threads spinning on a shared 2-core machine
    # made eigh 30x slower
    with threadpool_limits(limits=1):
        sys.exit(main())
