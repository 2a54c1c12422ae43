"""The detection search space: a searchable backbone, neck and head.

A :class:`DetectionSpace` is a :class:`~nas_search.spaces.space.SearchSpace` whose stage
table (the backbone choices) is copied from a classification space, plus a
:class:`DetectorChoices` table for the neck and head. Its specs carry a
:class:`~nas_search.spec.DetectorSpec`. :meth:`DetectionSpace.resolve` turns a spec into
a :class:`ResolvedDetector` (concrete channel counts of backbone, neck and head), which
the elastic supernet activates, the static detector is built from and the analytic cost
model counts, so the three cannot disagree about shapes.

The detector (see ``nas_search.tasks.detect.static``):

* backbone: stem and stages of the classification space (its classifier head and last
  1x1 conv are not part of a detector); features at strides 8, 16 and 32;
* neck (FPN-lite): a 1x1 lateral conv + BN from each feature to the neck width, top-down
  nearest upsampling and addition, then ``neck_depth`` residual depthwise-separable blocks
  per level; then ``extra_levels`` (2) coarser levels, each a stride-2 depthwise-separable
  block on the previous level (strides 64 and 128, as FCOS's P6/P7);
* head (FCOS): a classification tower and a regression tower of ``head_depth``
  depthwise-separable layers at the head width, shared across levels (with one BN per
  level), then 1x1 ``cls_logits`` (C + 1 outputs, torchvision's background-included
  count), ``bbox_regression`` (4) and ``bbox_ctrness`` (1) convolutions.

Example::

    space = get_space("detect")
    spec = space.sample(random.Random(0))
    detector = space.resolve(spec, num_classes=3)
    detector.neck.channels, detector.head.channels, detector.head.depth
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from nas_search.errors import UserError
from nas_search.spaces.builtin import BACKBONE_SPACES
from nas_search.spaces.registry import SpaceRegistry
from nas_search.spaces.space import WIDTH_RATIOS, ResolvedNetwork, SearchSpace, scaled_channels
from nas_search.spec import DETECTOR_PARAMETERS, ArchSpec, BlockSpec, DetectorSpec, StageSpec
from nas_search.tasks.detect.costs import DETECTOR_COSTS
from nas_search.tasks.detect.resolved import ResolvedDetector, ResolvedHead, ResolvedNeck


@dataclass(frozen=True)
class DetectorChoices:
    """The neck and head choices of a detection space.

    Attributes:
        neck_channels: neck channels at neck width 1.
        neck_widths: allowed neck width ratios.
        neck_depths: allowed numbers of extra separable blocks per level.
        head_channels: head tower channels at head width 1.
        head_widths: allowed head width ratios.
        head_depths: allowed numbers of separable layers per tower.
        extra_levels: coarser pyramid levels appended after the deepest backbone feature,
            each a stride-2 depthwise-separable block at the neck width (FCOS's P6/P7,
            SSDlite's extra layers). Not searched: large objects need them whatever the
            backbone, and they cost little (under 1% of a detector's FLOPs).
    """

    neck_channels: int = 128
    neck_widths: tuple[float, ...] = WIDTH_RATIOS
    neck_depths: tuple[int, ...] = (0, 1, 2)
    head_channels: int = 128
    head_widths: tuple[float, ...] = WIDTH_RATIOS
    head_depths: tuple[int, ...] = (1, 2, 3, 4)
    extra_levels: int = 2

    def options(self) -> dict[str, tuple]:
        """The choice list of every :class:`DetectorSpec` field."""
        return {
            "neck_width": self.neck_widths,
            "neck_depth": self.neck_depths,
            "head_width": self.head_widths,
            "head_depth": self.head_depths,
        }

    def largest(self) -> DetectorSpec:
        """Widest and deepest neck and head."""
        return DetectorSpec(**{name: max(options) for name, options in self.options().items()})

    def smallest(self) -> DetectorSpec:
        """Narrowest and shallowest neck and head."""
        return DetectorSpec(**{name: min(options) for name, options in self.options().items()})

    def sample(self, pick: Callable[[Sequence], Any]) -> DetectorSpec:
        """A detector with every choice drawn by ``pick`` (one call per field, in field order)."""
        return DetectorSpec(**{name: pick(options) for name, options in self.options().items()})

    def validate(self, detector: DetectorSpec) -> None:
        """Raise :class:`UserError` naming the first choice outside this table."""
        for name, options in self.options().items():
            value = getattr(detector, name)
            if value not in options:
                shown = ", ".join(str(option) for option in options)
                raise UserError(f"detector {name}={value!r} is outside the space; allowed: {shown}")

    def shift_widths(self, detector: DetectorSpec, steps: int) -> DetectorSpec:
        """Neck and head widths moved ``steps`` places along their choice lists."""
        return replace(
            detector,
            neck_width=_shift(self.neck_widths, detector.neck_width, steps),
            head_width=_shift(self.head_widths, detector.head_width, steps),
        )

    def neighbours(self, detector: DetectorSpec, direction: int) -> list[DetectorSpec]:
        """Detectors one choice cheaper (``direction=-1``) or dearer (``+1``) in one field."""
        moves = []
        for name, options in self.options().items():
            value = _shift(options, getattr(detector, name), direction)
            if value != getattr(detector, name):
                moves.append(replace(detector, **{name: value}))
        return moves


def _shift(options: Sequence, value, steps: int):
    ordered = sorted(options)
    index = ordered.index(value) if value in ordered else min(range(len(ordered)), key=lambda i: abs(ordered[i] - value))
    return ordered[min(max(index + steps, 0), len(ordered) - 1)]


@dataclass(frozen=True)
class DetectionSpace(SearchSpace):
    """A search space for detectors: backbone stages as in a classification space, plus
    neck and head choices (:attr:`detector`). Specs must carry a ``DetectorSpec``; their
    ``head_width`` (the classifier's last conv) is fixed at 1 and unused.

    Build one from a classification space with :meth:`from_backbone`.
    """

    detector: DetectorChoices = field(default_factory=DetectorChoices)
    network_costs: Any = field(default=DETECTOR_COSTS, compare=False, hash=False, repr=False)

    @classmethod
    def from_backbone(
        cls,
        backbone: SearchSpace,
        *,
        name: str,
        description: str,
        input_size: int,
        train_input_size: int,
        num_classes: int,
        detector: DetectorChoices,
    ) -> DetectionSpace:
        """A detection space whose backbone choices are those of ``backbone``."""
        if sum(stage.feature for stage in backbone.stages) < 2:
            raise ValueError(f"space {backbone.name!r} marks fewer than two feature stages; a neck needs at least two")
        return cls(
            name=name,
            task="detect",
            description=description,
            input_size=input_size,
            train_input_size=train_input_size,
            stem_channels=backbone.stem_channels,
            stem_stride=backbone.stem_stride,
            head_channels=0,  # no classifier head in a detector
            stages=backbone.stages,
            num_classes=num_classes,
            stem_widths=backbone.stem_widths,
            head_widths=(1.0,),
            scc_groups=backbone.scc_groups,
            scc_overlaps=backbone.scc_overlaps,
            squeeze_excite=backbone.squeeze_excite,
            dropout=0.0,
            metadata={"backbone": backbone.name},
            detector=detector,
        )

    # ------------------------------------------------------------------ geometry
    def feature_strides(self) -> tuple[int, ...]:
        """Total stride of each feature stage (8, 16, 32 for the ``detect`` space)."""
        strides, stride = [], self.stem_stride
        for stage in self.stages:
            stride *= stage.stride
            if stage.feature:
                strides.append(stride)
        return tuple(strides)

    def level_strides(self) -> tuple[int, ...]:
        """Stride of every pyramid level: the feature strides, then each extra level's
        (twice the previous one), e.g. 8, 16, 32, 64, 128."""
        strides = list(self.feature_strides())
        for _ in range(self.detector.extra_levels):
            strides.append(strides[-1] * 2)
        return tuple(strides)

    # ------------------------------------------------------------------ validation and resolution
    def validate(self, spec: ArchSpec) -> None:
        """Backbone choices as in :meth:`SearchSpace.validate`, plus the detector's."""
        super().validate(spec)
        if spec.detector is None:
            raise UserError(
                f"space {self.name!r} needs a detector entry (neck_width, neck_depth, head_width, head_depth); "
                "the spec has none"
            )
        self.detector.validate(spec.detector)

    def resolve_backbone(self, spec: ArchSpec) -> ResolvedNetwork:
        """The backbone's resolved stem and stages (validates the whole spec)."""
        return SearchSpace.resolve(self, spec)

    def resolve(self, spec: ArchSpec, num_classes: int | None = None) -> ResolvedDetector:  # type: ignore[override]
        """Validate ``spec`` and compute every channel count of backbone, neck and head.

        ``num_classes`` is C, background excluded (the space's default when ``None``).
        """
        classes = self.num_classes if num_classes is None else num_classes
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise UserError(f"num_classes={classes!r} is invalid; allowed: an integer >= 1 (background excluded)")
        backbone = self.resolve_backbone(spec)
        divisor, detector = spec.channel_divisor, cast(DetectorSpec, spec.detector)  # validated by resolve_backbone
        neck = ResolvedNeck(
            in_channels=tuple(backbone.stages[index][-1].out_channels for index in backbone.feature_stages),
            channels=scaled_channels(self.detector.neck_channels, detector.neck_width, divisor),
            depth=detector.neck_depth,
            extra_levels=self.detector.extra_levels,
        )
        head = ResolvedHead(
            in_channels=neck.channels,
            channels=scaled_channels(self.detector.head_channels, detector.head_width, divisor),
            depth=detector.head_depth,
            num_classes=classes + 1,
            levels=neck.levels,
        )
        return ResolvedDetector(spec, backbone, neck, head, classes, self.level_strides())

    # ------------------------------------------------------------------ named specs and sampling
    def largest(self, op: str | None = None) -> ArchSpec:
        """The most expensive detector: the largest backbone (with ``op`` in every block
        when given), neck and head."""
        return replace(super().largest(op), detector=self.detector.largest())

    def smallest(self) -> ArchSpec:
        """The cheapest detector: per stage the cheapest block at minimum depth, width and
        kernel (chosen by counting FLOPs), and the smallest neck and head."""
        from nas_search.hw_models.flops import count_flops

        detector = self.detector.smallest()
        largest = self.largest()
        stem_width = min(self.stem_widths)
        stages: list[StageSpec] = []
        for stage_index, choices in enumerate(self.stages):
            candidates = [
                block
                for block in self.block_choices(stage_index)
                if block.width == min(choices.widths) and block.kernel == min(choices.kernels)
            ]
            best = None
            for block in candidates:
                trial_stages = stages + [StageSpec((block,) * min(choices.depths))] + list(largest.stages[stage_index + 1 :])
                trial = replace(largest, stages=tuple(trial_stages), stem_width=stem_width, detector=detector)
                try:
                    cost = count_flops(trial, self).flops
                except UserError:
                    continue
                if best is None or cost < best[0]:
                    best = (cost, block)
            stages.append(StageSpec((cast("tuple[int, BlockSpec]", best)[1],) * min(choices.depths)))
        return ArchSpec(self.name, tuple(stages), stem_width=stem_width, head_width=1.0, detector=detector)

    def suggest_head_choices(self, trial: Any) -> dict[str, Any]:
        """The neck and head choices (a :class:`DetectorSpec`) drawn through ``trial``, under
        the parameter names of :data:`~nas_search.spec.DETECTOR_PARAMETERS`; a detector has no
        classifier head, so ``head_width`` stays 1."""
        detector = DetectorSpec(
            **{
                field: trial.suggest_categorical(DETECTOR_PARAMETERS[field], list(options))
                for field, options in self.detector.options().items()
            }
        )
        return {"head_width": 1.0, "detector": detector}

    def sample(
        self, rng: random.Random, bias: float | None = None, operations: Mapping[tuple[int, int], str] | None = None
    ) -> ArchSpec:
        """A random detector; ``bias`` skews every ordered choice (backbone, neck and
        head) toward its small (0) or large (1) end and ``operations`` fixes backbone
        ops, as in :meth:`SearchSpace.sample`."""
        backbone = super().sample(rng, bias, operations)

        def pick(options: Sequence):
            options = sorted(options)
            if bias is None or len(options) == 1:
                return rng.choice(options)
            position = min(max(rng.gauss(bias, 0.22), 0.0), 1.0)
            return options[min(int(position * len(options)), len(options) - 1)]

        return replace(backbone, detector=self.detector.sample(pick))


#: The deployment input size of detectors (FLOPs are counted here).
DETECTION_INPUT_SIZE = 416
#: The proxy size for one-shot supernet training on a CPU.
DETECTION_TRAIN_SIZE = 160


def detect() -> DetectionSpace:
    """Compact detectors at 416x416: the ``mobile`` backbone choices (features at strides
    8/16/32), an FPN-lite neck of up to 128 channels with 0 to 2 extra blocks per level,
    and an FCOS head of 1 to 4 separable layers per tower, up to 128 channels."""
    return DetectionSpace.from_backbone(
        BACKBONE_SPACES.get("mobile"),
        name="detect",
        description="FCOS detector: mobile backbone, FPN-lite neck, separable head; 416 px deployment",
        input_size=DETECTION_INPUT_SIZE,
        train_input_size=DETECTION_TRAIN_SIZE,
        num_classes=20,
        detector=DetectorChoices(),
    )


#: The detection spaces (``nas_search.tasks.register_space`` adds a user's own here).
DETECTION_SPACES = SpaceRegistry({"detect": detect})


def detection_space(name: str) -> DetectionSpace:
    """The detection space called ``name``; :class:`UserError` naming the detection spaces
    when ``name`` is another task's space or unknown."""
    if name in BACKBONE_SPACES:
        raise UserError(
            f"space {name!r} is not a detection space; detectors are built from: {', '.join(DETECTION_SPACES.names())}"
        )
    space = DETECTION_SPACES.get(name)
    if not isinstance(space, DetectionSpace):
        raise UserError(
            f"space {name!r} is not a detection space; detectors are built from: {', '.join(DETECTION_SPACES.names())}"
        )
    return space


__all__ = [
    "DETECTION_SPACES",
    "DETECTION_INPUT_SIZE",
    "DETECTION_TRAIN_SIZE",
    "DetectionSpace",
    "DetectorChoices",
    "ResolvedDetector",
    "ResolvedHead",
    "ResolvedNeck",
    "detect",
    "detection_space",
]
