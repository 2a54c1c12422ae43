"""Device costs of detectors (``nas_search.tasks.detect.hardware``): the peak activation memory
equals a node-by-node measurement of the real network, and the analytic latency devices'
kernel listing matches the network's convolutions (fvcore's count and the launches)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis
from test_latency_local import _LeafTracer, _LiveBytes
from torch import nn

from nas_search.errors import UserError
from nas_search.hw_models.devices import latency_model_for
from nas_search.hw_models.memory import MemoryModel, peak_of_program
from nas_search.spaces.scc.conv import SlidingChannelConv2d
from nas_search.tasks import get_space
from nas_search.tasks.detect.build import build_detector
from nas_search.tasks.detect.hardware import detector_layers, detector_program, neck_and_head_program
from nas_search.tasks.detect.static import HEAD_OUTPUTS

CONVOLUTION_KINDS = ("conv", "pointwise", "grouped_pointwise", "depthwise")


class _NeckAndHead(nn.Module):
    """The neck and head of a detector core, reading the three backbone features."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.neck, self.head = core.backbone.neck, core.head

    def forward(self, feature0, feature1, feature2):
        outputs = self.head(self.neck([feature0, feature1, feature2]))
        return tuple(outputs[name] for name in HEAD_OUTPUTS)


def _measured_peak(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Peak live bytes of ``module`` run node by node, batch norm folded away (identity)
    and each ReLU fused into the layer before it (in place when that layer's output has
    no other reader), as a deployment runtime runs it."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.Identity())
    graph = _LeafTracer().trace(module)
    for node in graph.nodes:
        if node.op == "call_function" and node.target is F.relu and len(node.args[0].users) == 1:
            node.kwargs = {**node.kwargs, "inplace": True}
    interpreter = _LiveBytes(torch.fx.GraphModule(module, graph))
    with torch.inference_mode():
        interpreter.run(*inputs)
    return interpreter.peak


def _specs(count: int, seed: int) -> list:
    space = get_space("detect")
    rng = random.Random(seed)
    return [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(count))]


@pytest.mark.parametrize("num_classes", [3, 40, 80, 300])
def test_peak_memory_equals_the_measured_peak(num_classes: int) -> None:
    """Whole network (the peak usually lies in the backbone) and the neck and head alone
    (with 300 classes the peak moves to the final concatenation of the class maps)."""
    space = get_space("detect")
    size = 96
    peaks_in = set()
    for spec in _specs(3, seed=num_classes):
        model = build_detector(spec, num_classes=num_classes, image_size=size).eval()
        detector = space.resolve(spec, num_classes=num_classes)
        image = torch.randn(1, 3, size, size)
        with torch.inference_mode():
            features = model.backbone.body(image)
        estimate = peak_of_program(neck_and_head_program(detector, size))
        assert estimate.peak_bytes == _measured_peak(_NeckAndHead(model.core()), *features), str(spec)
        peaks_in.add(estimate.peak_layer.split(".")[0] + "." + estimate.peak_layer.split(".")[1][:5])
        whole = build_detector(spec, num_classes=num_classes, image_size=size).eval().core()
        program = detector_program(detector, size)
        assert peak_of_program(program).peak_bytes == _measured_peak(whole, image), str(spec)
        assert MemoryModel(space, size, num_classes)(spec) == peak_of_program(program).peak_bytes
    if num_classes == 300:
        assert "head.cls_l" in peaks_in  # the tail of the program was the peak at least once
    elif num_classes == 3:
        assert any(name.startswith(("neck", "head.level")) for name in peaks_in)


def test_kernel_listing_matches_the_network() -> None:
    space = get_space("detect")
    size = 128
    for spec in _specs(2, seed=7):
        core = build_detector(spec, num_classes=3, image_size=size).eval().core()
        layers = detector_layers(space.resolve(spec, num_classes=3), size)
        analysis = FlopCountAnalysis(core, torch.randn(1, 3, size, size))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        # squeeze-excite 1x1 convs are listed as linear layers (one vector each)
        listed = sum(layer.macs for layer in layers if layer.kind in (*CONVOLUTION_KINDS, "linear"))
        assert listed == analysis.by_operator()["conv"], str(spec)
        launches = []
        hooks = [
            module.register_forward_hook(lambda *_: launches.append(1))
            for module in core.modules()
            if isinstance(module, (nn.Conv2d, SlidingChannelConv2d))
        ]
        with torch.inference_mode():
            core(torch.randn(1, 3, size, size))
        for hook in hooks:
            hook.remove()
        assert len(launches) == sum(layer.kind in (*CONVOLUTION_KINDS, "linear") for layer in layers)
        # and the element-wise kernels: per level clamp and exp of the boxes, the neck's adds
        # (top-down and residual), the upsamplings, and the copies that flatten and join the outputs
        detector = space.resolve(spec, num_classes=3)
        neck, levels = detector.neck, len(detector.strides)
        backbone_levels = len(neck.in_channels)
        copies = 2 * levels + 3  # class (3 + 1 channels) and box maps flattened per level, 3 joins
        expected = 2 * levels + 2 * (backbone_levels - 1) + neck.depth * backbone_levels + copies
        neck_stage = len(detector.backbone.stages) + 1
        assert sum(layer.kind in ("multiply", "add", "shuffle") for layer in layers if layer.stage >= neck_stage) == expected


def test_analytic_device_latency_of_detectors() -> None:
    space = get_space("detect")
    model = latency_model_for(space, "pixel2", input_size=416)
    smallest, largest = model(space.smallest()), model(space.largest())
    assert 0 < smallest < largest
    # more classes, more work in the class predictor
    assert model.for_classes(80)(space.smallest()) > model.for_classes(1)(space.smallest())
    # at a larger input the same detector takes longer
    assert latency_model_for(space, "pixel2", input_size=512)(space.smallest()) > smallest


def test_table_devices_need_a_profiled_detection_table(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # where `profile` writes and `run` looks for tables
    space = get_space("detect")
    with pytest.raises(UserError, match="no latency table for space 'detect'") as error:
        latency_model_for(space, "cpu", input_size=416)
    assert "nas-search profile --space detect --device cpu" in str(error.value) and "\n" not in str(error.value)


def test_cost_command_prints_a_detectors_device_costs(tmp_path, capsys, monkeypatch) -> None:
    import json

    from nas_search.cli.main import main

    space = get_space("detect")
    spec = _specs(1, seed=3)[-1]
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(spec.to_dict()))
    assert main(["cost", str(path), "--device", "pixel2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    device = report["device"]
    assert device["latency_ms"] == pytest.approx(latency_model_for(space, "pixel2", input_size=416)(spec))
    assert device["peak_memory_bytes"] == MemoryModel(space, 416)(spec)
    assert main(["cost", str(path), "--device", "pixel2", "--num-classes", "80", "--json"]) == 0
    eighty = json.loads(capsys.readouterr().out)["device"]
    assert eighty["latency_ms"] == pytest.approx(latency_model_for(space, "pixel2", input_size=416).for_classes(80)(spec))
    assert eighty["peak_memory_bytes"] == MemoryModel(space, 416, 80)(spec)
    monkeypatch.chdir(tmp_path)
    assert main(["cost", str(path), "--device", "cpu"]) == 2
    assert "no latency table for space 'detect'" in capsys.readouterr().err
