"""The contract of a block op: :class:`BlockKind`, one per op, holding everything about it.

A block op (``mbconv``, ``dsc``, ``scc``, ``slim``) is one row of the op table
:data:`nas_search.spaces.ops.BLOCK_KINDS`; every part of nas-search that depends on the op
of a block reads that row instead of testing the op's name.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from nas_search.spaces.ops.costs import Cost, LayerCost, TensorProgram
from nas_search.spaces.resolved import ResolvedBlock, StageChoices
from nas_search.spec import BlockRules, BlockSpec

#: ``pick(options)``: the space's (possibly biased) choice among ordered options.
Pick = Callable[[Sequence[Any]], Any]


@dataclass(frozen=True)
class BlockChoice:
    """One searchable field an op adds to ``op``, ``kernel`` and ``width``.

    Attributes:
        field: the :class:`~nas_search.spec.BlockSpec` field the choice sets (also its
            name in ``SearchSpace.validate`` messages).
        parameter: suffix of its Optuna parameter, ``s{stage}_b{block}_{parameter}``.
        options: ``(space, stage choices) -> allowed values``, in the space's order.
        largest: the costliest of the options (``max`` or ``min``), for ``SearchSpace.largest``.
        biased: drawn with the space's bias toward small or large values in
            ``SearchSpace.sample`` (an ordered choice), else uniformly with ``rng.choice``.
        neighbour_moves: moved one option at a time by the FLOPs-band projection
            (``nas_search.spaces.projection``), like widths and kernels.
    """

    field: str
    parameter: str
    options: Callable[[Any, StageChoices], Sequence[Any]]
    largest: Callable[[Iterable[Any]], Any] = max
    biased: bool = False
    neighbour_moves: bool = False


@dataclass(frozen=True)
class ChannelOrder:
    """How the supernet's channel sorting permutes one op's elastic block.

    Each callable takes the op's own elastic block class (hence ``Any``).

    Attributes:
        output_norm: the batch norm producing the block's output channels (their importance).
        permute_output: reorder the block's output channels by ``order``.
        permute_input: reorder the block's input channels by ``order``.
        sort_hidden: sort the block's own hidden channels by importance, or ``None``.
    """

    output_norm: Callable[[Any], nn.BatchNorm2d]
    permute_output: Callable[[Any, torch.Tensor], None]
    permute_input: Callable[[Any, torch.Tensor], None]
    sort_hidden: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class BlockKind:
    """Everything nas-search knows about one block op.

    Contract (``tests/test_block_kinds.py`` checks it for every row of ``BLOCK_KINDS``):

    * ``elastic_block(max_in, max_out, stride, max_kernel, max_expansion)`` is an
      ``nn.Module`` whose ``forward(x, resolved_block)`` runs the active choice and whose
      ``copy_into(static_module, resolved_block)`` copies the active weights into
      ``static_block(resolved_block)``; the two then compute the same function.
    * ``static_block(resolved_block)`` is the standalone block: what an extracted network
      is made of and what the latency part of the block times.
    * ``cost(block, size)`` returns the block's FLOPs and parameters at input ``size`` and
      its output size, exactly what fvcore counts on ``static_block`` in eval mode.
    * ``layers(block, stage, size)`` lists the kernels a runtime launches for the block
      (batch norm folded, activations fused) and its output size; ``program(program,
      block, source, size, prefix)`` appends its fused layers to a tensor program, in the
      order ``static_block`` runs them, and returns the output tensor and size.
    * ``hidden_channels(spec, in_channels, out_channels, divisor)`` is the block's hidden
      width (what ``ResolvedBlock.hidden_channels`` holds).
    * ``choices`` are the op's extra searchable fields; they must be the ``fields`` of its
      ``rules`` (the spec-level row, :class:`nas_search.spec.BlockRules`).

    Attributes:
        rules: the op's spec-level row (name, description, own ``BlockSpec`` fields).
        cost_rank: typical cost order among ops at equal width (cheapest first), the key
            biased sampling orders ops by.
        hidden_channels: see the contract.
        elastic_block: see the contract.
        static_block: see the contract.
        cost: see the contract.
        layers: see the contract.
        program: see the contract.
        choices: the op's extra searchable fields, in sampling and suggestion order.
        identity_residual: whether the block adds an identity residual where shapes allow
            (the slim module carries its own projected skip instead).
        shares_weights_with: the op whose elastic block at the same supernet position this
            op's block is built on (``share_weights_with`` is called), or ``None``.
        channel_order: how channel sorting permutes the block; ``None`` leaves every
            stage holding the op unsorted (its function depends on channel positions).
        check_channels: ``(spec, in_channels) -> message`` for an input width the op
            cannot take, or ``None`` when it fits; ``None`` when any width fits.
    """

    rules: BlockRules
    cost_rank: int
    hidden_channels: Callable[[BlockSpec, int, int, int], int]
    elastic_block: Callable[[int, int, int, int, float], nn.Module]
    static_block: Callable[[ResolvedBlock], nn.Module]
    cost: Callable[[ResolvedBlock, int], tuple[Cost, int]]
    layers: Callable[[ResolvedBlock, int, int], tuple[list[LayerCost], int]]
    program: Callable[[TensorProgram, ResolvedBlock, str, int, str], tuple[str, int]]
    choices: tuple[BlockChoice, ...] = ()
    identity_residual: bool = True
    shares_weights_with: str | None = None
    channel_order: ChannelOrder | None = None
    check_channels: Callable[[BlockSpec, int], str | None] | None = None

    @property
    def name(self) -> str:
        """The op's name (``rules.name``)."""
        return self.rules.name

    def variants(self, space: Any, stage: StageChoices) -> list[dict[str, Any]]:
        """Every combination of the op's extra choices allowed in ``stage`` of ``space``."""
        options = [choice.options(space, stage) for choice in self.choices]
        fields = [choice.field for choice in self.choices]
        return [dict(zip(fields, values)) for values in itertools.product(*options)]

    def largest_choices(self, space: Any, stage: StageChoices) -> dict[str, Any]:
        """The costliest value of each extra choice."""
        return {choice.field: choice.largest(choice.options(space, stage)) for choice in self.choices}

    def sample_choices(self, pick: Pick, rng: random.Random, space: Any, stage: StageChoices) -> dict[str, Any]:
        """Draw the extra choices: biased ones with ``pick``, the others uniformly."""
        drawn = {}
        for choice in self.choices:
            options = choice.options(space, stage)
            drawn[choice.field] = pick(options) if choice.biased else rng.choice(options)
        return drawn

    def suggest_choices(self, trial: Any, prefix: str, space: Any, stage: StageChoices) -> dict[str, Any]:
        """Suggest the extra choices through ``trial.suggest_categorical`` (Optuna's API)."""
        return {
            choice.field: trial.suggest_categorical(f"{prefix}_{choice.parameter}", list(choice.options(space, stage)))
            for choice in self.choices
        }

    def parameters(self, block: BlockSpec, prefix: str) -> dict[str, Any]:
        """The trial parameters of the extra choices of ``block`` (inverse of :meth:`suggest_choices`)."""
        return {f"{prefix}_{choice.parameter}": getattr(block, choice.field) for choice in self.choices}

    def choice_checks(self, block: BlockSpec, space: Any, stage: StageChoices) -> list[tuple[str, Any, Sequence[Any]]]:
        """``(field, value, allowed)`` of each extra choice of ``block``, for validation."""
        return [(choice.field, getattr(block, choice.field), choice.options(space, stage)) for choice in self.choices]


# --------------------------------------------------------------------------------------
# Helpers for ChannelOrder implementations


def permute_rows(tensor: torch.Tensor, order: torch.Tensor, dim: int = 0) -> None:
    """Reorder ``tensor`` in place along ``dim``."""
    tensor.copy_(tensor.index_select(dim, order))


def permute_norm(norm: nn.Module, order: torch.Tensor) -> None:
    """Reorder every per-channel tensor of a batch norm."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        permute_rows(getattr(norm, name), order)


def permute_conv_input(conv: nn.Module, order: torch.Tensor) -> None:
    """Reorder the input channels of a dense convolution's weight."""
    permute_rows(cast(torch.Tensor, conv.weight), order, dim=1)


__all__ = ["BlockChoice", "BlockKind", "ChannelOrder", "Pick", "permute_conv_input", "permute_norm", "permute_rows"]
