"""The weight-sharing detection supernet: a torchvision FCOS with elastic parts.

:class:`DetectionSupernet` is a ``torchvision.models.detection.FCOS`` whose backbone is
an elastic body (the classification supernet's stem and stages, same module names) plus
an elastic FPN-lite neck, and whose head is an elastic ``FCOSHead``. :meth:`activate`
selects a subnet by its ``ArchSpec``; the ordinary FCOS forward then trains it (losses)
or runs it (detections); :meth:`extract` returns a standalone
:class:`~nas_search.tasks.detect.static.StaticDetector` holding copies of the active
weights.

Example::

    space = get_space("detect")
    supernet = DetectionSupernet(space, num_classes=3)      # C, background excluded
    supernet.set_image_size(160)                             # proxy size for CPU training
    supernet.activate(space.sample(random.Random(0)))
    losses = supernet(images, targets)                       # train mode
    losses, head_outputs = supernet.forward_with_head_outputs(images, targets)
    detector = supernet.extract()                            # standalone FCOS
    detector.set_image_size(416)

Detection supernets are not channel-sorted: the classification supernet's
``sort_channels`` has no counterpart here (the neck reads every feature stage and the
head towers are shared across levels, so a permutation would have to be threaded through
all of them); width elasticity keeps the first channels, as everywhere.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torchvision.models.detection import FCOS

from nas_search.errors import UserError
from nas_search.spaces.elastic import ElasticConvNormActivation
from nas_search.spaces.space import ResolvedNetwork
from nas_search.spaces.supernet import elastic_block_choices
from nas_search.spec import ArchSpec
from nas_search.tasks.detect.head import ElasticDetectionHead
from nas_search.tasks.detect.neck import ElasticNeck
from nas_search.tasks.detect.space import DetectionSpace, ResolvedDetector
from nas_search.tasks.detect.static import (
    DEFAULT_RESIZE,
    IMAGE_MEAN,
    IMAGE_STD,
    Body,
    DetectionBackbone,
    DetectorInterface,
    Neck,
    StaticDetector,
    check_image_size,
    check_resize,
    fcos_options,
    make_anchor_generator,
)
from nas_search.utils import round_channels


class ElasticBody(nn.Module):
    """Elastic stem and stages up to the deepest feature stage, laid out as in the
    classification ``Supernet`` (``stem``, ``stages[s][b][op]``), so a classification
    supernet's backbone weights load into ``backbone.body`` by name. Set :attr:`active`
    (a ``ResolvedNetwork``) before running it."""

    def __init__(self, space: DetectionSpace) -> None:
        super().__init__()
        used = max(index for index, stage in enumerate(space.stages) if stage.feature) + 1
        self.stem = ElasticConvNormActivation(3, space.stem_channels, 3, space.stem_stride)
        stages: list[nn.ModuleList] = [nn.ModuleList() for _ in space.stages[:used]]
        for stage_index, block_index, max_in, max_out in space.max_block_channels():
            if stage_index >= used:
                break
            choices = space.stages[stage_index]
            stride = choices.stride if block_index == 0 else 1
            stages[stage_index].append(
                elastic_block_choices(
                    choices.operations, max_in, max_out, stride, max(choices.kernels), max(choices.expansions)
                )
            )
        self.stages = nn.ModuleList(stages)
        self.active: ResolvedNetwork | None = None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        network = cast(ResolvedNetwork, self.active)
        x = self.stem(x, network.stem_channels)
        features = []
        for stage_index, (blocks, stage) in enumerate(zip(network.stages, self.stages)):
            for block_index, block in enumerate(blocks):
                x = cast(nn.ModuleDict, cast(nn.ModuleList, stage)[block_index])[block.spec.op](x, block)
            if stage_index in network.feature_stages:
                features.append(x)
        return features

    @torch.no_grad()
    def copy_into(self, target: Body, network: ResolvedNetwork) -> None:
        """Copy the active slices into a static :class:`~nas_search.tasks.detect.static.Body`."""
        self.stem.copy_into(target.stem, network.stem_channels, network.input_channels)
        for stage_index, static_stage in enumerate(target.stages):
            for block_index, block in enumerate(network.stages[stage_index]):
                # the elastic blocks are plain nn.Modules (each op's own class) with copy_into
                cast(Any, self.stages[stage_index])[block_index][block.spec.op].copy_into(
                    cast(nn.Sequential, static_stage)[block_index], block
                )


class DetectionSupernet(DetectorInterface, FCOS):
    """A detection supernet for one :class:`DetectionSpace`.

    Args:
        space: the detection space.
        num_classes: object classes C, background excluded (torchvision gets C + 1).
        image_size: resize size of the transform (default: the space's proxy training
            size); change it with :meth:`set_image_size`.
        resize: how images are fitted to the image size (``RESIZE_MODES``); extracted
            detectors inherit it.
        **options: FCOS settings overriding ``DETECTION_DEFAULTS`` (``score_thresh``,
            ``nms_thresh``, ``detections_per_img``, ``topk_candidates``,
            ``center_sampling_radius``); extracted detectors inherit them.

    Attributes: ``space``, ``num_classes`` (C), ``image_size``, ``resize``, ``active`` (the
    :class:`ResolvedDetector` of the active subnet), ``detector_options``.
    """

    backbone: DetectionBackbone
    head: ElasticDetectionHead

    def __init__(
        self,
        space: DetectionSpace,
        num_classes: int,
        image_size: int | None = None,
        *,
        resize: str = DEFAULT_RESIZE,
        **options: Any,
    ) -> None:
        if not isinstance(space, DetectionSpace):
            raise UserError(f"space {getattr(space, 'name', space)!r} is not a detection space; use 'detect'")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"num_classes={num_classes!r} is invalid; allowed: an integer >= 1 (background excluded)")
        settings = fcos_options(options)
        size = check_image_size(space.train_input_size if image_size is None else image_size)
        choices = space.detector
        neck_channels = round_channels(choices.neck_channels, 8)
        strides = space.level_strides()
        neck = ElasticNeck(
            tuple(stage.max_channels for stage in space.stages if stage.feature),
            neck_channels,
            max(choices.neck_depths),
            choices.extra_levels,
        )
        head = ElasticDetectionHead(
            neck_channels, round_channels(choices.head_channels, 8), max(choices.head_depths), num_classes + 1, len(strides)
        )
        FCOS.__init__(
            self,
            DetectionBackbone(ElasticBody(space), neck, neck_channels),
            num_classes + 1,
            min_size=size,
            max_size=size,
            image_mean=list(IMAGE_MEAN),
            image_std=list(IMAGE_STD),
            anchor_generator=make_anchor_generator(strides),
            head=head,
            **settings,
        )
        self.space = space
        self.num_classes = num_classes
        self.resize = check_resize(resize)
        self.set_image_size(size)
        self.detector_options = settings
        self.active: ResolvedDetector | None = None
        self.activate(space.largest())

    # ------------------------------------------------------------------ subnet selection
    def activate(self, spec: ArchSpec) -> ResolvedDetector:
        """Make ``spec`` the active subnet (validated against the space) and return its
        resolved shapes."""
        detector = self.space.resolve(spec, num_classes=self.num_classes)
        cast(ElasticBody, self.backbone.body).active = detector.backbone
        cast(ElasticNeck, self.backbone.neck).active = detector.neck
        self.backbone.out_channels = detector.neck.channels
        self.head.active = detector.head
        self.active = detector
        return detector

    # ------------------------------------------------------------------ extraction
    @torch.no_grad()
    def extract(self, spec: ArchSpec | None = None) -> StaticDetector:
        """A standalone FCOS detector for ``spec`` (default: the active subnet) holding
        copies of the shared weights, with this supernet's image size, FCOS settings and
        train/eval mode."""
        detector = (
            self.space.resolve(spec, num_classes=self.num_classes) if spec is not None else cast(ResolvedDetector, self.active)
        )
        model = StaticDetector(detector, self.image_size, resize=self.resize, **self.detector_options)
        model.to(next(self.parameters()).device)
        cast(ElasticBody, self.backbone.body).copy_into(cast(Body, model.backbone.body), detector.backbone)
        cast(ElasticNeck, self.backbone.neck).copy_into(cast(Neck, model.backbone.neck), detector.neck)
        self.head.copy_into(model.head, detector.head)
        model.train(self.training)
        return model


__all__ = ["DetectionSupernet", "ElasticBody"]
