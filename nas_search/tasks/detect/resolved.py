"""A detector with every channel count decided: what the detection supernet activates, what
the standalone detector is built from and what the cost models count."""

from __future__ import annotations

from dataclasses import dataclass

from nas_search.spaces.space import ResolvedNetwork
from nas_search.spec import ArchSpec


@dataclass(frozen=True)
class ResolvedNeck:
    """Concrete shape of the neck.

    Attributes:
        in_channels: channels of each backbone feature (shallow to deep).
        channels: neck width (every level).
        depth: extra separable blocks per backbone level.
        extra_levels: coarser levels made from the deepest one by stride-2 separable blocks.
    """

    in_channels: tuple[int, ...]
    channels: int
    depth: int
    extra_levels: int = 0

    @property
    def levels(self) -> int:
        """Number of pyramid levels (backbone levels plus extra levels)."""
        return len(self.in_channels) + self.extra_levels


@dataclass(frozen=True)
class ResolvedHead:
    """Concrete shape of the FCOS head.

    Attributes:
        in_channels: channels of each neck level.
        channels: tower width.
        depth: separable layers per tower.
        num_classes: classification outputs, background included (torchvision's
            ``num_classes``, that is C + 1).
        levels: number of pyramid levels (one BN per level in each tower layer).
    """

    in_channels: int
    channels: int
    depth: int
    num_classes: int
    levels: int


@dataclass(frozen=True)
class ResolvedDetector:
    """A detector architecture as concrete layer shapes.

    Attributes:
        spec: the architecture.
        backbone: the backbone's resolved stem and stages (its classifier head fields are
            not used by a detector).
        neck / head: the neck and head shapes.
        num_classes: object classes C, background excluded.
        strides: the pyramid levels' strides, shallow to deep (also the anchor sizes).
    """

    spec: ArchSpec
    backbone: ResolvedNetwork
    neck: ResolvedNeck
    head: ResolvedHead
    num_classes: int
    strides: tuple[int, ...]

    @property
    def used_stages(self) -> int:
        """Backbone stages the detector runs (up to the deepest feature stage)."""
        return max(self.backbone.feature_stages) + 1


__all__ = ["ResolvedDetector", "ResolvedHead", "ResolvedNeck"]
