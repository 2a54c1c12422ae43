import random

import pytest
import torch

from nas_search.hw_models.flops import count_flops
from nas_search.hw_models.fvcore_count import fvcore_flops
from nas_search.spaces.elastic import ElasticBatchNorm2d
from nas_search.spaces.supernet import Supernet
from nas_search.tasks import get_space, space_names

TEST_SIZE = {"cifar": 32, "mobile": 64, "micro": 32}


def randomise_normalisation(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics and affine parameters, so that copying the
    wrong channels shows up in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                count = module.num_features
                module.running_mean.copy_(torch.randn(count, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(count, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(count, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(count, generator=generator) * 0.1)


@pytest.fixture(scope="module", params=space_names(task="classify"))
def supernet(request):
    torch.manual_seed(0)
    net = Supernet(get_space(request.param))
    randomise_normalisation(net)
    return net.eval()


def test_supernet_and_extracted_agree_and_costs_are_exact(supernet):
    space = supernet.space
    rng = random.Random(7)
    size = TEST_SIZE[space.name]
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    specs = [space.largest(), space.smallest()] + [space.sample(rng, bias=rng.random()) for _ in range(48)]
    ops_seen = set()
    for spec in specs:
        supernet.activate(spec)
        model = supernet.extract(spec)
        assert not any(isinstance(m, type(supernet)) for m in model.modules())
        with torch.no_grad():
            difference = (supernet(images) - model(images)).abs().max().item()
        assert difference <= 1e-4, (difference, str(spec))
        analytic = count_flops(spec, space, input_size=size)  # the counter is size-generic; a small size keeps fvcore fast
        assert analytic.params == sum(p.numel() for p in model.parameters()), str(spec)
        assert analytic.flops == fvcore_flops(model, size), str(spec)
        ops_seen.update(block.op for block in spec.blocks)
    assert ops_seen == {"mbconv", "dsc", "scc", "slim"}


def test_flops_at_deployment_size_equal_fvcore(supernet):
    space = supernet.space
    for spec in (space.largest(), space.sample(__import__("random").Random(11))):
        assert count_flops(spec, space).flops == fvcore_flops(supernet.extract(spec), space.input_size)


def test_extracted_model_is_physically_smaller(supernet):
    space = supernet.space
    model = supernet.extract(space.smallest())
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in supernet.parameters()) / 20
    state = model.state_dict()
    assert all(isinstance(value, torch.Tensor) for value in state.values())


def test_multi_scale_features(supernet):
    space = supernet.space
    size = 64
    spec = space.sample(random.Random(3))
    supernet.activate(spec)
    features = supernet.forward_features(torch.randn(1, 3, size, size))
    model = supernet.extract(spec)
    static_features = model.forward_features(torch.randn(1, 3, size, size))
    expected_strides = {"mobile": [8, 16, 32], "cifar": [2, 4, 8], "micro": [2, 4, 8]}[space.name]
    assert [size // f.shape[-1] for f in features] == expected_strides
    assert [f.shape[1] for f in static_features] == list(model.feature_channels)


def test_channel_sorting_preserves_full_network_and_orders_importance():
    torch.manual_seed(0)
    space = get_space("cifar")
    net = Supernet(space)
    randomise_normalisation(net, seed=3)
    net.eval()
    images = torch.randn(2, 3, 32, 32)
    largest = space.largest()
    net.activate(largest)
    before = net(images)
    sorted_groups = net.sort_channels()
    assert sorted_groups > 0
    net.activate(largest)
    assert (net(images) - before).abs().max().item() < 1e-4
    block = net.stages[1][0]["mbconv"]
    importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:] - 1e-6)


def test_training_step_updates_only_active_weights():
    torch.manual_seed(0)
    space = get_space("cifar")
    net = Supernet(space).train()
    spec = space.smallest()
    net.activate(spec)
    loss = net(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    used_op = spec.stages[0].blocks[0].op
    unused = [op for op in net.stages[0][0] if op != used_op][0]
    assert all(p.grad is None for p in net.stages[0][0][unused].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.stages[0][0][used_op].parameters())


def test_sliding_channel_blocks_are_pruned_depthwise_separable_blocks():
    import torch.nn.functional as F

    from nas_search.spaces.scc import conv as scc

    torch.manual_seed(0)
    space = get_space("micro")
    net = Supernet(space).train()
    dense, sliding = net.stages[1][0]["dsc"], net.stages[1][0]["scc"]  # 32 -> 64 channels at most
    assert sliding.depthwise is dense.depthwise and sliding.norm is dense.norm
    x = torch.randn(2, 32, 8, 8)
    for in_channels, out_channels, groups, overlap in ((32, 64, 4, 0.5), (16, 40, 8, 0.25), (32, 24, 2, 0.33)):
        mask = scc.dense_mask(in_channels, out_channels, groups, overlap)
        pruned = dense.pointwise.weight[:out_channels, :in_channels, 0, 0] * mask
        expected = F.conv2d(x[:, :in_channels], pruned[:, :, None, None])
        got = sliding.pointwise(x[:, :in_channels], out_channels, groups, overlap)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    parameters = {id(parameter) for parameter in net.parameters()}
    assert id(dense.pointwise.weight) in parameters and not hasattr(sliding.pointwise, "weight")
    # training an all-scc subnet updates the shared depthwise-separable weights
    spec = space.smallest()
    assert {block.op for stage in spec.stages for block in stage.blocks} == {"scc"}
    net.activate(spec)
    net(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    assert dense.pointwise.weight.grad is not None and dense.pointwise.weight.grad.abs().sum() > 0
    assert dense.depthwise.conv.weight.grad.abs().sum() > 0
    # the shared weights survive a state-dict round trip
    copy = Supernet(space)
    copy.load_state_dict(net.state_dict())
    assert copy.stages[1][0]["scc"].pointwise.dense_source is copy.stages[1][0]["dsc"].pointwise
    torch.testing.assert_close(copy.stages[1][0]["dsc"].pointwise.weight, dense.pointwise.weight)


def test_batch_norm_with_index_selection_updates_only_selected_statistics():
    norm = ElasticBatchNorm2d(8).train()
    index = torch.tensor([0, 1, 4, 5])
    norm(torch.randn(16, 4, 3, 3) + 5, index)
    assert torch.all(norm.running_mean[index] > 0.4)
    assert torch.all(norm.running_mean[torch.tensor([2, 3, 6, 7])] == 0)
