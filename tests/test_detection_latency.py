"""Latency tables for detectors (``nas_search.tasks.detect.latency``, reached through the
space's ``network_costs.latency_table``): the parts cover the
detector exactly, each part runs in both runtimes, and a profiled table predicts real
measured detectors, through the Python API and the CLI."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from nas_search.cli.main import main
from nas_search.errors import UserError
from nas_search.hw_models.devices import device_cost, latency_model_for
from nas_search.hw_models.latency import (
    LatencyModel,
    build_part,
    distinct_blocks,
    export_onnx_bytes,
    load_table,
    model_parts,
    part_example,
    part_features,
    restrict_widths,
)
from nas_search.tasks import get_space
from nas_search.tasks.detect.build import build_detector
from nas_search.tasks.detect.hardware import detector_layers
from nas_search.tasks.detect.latency import PART_MODULES, detector_parts, join_features

NECK_AND_HEAD = tuple(PART_MODULES)


def _random_detectors(count: int, seed: int):
    space = get_space("detect")
    rng = random.Random(seed)
    return space, [space.sample(rng, bias=rng.random()) for _ in range(count)]


# ------------------------------------------------------------------------ parts
@pytest.mark.parametrize("input_size", [416, 320])
def test_distinct_parts_cover_every_part_of_random_detectors(input_size: int) -> None:
    space, specs = _random_detectors(40, seed=1)
    distinct = distinct_blocks(space, input_size)
    keys = {config.key for config in distinct}
    assert len(keys) == len(distinct)
    for spec in specs:
        parts = model_parts(space, space.resolve(spec), input_size)
        assert {config.op for config in parts} >= {"stem", "lateral", "fuse", "extra_level", "tower_layer", "predictors"}
        missing = [config.key for config in parts if config.key not in keys]
        assert not missing, missing[:3]
    # The largest detector has every neck block and the deepest towers.
    largest = model_parts(space, space.resolve(space.largest()), input_size)
    assert sum(config.op == "neck_block" for config in largest) == 3 * max(space.detector.neck_depths)
    assert sum(config.op == "tower_layer" for config in largest) == 2 * 5 * max(space.detector.head_depths)


def test_part_listings_add_up_to_the_detector_listing() -> None:
    """The parts are enumerated like the analytic listing of the whole neck and head (both
    are made of the same per-part listings, so this checks that every part appears once, at
    its level's size): kernels, multiply-adds and traffic add up, the final joins aside."""
    space, specs = _random_detectors(20, seed=2)
    for spec in specs:
        detector = space.resolve(spec, num_classes=7)
        parts = [config for config in detector_parts(detector, 416) if config.op in NECK_AND_HEAD]
        listing = [layer for layer in detector_layers(detector, 416) if layer.stage > len(detector.backbone.stages)]
        joins = join_features(detector, 416)
        assert sum(part_features(config, space).layers for config in parts) + joins[3] == len(listing)
        assert sum(part_features(config, space).flops for config in parts) == sum(layer.macs for layer in listing)
        assert sum(part_features(config, space).traffic_bytes for config in parts) + joins[2] == 4 * sum(
            layer.activation_elements for layer in listing
        )


def _convolutions(module: nn.Module, inputs: tuple) -> Counter:
    """Every convolution a forward pass launches: (in, out, groups, kernel, stride, input size)."""
    launched: Counter = Counter()

    def record(convolution, arguments, _):
        launched[
            (
                convolution.in_channels,
                convolution.out_channels,
                convolution.groups,
                convolution.kernel_size,
                convolution.stride,
                tuple(arguments[0].shape[-2:]),
            )
        ] += 1

    handles = [child.register_forward_hook(record) for child in module.modules() if isinstance(child, nn.Conv2d)]
    with torch.no_grad():
        module(*inputs)
    for handle in handles:
        handle.remove()
    return launched


def _onnx_operators(module: nn.Module, example) -> Counter:
    graph = onnx.load_from_string(export_onnx_bytes(module, example)).graph
    return Counter(node.op_type for node in graph.node if node.op_type in COMPUTE_OPERATORS)


#: ONNX operators that do work at run time (not shape bookkeeping, which differs between a
#: whole graph and its pieces).
COMPUTE_OPERATORS = {
    "Conv",
    "Add",
    "Relu",
    "Clip",
    "Min",
    "Exp",
    "Resize",
    "Transpose",
    "Sigmoid",
    "Mul",
    "HardSigmoid",
    "GlobalAveragePool",
    "ReduceMean",
}


def test_parts_run_exactly_the_whole_detectors_kernels() -> None:
    """The parts of a detector launch the same convolutions (shapes, groups, strides and
    input sizes, so C + 1 class outputs and the fuse part's coarser input included) as the
    deployed network, and their ONNX graphs hold the same compute operators (the final
    concatenations, outside every part, are not counted: ONNX also uses Concat for shape
    bookkeeping). Hooks on the real modules and ONNX exports, at 128 px, 5 classes."""
    space, specs = _random_detectors(3, seed=3)
    for spec in specs:
        core = build_detector(spec, 5, 128).eval().core()
        image = torch.randn(1, 3, 128, 128)
        whole, whole_operators = _convolutions(core, (image,)), _onnx_operators(core, image)
        in_parts, part_operators = Counter(), Counter()
        for config in model_parts(space, space.resolve(spec, num_classes=5), 128):
            module, example = build_part(config, space), part_example(config, space)
            in_parts += _convolutions(module, example if isinstance(example, tuple) else (example,))
            part_operators += _onnx_operators(module, example)
        assert in_parts == whole and sum(whole.values()) > 0
        assert any(key[1] == 6 for key in whole)  # the class predictor: C + 1 = 6 outputs
        assert part_operators == whole_operators and part_operators["Resize"] == 2 and part_operators["Exp"] == 5


@pytest.mark.parametrize("kind", NECK_AND_HEAD)
def test_each_detector_part_exports_to_onnx_and_agrees_with_torch(kind: str) -> None:
    space = get_space("detect")
    config = next(config for config in distinct_blocks(restrict_widths(space, [0.25]), 64) if config.op == kind)
    module, example = build_part(config, space), part_example(config, space)
    inputs = example if isinstance(example, tuple) else (example,)
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    session = onnxruntime.InferenceSession(export_onnx_bytes(module, example), providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_inputs()]
    assert len(names) == len(inputs)
    outputs = session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs)})
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-3, atol=1e-4)


