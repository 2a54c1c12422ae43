"""Tabular NAS-Bench-201 space and the Optuna sampler registry.

Table tests read the real HELP / NATS-Bench CSV from ../shared/data (skipped, or failed under
NAS_SEARCH_REQUIRE_ALL=1, when it is absent); the registry tests need no data.
"""

from __future__ import annotations

import csv
import itertools
import warnings
from pathlib import Path

import optuna
import pytest

from benchmarks.lib.nb201 import (
    EDGE_PARAMETERS,
    EDGES,
    LATENCY_CONSTRAINT,
    OPERATIONS,
    NasBench201Table,
    arch_from_params,
    format_arch,
    parse_arch,
)
from nas_search.errors import UserError
from nas_search.search.samplers import (
    CONSTRAINT_ATTRIBUTE_PREFIX,
    FEASIBLE_ATTRIBUTE,
    SAMPLERS,
    make_sampler,
    record_constraints,
    sampler_names,
)

from support import shared_data_path

CSV_PARTS = ("latency", "nb201_cifar10_latency_ms.csv")

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def table_path() -> Path:
    return shared_data_path(*CSV_PARTS)


@pytest.fixture(scope="module")
def table(table_path: Path) -> NasBench201Table:
    return NasBench201Table.from_csv(table_path)


@pytest.fixture(scope="module")
def raw_rows(table_path: Path) -> list[dict[str, str]]:
    with table_path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------ arch strings (no data)
def test_arch_string_round_trip_covers_the_whole_space() -> None:
    strings = {format_arch(operations) for operations in itertools.product(OPERATIONS, repeat=len(EDGES))}
    assert len(strings) == len(OPERATIONS) ** len(EDGES) == 15625
    for arch in list(strings)[:200]:
        assert format_arch(parse_arch(arch)) == arch


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "|nor_conv_3x3~0|",
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
    ],
)
def test_parse_arch_rejects_malformed_strings(bad: str) -> None:
    with pytest.raises(UserError, match="NAS-Bench-201"):
        parse_arch(bad)


# ------------------------------------------------------------------ the table
def test_table_has_every_cell_once(table: NasBench201Table, raw_rows: list[dict[str, str]]) -> None:
    assert len(table) == 15625
    assert len(set(table.arch_strings)) == 15625
    assert table.operations == OPERATIONS and len(table.operations) == 5
    assert len(table.edges) == 6
    assert table.datasets == ["cifar10", "cifar100", "imagenet16"]
    expected_devices = [column[len("lat_") :] for column in raw_rows[0] if column.startswith("lat_")]
    assert table.devices == expected_devices and len(expected_devices) == 23


def test_lookup_matches_the_csv_rows(table: NasBench201Table, raw_rows: list[dict[str, str]]) -> None:
    for row in raw_rows[::997]:
        record = table.lookup(row["arch_str"])
        assert record.index == int(row["nb201_idx"])
        assert record.accuracy["cifar100"] == float(row["acc_cifar100_test"])
        assert record.latency_ms["pixel2"] == float(row["lat_pixel2"])
        assert record.latency_ms["gold_6226"] == float(row["lat_gold_6226"])


def test_lookup_of_unknown_arch_raises(table: NasBench201Table) -> None:
    with pytest.raises(UserError, match="NAS-Bench-201 arch string"):
        table.lookup("|skip~0|")


@pytest.mark.parametrize(
    ("dataset", "device", "budget"),
    [("cifar10", "gold_6226", 9.6105), ("cifar100", "lat_pixel2", 12.0), ("imagenet16-120", "titanx_1", 8.0)],
)
def test_constrained_optimum_equals_a_plain_scan(
    table: NasBench201Table, raw_rows: list[dict[str, str]], dataset: str, device: str, budget: float
) -> None:
    accuracy_column = {"cifar10": "acc_cifar10_test", "cifar100": "acc_cifar100_test", "imagenet16-120": "acc_imagenet16_test"}[
        dataset
    ]
    latency_column = device if device.startswith("lat_") else f"lat_{device}"
    best_accuracy = max(float(row[accuracy_column]) for row in raw_rows if float(row[latency_column]) <= budget)
    winners = {
        row["arch_str"]
        for row in raw_rows
        if float(row[latency_column]) <= budget and float(row[accuracy_column]) == best_accuracy
    }
    arch, accuracy = table.constrained_optimum(dataset, device, budget)
    assert accuracy == best_accuracy
    assert arch in winners
    assert table.lookup(arch).latency_ms[latency_column[len("lat_") :]] <= budget


