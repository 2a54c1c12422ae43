"""Refit the named analytic device models from the published latency tables.

    python scripts/fit_analytic_devices.py [--data-dir ../shared/data/latency] [--out nas_search/hw_models/analytic_devices.json]

Writes the constants and their held-out errors (see nas_search/hw_models/analytic.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas_search.hw_models.analytic import CONSTANTS_PATH, fit_published_devices
from nas_search.utils import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "latency"))
    parser.add_argument("--out", default=str(CONSTANTS_PATH))
    arguments = parser.parse_args()
    constants = fit_published_devices(arguments.data_dir)
    atomic_write_text(arguments.out, json.dumps(constants, indent=1) + "\n")
    for device in constants["devices"]:
        errors = device["errors"]
        in_space = ", ".join(
            f"{space}: {figures['within_10pct']:.0%} within 10%, rho {figures['spearman']:.2f}"
            for space, figures in errors["in_space"].items()
        )
        new = errors["new_space"]
        print(
            f"{device['name']:<18} in-space [{in_space}] | new space: mean error {new['mean_abs_error']:.0%}, "
            f"rho {new['spearman']:.2f}"
        )
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
