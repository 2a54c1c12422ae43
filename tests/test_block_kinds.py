"""The op table's contract, checked for every row of ``BLOCK_KINDS`` and for a toy fifth op.

Each op's ``BlockKind`` must give a supernet block whose extracted copy computes the same
function, FLOPs equal to fvcore's, a tensor program whose peak equals a measured one, a
layer listing, a standalone block (the latency part of the block) and Optuna parameters
that round-trip. The toy op at the end is defined in one place (:data:`TOY`) and runs
through all of it: a new op costs one module and one row.
"""

from __future__ import annotations

import random

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_search.errors import UserError
from nas_search.hw_models.analytic import network_layers
from nas_search.hw_models.flops import count_flops
from nas_search.hw_models.fvcore_count import fvcore_flops
from nas_search.hw_models.memory import estimate_memory
from nas_search.search.parameters import spec_to_params, suggest_spec
from nas_search.spaces.elastic import ElasticBatchNorm2d
from nas_search.spaces.ops import BLOCK_KINDS, BlockKind, ChannelOrder, block_kind, extra_block_kind
from nas_search.spaces.ops.base import permute_conv_input, permute_norm, permute_rows
from nas_search.spaces.ops.costs import Cost, LayerCost, TensorProgram, append_convolution, conv_norm, output_size
from nas_search.spaces.resolved import ResolvedBlock
from nas_search.spaces.scc.conv import SlidingChannelConv2d
from nas_search.spaces.space import SearchSpace, StageChoices
from nas_search.spaces.static import conv_norm_activation
from nas_search.spaces.supernet import Supernet
from nas_search.spec import BLOCK_OPERATIONS, BLOCK_RULES, ArchSpec, BlockRules, BlockSpec

INPUT_SIZE = 32


def tiny_space(operations: tuple[str, ...]) -> SearchSpace:
    """A two-stage 32 px classifier space allowing ``operations`` everywhere."""
    stage = dict(operations=operations, kernels=(3, 5), expansions=(2.0, 3.0), widths=(0.5, 0.75, 1.0))
    return SearchSpace(
        name="tiny",
        task="classify",
        description="contract-test space",
        input_size=INPUT_SIZE,
        train_input_size=INPUT_SIZE,
        stem_channels=16,
        stem_stride=2,
        head_channels=64,
        num_classes=5,
        stages=(
            StageChoices(max_channels=32, stride=1, depths=(1, 2), **stage),
            StageChoices(max_channels=48, stride=2, depths=(1, 2), **stage),
        ),
    )


def specs_of(space: SearchSpace, op: str, count: int, seed: int = 0) -> list[ArchSpec]:
    """Random specs of ``space`` with ``op`` in every block."""
    rng = random.Random(seed)
    positions = {(stage, block): op for stage, choices in enumerate(space.stages) for block in range(choices.max_depth)}
    return [space.sample(rng, bias=rng.random(), operations=positions) for _ in range(count)]


# ------------------------------------------------------------------------ memory measurement
class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return isinstance(module, SlidingChannelConv2d) or super().is_leaf_module(module, name)


