"""The hand-designed CIFAR baselines of benchmarks/classification.py (no training)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.lib.hand_designs import mobilenetv2_at_budget, mobilenetv2_cifar, mobilenetv2_flops, parameter_count, resnet20
from nas_search.hw_models.fvcore_count import fvcore_flops


def test_resnet20_has_the_papers_size():
    model = resnet20()
    assert 0.26e6 <= parameter_count(model) <= 0.28e6  # 0.27M in He et al. (2016); option B adds 2,560 weights
    assert 40e6 <= fvcore_flops(model, 32) <= 42e6


def test_resnet20_shapes_and_shortcuts():
    model = resnet20(num_classes=7).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    projections = [block for block in model.stages if not isinstance(block.shortcut, torch.nn.Identity)]
    assert len(projections) == 2  # the first block of stages 2 and 3: 1x1 conv + BN, stride 2
    for block in projections:
        conv, norm = block.shortcut
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and isinstance(norm, torch.nn.BatchNorm2d)


def test_mobilenetv2_keeps_32_px_through_the_stem():
    model = mobilenetv2_cifar(width_mult=0.5).eval()
    sizes = []
    hooks = [layer.register_forward_hook(lambda _, __, out: sizes.append(tuple(out.shape[-2:]))) for layer in model.features]
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert logits.shape == (1, 10)
    assert sizes[0] == (32, 32)  # after the stem
    assert sizes[2] == (32, 32)  # the first 24-channel block keeps the resolution
    assert sizes[-1] == (4, 4)  # the final feature map
    assert model.features[-1][0].out_channels == 1280


def test_mobilenetv2_flops_grow_with_width():
    assert mobilenetv2_flops(0.5) < mobilenetv2_flops(0.75) < mobilenetv2_flops(1.0)


def test_mobilenetv2_at_budget_lands_just_under_it():
    budget = fvcore_flops(resnet20(), 32)
    chosen = mobilenetv2_at_budget(budget)
    assert 0.9 * budget <= chosen.flops <= budget
    assert chosen.flops == fvcore_flops(chosen.build(), 32)


def test_mobilenetv2_at_budget_refuses_a_budget_below_its_smallest_width():
    with pytest.raises(ValueError, match="over the budget"):
        mobilenetv2_at_budget(1_000_000)