def test_constrained_optimum_excludes_the_unconstrained_one_at_the_median(table: NasBench201Table) -> None:
    latency = table.latency_column("gold_6226")
    budget = float(sorted(latency)[len(latency) // 2])
    arch, accuracy = table.constrained_optimum("cifar10", "gold_6226", budget)
    unconstrained_accuracy = float(table.accuracy_column("cifar10").max())
    assert accuracy < unconstrained_accuracy
    with pytest.raises(UserError, match="fastest"):
        table.constrained_optimum("cifar10", "gold_6226", float(latency.min()) / 2)


def test_unknown_dataset_and_device_raise(table: NasBench201Table) -> None:
    with pytest.raises(UserError, match="accepted: .*gold_6226"):
        table.constrained_optimum("cifar10", "tpu_v9", 10.0)
    with pytest.raises(UserError, match="accepted: cifar10, cifar100, imagenet16"):
        table.constrained_optimum("mnist", "gold_6226", 10.0)


def test_from_csv_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        NasBench201Table.from_csv(tmp_path / "absent.csv")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("nb201_idx,lat_pixel2,acc_cifar10_test", "'arch_str'"),
        ("arch_str,acc_cifar10_test", "lat_<device>"),
        ("arch_str,lat_pixel2", "acc_<dataset>_test"),
    ],
)
def test_from_csv_names_the_missing_column(tmp_path: Path, header: str, expected: str) -> None:
    path = tmp_path / "table.csv"
    path.write_text(header + "\n")
    with pytest.raises(UserError, match=expected):
        NasBench201Table.from_csv(path)


def test_from_csv_rejects_an_incomplete_table(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("arch_str,lat_pixel2,acc_cifar10_test\n" + format_arch(["none"] * 6) + ",3,10.0\n")
    with pytest.raises(UserError, match="covers 1 of the 15625"):
        NasBench201Table.from_csv(path)


# ------------------------------------------------------------------ sampler registry
def test_registry_names() -> None:
    assert sampler_names() == list(SAMPLERS)
    assert {"tpe", "nsga2", "random"} <= set(sampler_names())


def test_unknown_sampler_lists_the_accepted_names() -> None:
    with pytest.raises(UserError, match="accepted: tpe, nsga2, random"):
        make_sampler("annealing", seed=0, constrained=True, multi_objective=False)


@pytest.mark.parametrize("name", ["tpe", "nsga2", "random", "qmc"])
def test_each_sampler_runs_constrained_trials(table: NasBench201Table, name: str) -> None:
    budget = 9.0
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(name, seed=3, constrained=True, multi_objective=False)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated constraints_func or similar
        study.optimize(table.make_objective("cifar10", "gold_6226", budget), n_trials=25)
    assert len(study.trials) == 25
    for trial in study.trials:
        latency = table.lookup(arch_from_params(trial.params)).latency_ms["gold_6226"]
        assert trial.constraints[LATENCY_CONSTRAINT] == pytest.approx(latency - budget)
    feasible_values = [trial.value for trial in study.trials if trial.user_attrs[FEASIBLE_ATTRIBUTE]]
    assert feasible_values, "25 queries with half the space feasible should find a feasible cell"


def test_gp_sampler_handles_categorical_constrained_trials(table: NasBench201Table) -> None:
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler("gp", seed=0, constrained=True, multi_objective=False)
    )
    study.optimize(table.make_objective("cifar10", "gold_6226", 9.0), n_trials=12)
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_multi_objective_samplers_build_and_run(name: str) -> None:
    sampler = make_sampler(name, seed=0, constrained=False, multi_objective=True)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(lambda trial: (trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)), n_trials=5)
    assert len(study.best_trials) >= 1


def test_record_constraints_sets_constraints_and_user_attributes() -> None:
    study = optuna.create_study()
    trial = study.ask()
    assert record_constraints(trial, {"latency_ms": -1.5, "memory_mb": 0.0}) is True
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    assert frozen.constraints == {"latency_ms": -1.5, "memory_mb": 0.0}
    assert frozen.user_attrs[f"{CONSTRAINT_ATTRIBUTE_PREFIX}latency_ms"] == -1.5
    assert frozen.user_attrs[FEASIBLE_ATTRIBUTE] is True


# ------------------------------------------------------------------ a short search
@pytest.mark.parametrize("name", ["random", "tpe"])
def test_search_records_constraints_and_feasibility(table: NasBench201Table, name: str) -> None:
    budget = float(sorted(table.latency_column("gold_6226"))[len(table) // 2])
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(name, seed=0, constrained=True, multi_objective=False)
    )
    objective = table.make_objective("cifar10", "gold_6226", budget)
    for _ in range(30):
        trial = study.ask()
        study.tell(trial, objective(trial))
    feasibility = []
    for trial in study.trials:
        assert set(trial.params) == set(EDGE_PARAMETERS)
        arch = arch_from_params(trial.params)
        assert trial.user_attrs["arch_str"] == arch
        record = table.lookup(arch)
        assert trial.value == record.accuracy["cifar10"]
        constraint = record.latency_ms["gold_6226"] - budget
        assert trial.constraints == {LATENCY_CONSTRAINT: pytest.approx(constraint)}
        assert trial.user_attrs[f"{CONSTRAINT_ATTRIBUTE_PREFIX}{LATENCY_CONSTRAINT}"] == pytest.approx(constraint)
        assert trial.user_attrs[FEASIBLE_ATTRIBUTE] is (constraint <= 0)
        feasibility.append(trial.user_attrs[FEASIBLE_ATTRIBUTE])
    assert any(feasibility) and not all(feasibility)
    # Optuna's own best trial respects the constraint.
    assert study.best_trial.user_attrs[FEASIBLE_ATTRIBUTE] is True
