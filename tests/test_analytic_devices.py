"""Named analytic device models: the layer listing agrees with the exact FLOPs count, the
shipped constants are what the published measurements give, and the devices plug into
``cost`` and ``run`` like any other."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from nas_search.errors import UserError
from nas_search.hw_models.analytic import (
    CONSTANTS_PATH,
    AnalyticLatencyModel,
    fit_coefficients,
    fit_published_devices,
    layer_features,
    load_constants,
    network_layers,
)
from nas_search.hw_models.devices import device_names, latency_model_for
from nas_search.hw_models.flops import count_network
from nas_search.spaces.static import build_static_model
from nas_search.tasks import get_space

from support import shared_data_path


@pytest.mark.parametrize("space_name", ["mobile", "cifar", "micro"])
def test_layer_macs_plus_norm_and_pool_equal_the_exact_count(space_name: str) -> None:
    """Multiply-adds of the layer listing + 2 per BN output element + 1 per pooled input
    element == the analytic count (which equals fvcore, see test_supernet), measured with
    hooks on the extracted model."""
    space = get_space(space_name)
    rng = random.Random(11)
    for _ in range(4):
        network = space.resolve(space.sample(rng))
        size = space.input_size
        layers = network_layers(network, size)
        macs = sum(layer.macs for layer in layers)
        model = build_static_model(network).eval()
        counted: list[int] = []

        def record(module, inputs, output):
            counted.append(2 * output.numel() if isinstance(module, torch.nn.BatchNorm2d) else inputs[0].numel())

        hooks = [
            module.register_forward_hook(record)
            for module in model.modules()
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.AdaptiveAvgPool2d))
        ]
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
        for hook in hooks:
            hook.remove()
        assert macs + sum(counted) == count_network(network, size).flops
        convolutions = sum(isinstance(module, torch.nn.Conv2d) for module in model.modules())
        linears = sum(isinstance(module, torch.nn.Linear) for module in model.modules())
        listed = sum(layer.kind in ("conv", "pointwise", "grouped_pointwise", "depthwise", "linear") for layer in layers)
        scc = sum(block.spec.op == "scc" for stage in network.stages for block in stage)
        assert listed == convolutions + linears + scc  # SCC is not an nn.Conv2d but one kernel


def test_shipped_constants_are_reproducible_from_the_published_tables() -> None:
    data_dir = shared_data_path("latency")
    fitted = fit_published_devices(data_dir)
    shipped = json.loads(CONSTANTS_PATH.read_text())
    assert [device["name"] for device in fitted["devices"]] == [device["name"] for device in shipped["devices"]]
    for new, old in zip(fitted["devices"], shipped["devices"]):
        for name, value in old["coefficients"].items():
            assert new["coefficients"][name] == pytest.approx(value, rel=1e-6, abs=1e-15)
        assert new["errors"]["new_space"]["mean_abs_error"] == pytest.approx(
            old["errors"]["new_space"]["mean_abs_error"], rel=1e-6
        )
        # the stated in-space fit is a real fit: most held-out predictions within 20%
        for figures in new["errors"]["in_space"].values():
            assert figures["spearman"] > 0.5
            assert figures["count"] > 900


def test_fit_recovers_known_roofline_constants() -> None:
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 1e6, size=(400, 6))
    truth = np.array([2e-6, 1e-6, 0.0, 5e-6, 3e-7, 0.05])
    latency = features @ truth + 0.3
    coefficients, constant = fit_coefficients(features, latency)
    assert coefficients == pytest.approx(truth, rel=1e-5, abs=1e-12)
    assert constant == pytest.approx(0.3, rel=1e-5)


def test_named_devices_are_registered_and_predict_monotonically() -> None:
    names = set(device_names())
    assert {"pixel2", "samsung-a50", "samsung-s7", "cpu-onnxruntime", "cpu-torch"} <= names
    space = get_space("mobile")
    for name in load_constants():
        model = latency_model_for(space, name)
        assert isinstance(model, AnalyticLatencyModel)
        small, large = model(space.smallest()), model(space.largest())
        assert 0 < small < large
        # more work never costs less: doubling every feature cannot reduce the prediction
        layers = network_layers(space.resolve(space.largest()), space.input_size)
        assert model.device_model.predict_layers(list(layers) * 2) >= model.device_model.predict_layers(layers)
        assert layer_features(layers)[-1] == len(layers)


def test_analytic_device_refuses_a_runtime() -> None:
    with pytest.raises(UserError, match="has no runtime 'torch'"):
        latency_model_for(get_space("mobile"), "pixel2", runtime="torch")
