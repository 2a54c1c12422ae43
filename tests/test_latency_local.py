"""Device latency models on the local CPU, the device registry and peak activation memory.

Timing tests measure real modules on this (possibly busy) CPU with few repeats, so their
bounds are loose; the fast checks (formats, resume, registry errors, memory) are exact.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import torch
import torch.fx
from torch import nn

from nas_search.cli.main import main
from nas_search.errors import UserError
from nas_search.hw_models.devices import Device, device_cost, get_device, latency_model_for, open_table, register_device
from nas_search.hw_models.latency import (
    BlockConfig,
    LatencyModel,
    ProfileOptions,
    TimingOptions,
    distinct_blocks,
    load_table,
    network_parts,
    profile_table,
    restrict_widths,
    sample_subnets,
    time_interleaved,
)
from nas_search.hw_models.memory import MemoryModel, estimate_memory, peak_memory_bytes
from nas_search.spaces.scc.conv import SlidingChannelConv2d
from nas_search.spaces.space import ResolvedBlock
from nas_search.spaces.static import build_static_model
from nas_search.spec import ArchSpec, BlockSpec, StageSpec
from nas_search.tasks import get_space
from nas_search.units import parse_latency_ms

FAST = TimingOptions(warmup=1, repeats=5)


def _parts_of(space, specs, input_size=None):
    parts = {}
    for spec in specs:
        for config in network_parts(space.resolve(spec), input_size or space.input_size):
            parts.setdefault(config.key, config)
    return list(parts.values())


@pytest.fixture(scope="module")
def micro_table(tmp_path_factory) -> tuple[Path, list[ArchSpec]]:
    """A torch table of ``micro`` holding the parts of 16 subnets and their measurements,
    each timed in 3 instances (as ``profile`` does): one instance alone can run twice as
    slow for its whole life (a full-suite run once measured a 2.6 ms subnet at 5.6 ms)."""
    space = get_space("micro")
    specs = sample_subnets(space, 16, seed=3)
    path = tmp_path_factory.mktemp("tables") / "micro_torch.json"
    options = ProfileOptions(runtime="torch", threads=1, timing=TimingOptions(warmup=2, repeats=5, instances=3))
    profile_table(space, path, options, progress=False, blocks=_parts_of(space, specs), specs=specs)
    return path, specs


# ------------------------------------------------------------------------ enumeration
@pytest.mark.parametrize("name", ["micro", "cifar"])
def test_distinct_blocks_cover_every_part_of_random_subnets(name: str) -> None:
    space = get_space(name)
    keys = {config.key for config in distinct_blocks(space)}
    assert len(keys) == len(distinct_blocks(space))  # no duplicates
    rng = random.Random(0)
    for _ in range(30):
        spec = space.sample(rng, bias=rng.random())
        for config in network_parts(space.resolve(spec), space.input_size):
            assert config.key in keys, config.key


def test_width_subset_gives_a_smaller_table_and_bad_widths_are_refused() -> None:
    space = get_space("cifar")
    small = restrict_widths(space, (0.25, 1.0))
    assert small.name == space.name
    assert len(distinct_blocks(small)) < len(distinct_blocks(space)) / 4
    with pytest.raises(UserError, match="leaves no width"):
        restrict_widths(space, (0.3,))


def test_block_config_builds_a_module_with_the_right_output_shape() -> None:
    space = get_space("cifar")
    spec = space.sample(random.Random(5))
    from nas_search.hw_models.latency import build_part, part_example

    for config in network_parts(space.resolve(spec), space.input_size)[:-1]:
        with torch.no_grad():
            output = build_part(config)(part_example(config))
        assert output.shape == (1, config.out_channels, config.output_size, config.output_size)
        assert BlockConfig.from_dict(config.to_dict()) == config


# ------------------------------------------------------------------------ timing
def test_thread_cpu_clock_ignores_time_the_thread_does_not_run() -> None:
    def sleeper() -> None:
        time.sleep(0.003)

    wall = time_interleaved([sleeper], TimingOptions(warmup=1, repeats=3, clock="wall"))[0]
    cpu = time_interleaved([sleeper], TimingOptions(warmup=1, repeats=3, clock="thread_cpu"))[0]
    assert wall.median_ms >= 2.9
    assert cpu.median_ms < 1.0
    assert TimingOptions().clock_for(1) == "thread_cpu" and TimingOptions().clock_for(2) == "wall"


def test_instances_are_independent_and_their_medians_are_combined(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each instance is made afresh (``instantiate``) and timed on its own; the latency is
    the median of the instances' medians and the minimum their overall minimum. Here the
    i-th instance of a module sleeps i + 1 ms per run (wall clock), as a slow instance would."""
    from nas_search.hw_models.latency import RUNTIMES, Runtime, measure_modules

    made: list[int] = []

    def instantiate(compiled, example, threads):
        delay = 0.001 * (len(made) % 3 + 1)
        made.append(compiled)
        return lambda: time.sleep(delay)

    monkeypatch.setitem(RUNTIMES, "sleeper", Runtime("sleeper", "sleeps", lambda module, example: 7, instantiate, dict))
    options = TimingOptions(warmup=1, repeats=3, clock="wall", instances=3)
    timing = measure_modules([(None, None)], "sleeper", 1, options)[0]
    assert made == [7, 7, 7]  # compiled once, instantiated three times
    assert 1.9 <= timing.median_ms < 2.9 and 0.9 <= timing.min_ms < 1.9
    single = measure_modules([(None, None)], "sleeper", 1, TimingOptions(warmup=1, repeats=3, clock="wall"))[0]
    assert len(made) == 4 and single.median_ms < 1.9  # one instance: its own median (the 4th sleeps 1 ms)
    with pytest.raises(UserError, match="instances=0"):
        TimingOptions(instances=0)