def test_widths_subset_narrows_the_neck_and_head_too() -> None:
    space = get_space("detect")
    small = restrict_widths(space, [0.25, 1.0])
    assert small.detector.neck_widths == (0.25, 1.0) and small.detector.head_widths == (0.25, 1.0)
    assert len(distinct_blocks(small)) < len(distinct_blocks(space)) / 4
    with pytest.raises(UserError, match="neck width"):
        restrict_widths(
            space.__class__(**{**space.__dict__, "detector": space.detector.__class__(neck_widths=(0.5,))}), [0.25, 1.0]
        )


# ------------------------------------------------------------------------ a profiled table
def test_table_predicts_measured_detectors(detect_latency_table) -> None:
    path, specs = detect_latency_table
    space = get_space("detect")
    table = load_table(path)
    assert table.space == "detect" and table.input_size == 416 and table.num_classes == space.num_classes
    assert {entry.config.op for entry in table.entries.values()} >= set(NECK_AND_HEAD)
    measured = {item.spec.key: item.latency_ms for item in table.subnets}
    assert len(measured) == len(specs) == 12
    lut_only = LatencyModel(table, space, correction=False)
    sums = []
    for spec in specs:
        prediction = lut_only.predict(spec)
        assert prediction.estimated_parts == 0 and prediction.parts == len(model_parts(space, space.resolve(spec), 416))
        sums.append(prediction.lut_sum_ms)
    truth = [measured[spec.key] for spec in specs]
    # The detectors span more than 10x in latency; the plain sum of the parts ranks them.
    assert max(truth) > 10 * min(truth)
    assert spearmanr(sums, truth).statistic >= 0.8
    ratios = sorted(total / real for total, real in zip(sums, truth))
    assert 0.5 < ratios[len(ratios) // 2] < 2.0
    corrected = LatencyModel(table, space)
    assert corrected.correction is not None


def test_other_class_counts_estimate_the_predictors(detect_latency_table) -> None:
    path, specs = detect_latency_table
    space = get_space("detect")
    model = LatencyModel(load_table(path), space)
    three = model.for_classes(3)
    assert three.num_classes == 3 and model.num_classes == 20 and model.for_classes(20) is model
    prediction, default = three.predict(specs[0]), model.predict(specs[0])
    assert prediction.estimated_parts == 5 and default.estimated_parts == 0  # one predictors part per level
    assert prediction.latency_ms < default.latency_ms  # 4 class outputs instead of 21
    assert prediction.latency_ms > 0.8 * default.latency_ms


def test_cost_command_reports_a_detector_on_a_profiled_device(detect_latency_table, tmp_path: Path, capsys) -> None:
    path, specs = detect_latency_table
    space = get_space("detect")
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(specs[0].to_dict()))
    capsys.readouterr()
    assert main(["cost", str(arch), "--device", "cpu", "--lut", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    device = report["device"] if "device" in report else report
    expected = latency_model_for(space, "cpu", lut_path=path)
    assert device["latency_ms"] == pytest.approx(expected(specs[0]))
    assert device_cost(specs[0], space, "cpu", lut_path=path)["latency_ms"] == pytest.approx(expected(specs[0]))


def test_profile_counts_detector_parts(capsys) -> None:
    capsys.readouterr()
    assert main(["profile", "--space", "detect", "--count-only", "--widths", "0.25,1", "--json"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["distinct_blocks"] == len(distinct_blocks(restrict_widths(get_space("detect"), [0.25, 1.0])))
    assert {"lateral", "fuse", "tower_layer", "predictors"} <= set(counted["by_kind"])


def test_profile_refuses_a_detector_size_that_is_not_a_multiple_of_32(tmp_path: Path, capsys) -> None:
    out = tmp_path / "table.json"
    capsys.readouterr()
    assert main(["profile", "--space", "detect", "--input-size", "300", "--widths", "0.25", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "300" in error and "multiple of 32" in error and "\n" not in error
    assert not out.exists()
    assert main(["profile", "--space", "detect", "--input-size", "300", "--count-only"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


def test_a_list_of_images_is_one_input_and_a_tuple_is_several() -> None:
    """torchvision detectors take a list of images (one argument); a ``fuse`` part takes
    a tuple of tensors (two arguments). Both are timed as called."""
    from nas_search.hw_models.latency import TimingOptions, measure_modules

    class Pipeline(nn.Module):
        def forward(self, images):
            assert isinstance(images, list)
            return torch.stack([image.sum() for image in images])

    class Pair(nn.Module):
        def forward(self, first, second):
            return first + second

    once = TimingOptions(warmup=1, repeats=1)
    timings = measure_modules(
        [(Pipeline(), [torch.randn(3, 8, 8), torch.randn(3, 8, 8)]), (Pair(), (torch.randn(1, 4), torch.randn(1, 4)))],
        "torch",
        1,
        once,
    )
    assert all(timing.median_ms > 0 for timing in timings)
