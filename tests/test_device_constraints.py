"""Latency and memory budgets in the search, and device costs in ``cost``.

Runs the real CLI on the micro space with a session supernet: a named analytic device
(no table needed), a table profiled here for a user device (``--device NAME --lut``, with
the end-of-search measurement on this machine), and the one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from conftest import CliRunner, micro_run_arguments

from nas_search.hw_models.devices import latency_model_for
from nas_search.hw_models.memory import MemoryModel
from nas_search.search.sampling import sample_specs
from nas_search.tasks import get_space

pytestmark = pytest.mark.slow

SPACE = "micro"


def _assert_one_line_error(result, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def test_latency_and_memory_budgets_on_a_named_device(nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path) -> None:
    space = get_space(SPACE)
    latency = latency_model_for(space, "pixel2")
    memory = MemoryModel(space)
    pool = [spec for spec, _ in sample_specs(space, 60, seed=5, max_flops=8_000_000, input_size=space.input_size)]
    latency_limit = _median([latency(spec) for spec in pool])
    memory_limit = _median([memory(spec) for spec in pool]) * 1.2
    arguments = micro_run_arguments(
        "device",
        micro_supernet,
        5,
        "--device",
        "pixel2",
        "--latency",
        f"{latency_limit:.4f}ms",
        "--memory",
        f"{int(memory_limit)}B",
        "--json-summary",
        "summary.json",
    )
    result = nas_cli(tmp_path, *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "latency ms" in result.stdout and "peak mem" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    study = optuna.load_study(study_name="device", storage=f"sqlite:///{tmp_path / 'studies' / 'device.db'}")
    # feasible trials are complete; infeasible ones pruned (recorded, never scored)
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    assert len(trials) == 5
    # with a latency budget the search is pushed to it (not to the FLOPs budget)
    assert all("latency_utilization" in trial.constraints and "flops_utilization" not in trial.constraints for trial in trials)
    for trial in trials:
        # every trial records its device costs, and its constraints are the relative violations
        assert trial.user_attrs["latency"] == pytest.approx(latency(trial_spec(trial)), rel=1e-9)
        assert trial.user_attrs["peak_memory"] == pytest.approx(memory(trial_spec(trial)), rel=1e-9)
        assert trial.constraints["latency"] == pytest.approx(
            (trial.user_attrs["latency"] - latency_limit) / latency_limit, rel=1e-3, abs=1e-6
        )
        feasible = all(value <= 0 for value in trial.constraints.values())
        assert trial.user_attrs["feasible"] == feasible
        assert ("accuracy" in trial.user_attrs) == feasible  # infeasible trials cost no evaluation
        assert (trial.state == optuna.trial.TrialState.COMPLETE) == feasible
    # budget-aware startup: the queued startup trials meet the device budgets
    startup = [trial for trial in trials if trial.number < 3]
    assert all(trial.user_attrs["latency"] <= latency_limit * (1 + 1e-6) for trial in startup)
    assert all(trial.user_attrs["peak_memory"] <= memory_limit for trial in startup)
    assert summary["best"] is not None and summary["best"]["latency"] <= latency_limit * (1 + 1e-6)
    assert "latency_check" not in summary  # a phone model is not measured on this machine


def trial_spec(trial):
    from nas_search.spec import ArchSpec

    return ArchSpec.from_json(trial.user_attrs["arch_json"])


def test_user_device_table_and_measured_check(nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path) -> None:
    """A table profiled here under a user device name drives the search with --lut, and the
    chosen architecture is measured at the end (its hardware is this machine)."""
    table = tmp_path / "board.json"
    profile = nas_cli(
        tmp_path,
        "profile",
        "--space",
        SPACE,
        "--device",
        "cpu-torch",
        "--widths",
        "1",
        "--subnets",
        "12",
        "--repeats",
        "3",
        "--warmup",
        "1",
        "--out",
        str(table),
        "--quiet",
        "--json",
    )
    assert profile.returncode == 0, profile.stderr[-2000:]
    data = json.loads(table.read_text())
    data["device"] = "my-board"  # a user device: the table says which device it measured
    table.write_text(json.dumps(data))
    model = latency_model_for(get_space(SPACE), "my-board", table)
    space = get_space(SPACE)
    pool = [spec for spec, _ in sample_specs(space, 40, seed=2, max_flops=8_000_000, input_size=space.input_size)]
    limit = max(model(spec) for spec in pool) * 1.5  # loose: the measured check should meet it
    arguments = micro_run_arguments(
        "board",
        micro_supernet,
        3,
        "--device",
        "my-board",
        "--lut",
        str(table),
        "--latency",
        f"{limit:.4f}ms",
        "--objectives",
        "accuracy,latency",
        "--sampler",
        "nsga2",
        "--min-utilization",
        "0",
        "--json-summary",
        "summary.json",
    )
    result = nas_cli(tmp_path, *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    check = summary["latency_check"]
    assert check["device"].startswith("my-board") and check["measured_ms"] > 0 and check["predicted_ms"] > 0
    assert check["meets_budget"] == (check["measured_ms"] <= limit)
    assert "measured on my-board" in result.stdout


def test_cost_prints_latency_next_to_flops(nas_cli: CliRunner, tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(get_space(SPACE).largest().to_json())
    result = nas_cli(tmp_path, "cost", str(arch), "--device", "samsung-a50", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    expected = latency_model_for(get_space(SPACE), "samsung-a50")(get_space(SPACE).largest())
    assert report["device"]["latency_ms"] == pytest.approx(expected)
    assert report["device"]["peak_memory_bytes"] > 0 and report["flops"] > 0
    human = nas_cli(tmp_path, "cost", str(arch), "--device", "samsung-a50")
    assert "latency:" in human.stdout and "FLOPs:" in human.stdout and "peak activation memory" in human.stdout


BAD_DEVICE_ARGUMENTS = {
    "latency without device": (["--latency", "5ms"], ["--device"]),
    "unknown device": (["--latency", "5ms", "--device", "toaster"], ["toaster", "pixel2"]),
    "latency in words": (["--latency", "fast", "--device", "pixel2"], ["fast", "ms"]),
    "memory in words": (["--memory", "lots"], ["lots", "MB"]),
    "latency below the smallest": (["--latency", "0.00001ms", "--device", "pixel2"], ["smallest subnet", "at least"]),
    "memory below the smallest": (["--memory", "10B"], ["smallest subnet", "at least"]),
    "local device without table": (
        ["--latency", "5ms", "--device", "cpu-onnxruntime"],
        ["no latency table", "nas-search profile"],
    ),
    "missing lut": (["--latency", "5ms", "--device", "phone", "--lut", "missing.json"], ["missing.json"]),
}


@pytest.mark.parametrize("case", list(BAD_DEVICE_ARGUMENTS), ids=list(BAD_DEVICE_ARGUMENTS))
def test_bad_device_input_is_one_line(case: str, nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path) -> None:
    extra, fragments = BAD_DEVICE_ARGUMENTS[case]
    result = nas_cli(tmp_path, *micro_run_arguments("bad", micro_supernet, 2), *extra, timeout=120)
    _assert_one_line_error(result, *fragments)
    assert not (tmp_path / "studies" / "bad.db").exists()