class _LiveBytes(torch.fx.Interpreter):
    """Runs a graph node by node, freeing values after their last use; records the peak
    of the distinct live storages."""

    peak = 0

    def run_node(self, node):
        result = super().run_node(node)
        storages = {}
        for value in [*self.env.values(), result]:
            if isinstance(value, torch.Tensor):
                storages[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
        self.peak = max(self.peak, sum(storages.values()))
        return result


def measured_peak_bytes(model: nn.Module, input_size: int) -> int:
    """Peak live activation bytes of ``model`` with batch norm folded away (identity)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.Identity())
    interpreter = _LiveBytes(torch.fx.GraphModule(model, _LeafTracer().trace(model)))
    with torch.inference_mode():
        interpreter.run(torch.randn(1, 3, input_size, input_size))
    return interpreter.peak


# ------------------------------------------------------------------------ the contract
def check_contract(space: SearchSpace, op: str, count: int = 3) -> None:
    """Every promise of ``BLOCK_KINDS[op]`` on ``count`` random specs of ``space``."""
    torch.manual_seed(0)
    supernet = Supernet(space).eval()
    images = torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE)
    for spec in specs_of(space, op, count):
        network = supernet.activate(spec)
        model = supernet.extract(spec).eval()
        with torch.no_grad():
            assert torch.allclose(supernet(images), model(images), atol=1e-5), str(spec)
        assert count_flops(spec, space).flops == fvcore_flops(model, INPUT_SIZE), str(spec)
        assert estimate_memory(network, INPUT_SIZE).peak_bytes == measured_peak_bytes(model, INPUT_SIZE), str(spec)
        assert network_layers(network, INPUT_SIZE)
        check_block_parts(network.stages, op)
        fixed = optuna.trial.FixedTrial(spec_to_params(spec))
        assert suggest_spec(fixed, space) == spec


def check_block_parts(stages, op: str) -> None:
    """A block's latency part is its standalone block at the part's shapes: it builds and
    runs, and its output size is the one the cost, layer listing and program agree on."""
    kind = block_kind(op)
    size = INPUT_SIZE // 2
    for stage in stages:
        for block in stage:
            part = kind.static_block(block).eval()
            with torch.no_grad():
                out = part(torch.randn(1, block.in_channels, size, size))
            _, cost_size = kind.cost(block, size)
            _, layers_size = kind.layers(block, 1, size)
            program = TensorProgram()
            _, program_size = kind.program(
                program, block, program.add_input("x", block.in_channels * size * size), size, "block"
            )
            assert out.shape == (1, block.out_channels, cost_size, cost_size)
            assert cost_size == layers_size == program_size
            size = cost_size


def test_op_table_matches_the_spec_rules() -> None:
    assert list(BLOCK_KINDS) == list(BLOCK_RULES) == list(BLOCK_OPERATIONS)
    for name, kind in BLOCK_KINDS.items():
        assert kind.name == name and kind.rules is BLOCK_RULES[name]
        assert sorted(choice.field for choice in kind.choices) == sorted(field.name for field in kind.rules.fields)
        assert kind.shares_weights_with is None or kind.shares_weights_with in BLOCK_KINDS
    with pytest.raises(UserError, match="block op 'nope' is unknown; allowed: mbconv, dsc, scc, slim"):
        block_kind("nope")


@pytest.mark.parametrize("op", list(BLOCK_KINDS))
def test_block_kind_contract(op: str) -> None:
    check_contract(tiny_space(tuple(BLOCK_KINDS)), op)


@pytest.mark.parametrize("op", list(BLOCK_KINDS))
def test_channel_sorting_keeps_the_full_network(op: str) -> None:
    torch.manual_seed(1)
    sortable = block_kind(op).channel_order is not None
    space = tiny_space((op,) if sortable else tuple(BLOCK_KINDS))  # an unsortable op leaves its stages alone
    supernet = Supernet(space).eval()
    for module in supernet.modules():  # non-trivial statistics, so a wrong permutation shows
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.weight.data.uniform_(0.5, 1.5)
    images = torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE)
    supernet.activate(space.largest(op))
    with torch.no_grad():
        before = supernet(images)
        sorted_groups = supernet.sort_channels()
        assert torch.allclose(before, supernet(images), atol=1e-4)
    assert sorted_groups > 0 or not sortable


# ------------------------------------------------------------------------ a toy fifth op
class ElasticDenseBlock(nn.Module):
    """Elastic dense kxk conv (kernel cropped from the largest) -> BN -> ReLU."""

    def __init__(self, max_in: int, max_out: int, stride: int, max_kernel: int, max_expansion: float) -> None:
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_out, max_in, max_kernel, max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.norm = ElasticBatchNorm2d(max_out)

    def active_weight(self, block: ResolvedBlock) -> torch.Tensor:
        start = (self.weight.size(-1) - block.spec.kernel) // 2
        end = start + block.spec.kernel
        return self.weight[: block.out_channels, : block.in_channels, start:end, start:end]

    def forward(self, x: torch.Tensor, block: ResolvedBlock) -> torch.Tensor:
        out = F.conv2d(x, self.active_weight(block), None, self.stride, block.spec.kernel // 2)
        out = F.relu(self.norm(out, block.out_channels))
        return out + x if block.residual else out

    @torch.no_grad()
    def copy_into(self, target: nn.Module, block: ResolvedBlock) -> None:
        target.layers[0].weight.copy_(self.active_weight(block))
        self.norm.copy_into(target.layers[1], block.out_channels)


class DenseBlock(nn.Module):
    """Standalone dense kxk conv -> BN -> ReLU, with an identity residual where allowed."""

    def __init__(self, block: ResolvedBlock) -> None:
        super().__init__()
        self.layers = conv_norm_activation(block.in_channels, block.out_channels, block.spec.kernel, block.stride)
        self.residual = block.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return out + x if self.residual else out


def dense_cost(block: ResolvedBlock, size: int) -> tuple[Cost, int]:
    out_size = output_size(size, block.spec.kernel, block.stride)
    return conv_norm(block.in_channels, block.out_channels, block.spec.kernel, out_size), out_size


def dense_layers(block: ResolvedBlock, stage: int, size: int) -> tuple[list[LayerCost], int]:
    layers: list[LayerCost] = []
    out_size = append_convolution(layers, stage, block.in_channels, block.out_channels, block.spec.kernel, size, block.stride)
    return layers, out_size


def dense_program(program: TensorProgram, block: ResolvedBlock, source: str, size: int, prefix: str) -> tuple[str, int]:
    out_size = output_size(size, block.spec.kernel, block.stride)
    current = program.add(f"{prefix}.conv", (source,), block.out_channels * out_size * out_size)
    if block.residual:
        current = program.add(f"{prefix}.add", (current, source), block.out_channels * out_size * out_size)
    return current, out_size


def _permute_output(block: ElasticDenseBlock, order: torch.Tensor) -> None:
    permute_rows(block.weight, order)
    permute_norm(block.norm, order)


#: The toy op, in one place: a dense kxk convolution block.
TOY = BlockKind(
    rules=BlockRules("dense", "toy op: dense kxk conv -> BN -> ReLU"),
    cost_rank=4,
    hidden_channels=lambda spec, in_channels, out_channels, divisor: in_channels,
    elastic_block=ElasticDenseBlock,
    static_block=DenseBlock,
    cost=dense_cost,
    layers=dense_layers,
    program=dense_program,
    channel_order=ChannelOrder(
        lambda block: block.norm, _permute_output, lambda block, order: permute_conv_input(block, order)
    ),
)


def test_a_fifth_op_runs_through_every_model() -> None:
    with pytest.raises(UserError, match="allowed: mbconv, dsc, scc, slim"):
        BlockSpec("dense")
    with extra_block_kind(TOY):
        assert str(BlockSpec("dense", kernel=5, width=0.5)) == "dense_k5_w0.5"
        space = tiny_space(("mbconv", "dense"))
        check_contract(space, "dense", count=4)
        mixed = space.sample(random.Random(3), operations={(0, 0): "dense", (1, 0): "mbconv"})
        supernet = Supernet(space).eval()
        supernet.activate(mixed)
        images = torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE)
        with torch.no_grad():
            assert torch.allclose(supernet(images), supernet.extract(mixed).eval()(images), atol=1e-5)
        assert supernet.sort_channels() > 0
    assert "dense" not in BLOCK_KINDS and "dense" not in BLOCK_RULES
    with pytest.raises(UserError):
        BlockSpec("dense")