def test_torch_instances_hold_their_own_weights() -> None:
    from nas_search.hw_models.latency import get_runtime

    runtime = get_runtime("torch")
    module = nn.Linear(4, 2)
    example = torch.randn(1, 4)
    first, second = (runtime.instantiate(runtime.compile(module, example), example, 1) for _ in range(2))
    assert torch.equal(first(), second()) and torch.equal(first(), module(example).detach())
    with torch.no_grad():
        module.weight.add_(1.0)  # the instances are copies: changing the original changes neither
    assert torch.equal(first(), second()) and not torch.equal(first(), module(example).detach())


# ------------------------------------------------------------------------ table file
def test_table_round_trip_records_device_versions_and_date(micro_table) -> None:
    path, specs = micro_table
    data = json.loads(path.read_text())
    assert data["format"] == "nas-search-latency-table"
    assert data["device"] == "cpu" and data["runtime"] == "torch" and data["threads"] == 1
    assert data["versions"]["torch"] == torch.__version__ and data["created"][:4].isdigit()
    assert data["timing"]["clock"] == "thread_cpu"
    table = load_table(path)
    assert len(table.subnets) == len(specs)
    assert {item.spec.key for item in table.subnets} == {spec.key for spec in specs}
    assert table.to_dict()["blocks"] == data["blocks"]
    assert all(entry.latency_ms >= entry.min_ms > 0 for entry in table.entries.values())


def test_an_interrupted_profile_resumes_where_it_stopped(tmp_path: Path) -> None:
    space = get_space("micro")
    specs = sample_subnets(space, 2, seed=11)
    parts = _parts_of(space, specs)
    # A block whose SCC groups do not divide its channels cannot be built: the profile
    # stops there, after the first chunk has been measured.
    broken = BlockConfig("scc", 12, 16, 16, kernel=3, hidden_channels=12, groups=8, overlap=0.5)
    options = ProfileOptions(runtime="torch", threads=1, chunk=3, timing=FAST)
    path = tmp_path / "partial.json"
    with pytest.raises(Exception):  # noqa: B017  (whatever the broken part raises, the profile stops there)
        profile_table(space, path, options, progress=False, blocks=parts[:3] + [broken] + parts[3:], specs=specs)
    partial = load_table(path)
    assert set(partial.entries) == {config.key for config in parts[:3]}
    first_values = {key: entry.latency_ms for key, entry in partial.entries.items()}
    result = profile_table(space, path, options, progress=False, blocks=parts, specs=specs)
    assert result.resumed_blocks == 3 and result.measured_blocks == len(parts) - 3
    assert result.measured_subnets == len(specs)
    finished = load_table(path)
    assert set(finished.entries) == {config.key for config in parts}
    assert all(finished.entries[key].latency_ms == value for key, value in first_values.items())
    again = profile_table(space, path, options, progress=False, blocks=parts, specs=specs)
    assert again.measured_blocks == 0 and again.measured_subnets == 0


