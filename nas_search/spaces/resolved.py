"""The resolved network: an architecture as concrete layer shapes, and the stage row.

Below the op table (:mod:`nas_search.spaces.ops`) and the space (:mod:`.space`), so that
both, and the modules of every op, can use these records without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas_search.spec import BLOCK_RULES, ArchSpec, BlockSpec
from nas_search.utils import round_channels

WIDTH_RATIOS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)


@dataclass(frozen=True)
class StageChoices:
    """One stage of a space: its fixed shape and the choices open to each of its blocks.

    Attributes:
        max_channels: output channels of every block at width ratio 1.
        stride: stride of the first block (the others use stride 1).
        depths: allowed active depths; the active blocks are the first ``depth`` ones.
        operations: allowed block ops (names in ``nas_search.spaces.ops.BLOCK_KINDS``; by
            default every op).
        kernels: allowed depthwise kernel sizes.
        expansions: allowed ``mbconv`` expansion ratios.
        widths: allowed output width ratios (per-layer pruning ratios).
        feature: whether the stage output is one of the backbone's multi-scale features.
    """

    max_channels: int
    stride: int
    depths: tuple[int, ...]
    operations: tuple[str, ...] = tuple(BLOCK_RULES)
    kernels: tuple[int, ...] = (3, 5, 7)
    expansions: tuple[float, ...] = (3.0, 4.0, 6.0)
    widths: tuple[float, ...] = WIDTH_RATIOS
    feature: bool = False

    @property
    def max_depth(self) -> int:
        """Number of block positions the supernet holds for this stage."""
        return max(self.depths)


@dataclass(frozen=True)
class ResolvedBlock:
    """A block with every channel count decided: what the supernet activates, what the
    extracted model is built from and what the cost model counts."""

    spec: BlockSpec
    in_channels: int
    out_channels: int
    stride: int
    hidden_channels: int
    squeeze_excite_channels: int
    residual: bool


@dataclass(frozen=True)
class ResolvedNetwork:
    """An architecture as concrete layer shapes."""

    spec: ArchSpec
    input_channels: int
    stem_channels: int
    stem_stride: int
    stages: tuple[tuple[ResolvedBlock, ...], ...]
    head_channels: int
    num_classes: int
    feature_stages: tuple[int, ...]

    @property
    def last_channels(self) -> int:
        """Channels entering the head."""
        return self.stages[-1][-1].out_channels


def scaled_channels(full: float, ratio: float, divisor: int) -> int:
    """Channels of a layer whose full width is ``full`` at width ``ratio``: rounded to a
    multiple of ``divisor`` but never above the supernet capacity (``full`` rounded to 8)."""
    capacity = round_channels(full, 8)
    ceiling = max(divisor, capacity // divisor * divisor)
    return min(round_channels(full * ratio, divisor), ceiling)