def test_resuming_with_other_settings_is_refused(micro_table) -> None:
    path, specs = micro_table
    space = get_space("micro")
    with pytest.raises(UserError, match="runtime"):
        profile_table(space, path, ProfileOptions(runtime="onnxruntime", timing=FAST), progress=False, specs=specs)
    with pytest.raises(UserError, match="space"):
        profile_table(get_space("cifar"), path, ProfileOptions(runtime="torch", timing=FAST), progress=False)


# ------------------------------------------------------------------------ prediction
def test_model_predicts_real_measured_subnets_within_a_loose_bound(micro_table) -> None:
    path, specs = micro_table
    space = get_space("micro")
    table = load_table(path)
    training, held_out = table.subnets[:13], table.subnets[13:]
    # The minimum of the samples is the steadier statistic on a busy machine.
    corrected = LatencyModel(table, space, training=training, statistic="min")
    lut_only = LatencyModel(table, space, correction=False, statistic="min")
    assert corrected.correction is not None and lut_only.correction is None
    ratios = []
    for item in held_out:
        for model in (corrected, lut_only):
            prediction = model.predict(item.spec)
            assert prediction.estimated_parts == 0
            assert 0.5 < prediction.latency_ms / item.min_ms < 2.0, (str(item.spec), prediction, item.min_ms)
        ratios.append(corrected(item.spec) / item.min_ms)
    # Typically 0.99; one full-suite run on the shared machine gave 0.698 (the blocks and the
    # subnets are timed at different moments, and neighbours' load moves between them).
    assert 0.6 < sorted(ratios)[len(ratios) // 2] < 1.6


def test_onnxruntime_lut_sum_tracks_whole_subnets(tmp_path: Path) -> None:
    space = get_space("micro")
    specs = sample_subnets(space, 2, seed=21)
    path = tmp_path / "micro_ort.json"
    options = ProfileOptions(runtime="onnxruntime", threads=1, timing=TimingOptions(warmup=2, repeats=7))
    result = profile_table(space, path, options, progress=False, blocks=_parts_of(space, specs), specs=specs)
    # Compared by the minimum statistic: the fastest samples are what load from neighbours
    # leaves alone (a full-suite run beside a 1-thread benchmark measured one 0.58 ms subnet
    # at 2.2x its parts' median sum; RESULTS.md: the minimum tracks whole networks best).
    model = LatencyModel(result.table, space, statistic="min")
    assert model.correction is None  # too few subnets for a correction: plain LUT sum
    for item in result.table.subnets:
        assert 0.5 < model(item.spec) / item.min_ms < 2.0


def test_missing_parts_are_estimated_and_reported(micro_table) -> None:
    path, _ = micro_table
    space = get_space("micro")
    table = load_table(path)
    model = LatencyModel(table, space)
    unseen = next(spec for spec in sample_subnets(space, 50, seed=99) if spec.key not in {s.spec.key for s in table.subnets})
    prediction = model.predict(unseen)
    assert prediction.latency_ms > 0 and prediction.parts >= 5
    smallest, largest = model(space.smallest()), model(space.largest())
    assert smallest < largest


# ------------------------------------------------------------------------ registry
def test_registry_resolves_a_table_and_reports_cost(micro_table, tmp_path: Path) -> None:
    path, specs = micro_table
    space = get_space("micro")
    model = latency_model_for(space, "cpu", lut_path=path)
    assert model.device == "cpu/torch/1thread" and model(specs[0]) > 0
    report = device_cost(specs[0], space, "cpu", lut_path=path)
    assert report["latency_ms"] > 0 and report["peak_memory_bytes"] == peak_memory_bytes(space.resolve(specs[0]), 32)
    # A user device: the same measurements under another device name.
    data = json.loads(path.read_text())
    data["device"] = "my-board"
    user_table = tmp_path / "board.json"
    user_table.write_text(json.dumps(data))
    assert latency_model_for(space, "my-board", lut_path=user_table)(specs[0]) == pytest.approx(model(specs[0]))
    assert get_device("my-board").runtimes == ("torch",)


def test_registry_errors_are_one_line_user_errors(micro_table, tmp_path: Path, monkeypatch) -> None:
    path, _ = micro_table
    micro, cifar = get_space("micro"), get_space("cifar")
    cases = {
        "unknown device": lambda: latency_model_for(micro, "no-such-device"),
        "for space": lambda: latency_model_for(cifar, "cpu", lut_path=path),
        "runtime": lambda: latency_model_for(micro, "cpu", lut_path=path, runtime="onnxruntime"),
        "input_size": lambda: latency_model_for(micro, "cpu", lut_path=path, input_size=64),
        "device 'cpu', not 'phone'": lambda: latency_model_for(micro, "phone", lut_path=path),
        "not found": lambda: latency_model_for(micro, "cpu", lut_path=tmp_path / "missing.json"),
    }
    monkeypatch.chdir(tmp_path)
    cases["nas-search profile"] = lambda: latency_model_for(micro, "cpu")  # no default table here
    for expected, call in cases.items():
        with pytest.raises(UserError, match=expected) as error:
            call()
        assert "\n" not in str(error.value)
    data = json.loads(path.read_text())
    broken_tables = {
        "not valid JSON": "{",
        "not a nas-search latency table": json.dumps({"format": "other"}),
        "positive number": json.dumps({**data, "blocks": [{**data["blocks"][0], "latency_ms": -1}]}),
        "unknown field": json.dumps({**data, "blocks": [{**data["blocks"][0], "colour": 1}]}),
        "threads": json.dumps({**data, "threads": "two"}),
    }
    for expected, text in broken_tables.items():
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(UserError, match=expected):
            open_table(micro, "cpu", lut_path=bad)
    with pytest.raises(UserError, match="already registered"):
        register_device(Device("cpu", "another cpu", ("torch",), local=True))
    with pytest.raises(UserError, match="bad latency"):
        parse_latency_ms("fast")


def test_cli_errors_exit_with_status_2(capsys) -> None:
    assert main(["profile", "--space", "micro", "--device", "no-such-device"]) == 2
    assert main(["profile", "--space", "micro", "--runtime", "tflite"]) == 2
    assert main(["profile", "--space", "micro", "--widths", "0.3"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 3 and all(line.startswith("nas-search profile: error:") for line in error)
    assert main(["profile", "--space", "micro", "--count-only", "--json"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["distinct_blocks"] == len(distinct_blocks(get_space("micro")))


# ------------------------------------------------------------------------ memory
class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return isinstance(module, SlidingChannelConv2d) or super().is_leaf_module(module, name)


class _LiveBytes(torch.fx.Interpreter):
    """Runs a graph node by node, freeing values after their last use (as a deployment
    runtime does), and records the largest total of distinct live storages."""

    peak = 0

    def run_node(self, node):
        result = super().run_node(node)
        storages = {}
        for value in [*self.env.values(), result]:
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        self.peak = max(self.peak, sum(storages.values()))
        return result


def measured_peak_bytes(model: nn.Module, input_size: int) -> int:
    """Peak live activation bytes of ``model`` with batch norm folded away (identity)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.Identity())
    graph = torch.fx.GraphModule(model, _LeafTracer().trace(model))
    interpreter = _LiveBytes(graph)
    with torch.inference_mode():
        interpreter.run(torch.randn(1, 3, input_size, input_size))
    return interpreter.peak


@pytest.mark.parametrize("name,input_size,count", [("micro", 32, 4), ("cifar", 32, 4), ("mobile", 64, 2)])
def test_memory_model_equals_the_measured_peak(name: str, input_size: int, count: int) -> None:
    space = get_space(name)
    rng = random.Random(7)
    for _ in range(count):
        spec = space.sample(rng, bias=rng.random())
        network = space.resolve(spec)
        expected = measured_peak_bytes(build_static_model(network).eval(), input_size)
        assert peak_memory_bytes(network, input_size) == expected, str(spec)


def test_memory_worked_example_and_cost_model() -> None:
    block = ResolvedBlock(BlockSpec("mbconv", kernel=3, expansion=4), 24, 24, 1, 96, 0, residual=True)
    from nas_search.hw_models.memory import TensorProgram, block_program, peak_of_program

    program = TensorProgram()
    source = program.add_input("x", 24 * 56 * 56)
    block_program(program, block, source, 56, "block")
    estimate = peak_of_program(program)
    assert estimate.peak_bytes == 216 * 56 * 56 * 4 and estimate.peak_layer == "block.depthwise"
    space = get_space("mobile")
    spec = ArchSpec("mobile", tuple(StageSpec((BlockSpec("dsc"),) * choices.depths[0]) for choices in space.stages))
    model = MemoryModel(space)
    assert model(spec) == estimate_memory(space.resolve(spec), 224).peak_bytes > 0
    assert MemoryModel(space, input_size=112)(spec) < model(spec)
