"""Standalone (extracted) detectors: torchvision FCOS with a searched backbone, neck and head.

Everything here is a plain ``nn.Module`` with physically sized tensors and no dependency
on the elastic supernet classes. :func:`build_detector` makes a fresh detector from an
``ArchSpec`` (for training from scratch or loading a saved ``state_dict``);
``DetectionSupernet.extract`` builds the same modules and copies the shared weights in.

torchvision's machinery is reused, not rewritten: :class:`StaticDetector` *is* a
``torchvision.models.detection.FCOS`` (transform, anchors, target assignment, losses, box
decoding, NMS), with a custom backbone (:class:`DetectionBackbone`, returning an
``OrderedDict`` of the pyramid levels and carrying ``out_channels``) and a head that
subclasses ``FCOSHead`` (so ``FCOSHead.compute_loss`` and its box coder are used as is).

Semantics follow torchvision: ``num_classes`` given to FCOS is C + 1 (label 0 is
background); in train mode ``model(images, targets)`` returns the losses
``classification``, ``bbox_regression``, ``bbox_ctrness``; in eval mode ``model(images)``
returns ``[{"boxes", "scores", "labels"}]`` in the input images' pixel coordinates.

For ONNX and FLOP counting, :meth:`DetectorInterface.core` returns a
:class:`DetectorCore`: batched, already normalised images ``[B, 3, S, S]`` in, the raw
head outputs ``(cls_logits [B, A, C+1], bbox_regression [B, A, 4], bbox_ctrness [B, A, 1])``
out, where ``A`` is the number of anchor points over all levels. No transform, no
post-processing.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead

from nas_search.errors import UserError
from nas_search.spaces.ops import block_kind
from nas_search.spaces.space import ResolvedNetwork
from nas_search.spaces.static import conv_norm_activation, initialise_weights
from nas_search.spec import ArchSpec
from nas_search.tasks.detect.resolved import ResolvedDetector, ResolvedHead, ResolvedNeck

#: Names of the raw head outputs, in :class:`DetectorCore`'s output order.
HEAD_OUTPUTS: tuple[str, ...] = ("cls_logits", "bbox_regression", "bbox_ctrness")
#: Head outputs coded as ``exp(raw)`` (box distances, see :func:`box_distances`).
EXP_CODED_OUTPUTS: tuple[str, ...] = ("bbox_regression",)

#: FCOS post-processing and matching settings used unless overridden. The score threshold
#: is lower than torchvision's 0.2, as is usual when mAP is measured. The centre-sampling
#: radius (in strides) is wider than FCOS's 1.5: an object is assigned to the level where its
#: largest box distance is 4 to 8 strides, so a radius of 4 makes nearly every point inside
#: it a positive (FCOS without centre sampling). Compact heads trained briefly from scratch
#: learn much faster with those extra positives (``benchmarks/RESULTS.md``).
DETECTION_DEFAULTS: dict[str, Any] = {
    "score_thresh": 0.05,
    "nms_thresh": 0.6,
    "detections_per_img": 100,
    "topk_candidates": 1000,
    "center_sampling_radius": 4.0,
}

#: How the transform fits an image into the ``S x S`` input the detector's FLOPs, latency and
#: memory are counted on (``S``: the image size), by name. ``square`` stretches every image to
#: ``S x S`` (aspect ratio not kept, as SSD and SSDlite do), so that the whole input holds
#: image content. ``longer-side`` keeps the aspect ratio: the longer side becomes ``S`` and
#: the rest is zero padding (torchvision FCOS's way). ``square`` trains to a clearly higher
#: mAP (``benchmarks/RESULTS.md``): a 4:3 photograph fills only three quarters of
#: a ``longer-side`` input, and each object covers fewer feature-map points, so it gets
#: fewer positives.
RESIZE_MODES: dict[str, str] = {
    "square": "stretched to S x S (aspect ratio not kept)",
    "longer-side": "resized so the longer side is S (aspect ratio kept) and zero-padded to S x S "
    "(in torch, a batch is padded to its largest image, rounded up to 32)",
}
#: The resize mode of new detectors and supernets. Checkpoints and exports made before
#: resize modes existed were trained ``longer-side`` and are read back that way.
DEFAULT_RESIZE = "square"
LEGACY_RESIZE = "longer-side"

#: Normalisation applied by the transform (ImageNet statistics, torchvision's default).
IMAGE_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGE_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Prior foreground probability that initialises the classification bias (focal loss).
PRIOR_PROBABILITY = 0.01

#: Box distances (left, top, right, bottom, in units of the level's stride, torchvision's
#: ``BoxLinearCoder(normalize_by_size=True)``) are predicted as ``exp(raw)``, as in the FCOS
#: paper, with the bias initialised to ``log(BOX_DISTANCE_PRIOR)``. A fresh head then
#: predicts boxes of 2 x 4 strides, the middle of what each level is assigned (objects whose
#: largest distance lies in 4 to 8 strides). The ReLU parametrisation of torchvision's
#: FCOSHead starts at zero-size boxes, where the GIoU loss has no gradient for the box size,
#: and trains to a lower mAP from scratch (``benchmarks/RESULTS.md``).
BOX_DISTANCE_PRIOR = 4.0
#: Upper clamp of the raw box output before ``exp`` (e^10 strides: no overflow to inf).
MAX_LOG_DISTANCE = 10.0


# ---------------------------------------------------------------------------- shared helpers
def flatten_level(prediction: torch.Tensor) -> torch.Tensor:
    """``[N, K, H, W]`` -> ``[N, H*W, K]`` (FCOSHead's layout for one anchor per point)."""
    batch, channels = prediction.shape[0], prediction.shape[1]
    return prediction.permute(0, 2, 3, 1).reshape(batch, -1, channels)


def top_down(laterals: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """FPN top-down fusion: from the deepest level, upsample (nearest) to the next
    shallower level and add its lateral."""
    fused = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
        fused.insert(0, lateral + F.interpolate(fused[0], size=lateral.shape[-2:], mode="nearest"))
    return fused


def make_anchor_generator(strides: Sequence[int]) -> AnchorGenerator:
    """One square anchor per point and level, as large as the level's stride (FCOS)."""
    return AnchorGenerator(sizes=tuple((stride,) for stride in strides), aspect_ratios=((1.0,),) * len(strides))


def box_distances(raw: torch.Tensor) -> torch.Tensor:
    """Box regression output from the raw ``bbox_reg`` map: ``exp`` of the clamped values."""
    return torch.exp(raw.clamp(max=MAX_LOG_DISTANCE))


@torch.no_grad()
def initialise_predictors(head: nn.Module) -> None:
    """FCOS initialisation of a head's three predictor convs (``cls_logits``, ``bbox_reg``,
    ``bbox_ctrness``): normal(0, 0.01) weights; biases at the focal-loss prior
    ``-log((1 - p) / p)``, at ``log(BOX_DISTANCE_PRIOR)`` and at zero."""
    biases = {
        "cls_logits": -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY),
        "bbox_reg": math.log(BOX_DISTANCE_PRIOR),
        "bbox_ctrness": 0.0,
    }
    for name, bias in biases.items():
        predictor = getattr(head, name)
        nn.init.normal_(predictor.weight, std=0.01)
        nn.init.constant_(predictor.bias, bias)


def check_image_size(size: int) -> int:
    """Refuse image sizes that are not a positive multiple of 32."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 32:
        raise UserError(f"detector image size {size!r} is invalid; allowed: a multiple of 32 (e.g. 160, 320, 416)")
    return size


def check_resize(mode: object) -> str:
    """Refuse a resize mode that is not in :data:`RESIZE_MODES`."""
    if not isinstance(mode, str) or mode not in RESIZE_MODES:
        raise UserError(f"detector resize mode {mode!r} is invalid; allowed: {', '.join(RESIZE_MODES)}")
    return mode


def fcos_options(options: dict[str, Any]) -> dict[str, Any]:
    """:data:`DETECTION_DEFAULTS` updated by ``options`` (unknown names refused)."""
    unknown = sorted(set(options) - set(DETECTION_DEFAULTS))
    if unknown:
        raise UserError(f"unknown detector option(s) {', '.join(unknown)}; allowed: {', '.join(DETECTION_DEFAULTS)}")
    return {**DETECTION_DEFAULTS, **options}


# ---------------------------------------------------------------------------- backbone and neck
class Body(nn.Module):
    """Stem and stages of the backbone up to the deepest feature stage; returns the
    feature stages' outputs, shallow to deep. Same module names as ``StaticNetwork``."""

    def __init__(self, network: ResolvedNetwork, used_stages: int) -> None:
        super().__init__()
        self.stem = conv_norm_activation(network.input_channels, network.stem_channels, 3, network.stem_stride)
        self.stages = nn.ModuleList(
            nn.Sequential(*(block_kind(block.spec.op).static_block(block) for block in stage))
            for stage in network.stages[:used_stages]
        )
        self.feature_stages = tuple(network.feature_stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = self.stem(x)
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.feature_stages:
                features.append(x)
        return features


class NeckBlock(nn.Module):
    """Residual depthwise-separable block: ``x + pointwise(depthwise3x3(x))`` (each conv
    followed by BN and ReLU)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = conv_norm_activation(channels, channels, 3, groups=channels)
        self.pointwise = conv_norm_activation(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pointwise(self.depthwise(x))


class ExtraLevel(nn.Sequential):
    """A coarser pyramid level from the previous one: depthwise 3x3 stride 2 -> BN -> ReLU
    -> pointwise 1x1 -> BN -> ReLU, at the neck width."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            conv_norm_activation(channels, channels, 3, 2, groups=channels), conv_norm_activation(channels, channels)
        )


class Neck(nn.Module):
    """FPN-lite: 1x1 lateral conv + BN per level, top-down fusion, ``depth`` blocks per level."""

    def __init__(self, neck: ResolvedNeck) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(
            conv_norm_activation(channels, neck.channels, activation=False) for channels in neck.in_channels
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(*(NeckBlock(neck.channels) for _ in range(neck.depth))) for _ in neck.in_channels
        )
        self.extras = nn.ModuleList(ExtraLevel(neck.channels) for _ in range(neck.extra_levels))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        fused = top_down([lateral(feature) for lateral, feature in zip(self.laterals, features)])
        levels = [blocks(level) for blocks, level in zip(self.blocks, fused)]
        for extra in self.extras:
            levels.append(extra(levels[-1]))
        return levels


class DetectionBackbone(nn.Module):
    """torchvision-style detection backbone: body features -> neck -> ``OrderedDict`` of
    levels ``"0"``, ``"1"``, ... (shallow to deep), with ``out_channels`` (the neck width).
    The supernet uses the same container around its elastic body and neck."""

    def __init__(self, body: nn.Module, neck: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.neck = neck
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((str(index), level) for index, level in enumerate(self.neck(self.body(x))))


# ---------------------------------------------------------------------------- head
class SharedSeparableLayer(nn.Module):
    """Depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU. The convolutions are
    shared by all pyramid levels; each level has its own BNs, because level statistics
    differ and one shared BN's running averages would match none of them at eval time."""

    def __init__(self, in_channels: int, out_channels: int, levels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, 1, 1, groups=in_channels, bias=False)
        self.depthwise_norms = nn.ModuleList(nn.BatchNorm2d(in_channels) for _ in range(levels))
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pointwise_norms = nn.ModuleList(nn.BatchNorm2d(out_channels) for _ in range(levels))

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        x = F.relu(self.depthwise_norms[level](self.depthwise(x)))
        return F.relu(self.pointwise_norms[level](self.pointwise(x)))


class SeparableTower(nn.Module):
    """``depth`` shared separable layers: ``in_channels`` -> ``channels`` -> ... -> ``channels``."""

    def __init__(self, in_channels: int, channels: int, depth: int, levels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SharedSeparableLayer(in_channels if index == 0 else channels, channels, levels) for index in range(depth)
        )

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, level)
        return x


class PyramidHead(FCOSHead):
    """Base of the static and elastic FCOS heads: runs :meth:`predict_level` on every
    level and lays the predictions out as ``FCOSHead.forward`` does, so FCOS's loss, box
    coder and post-processing apply unchanged. ``num_classes`` includes background."""

    def __init__(self, num_classes: int) -> None:
        nn.Module.__init__(self)  # FCOSHead.__init__ would build torchvision's own towers
        self.box_coder = BoxLinearCoder(normalize_by_size=True)
        self.num_classes = num_classes

    def predict_level(self, x: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw ``(cls_logits, bbox_regression, bbox_ctrness)`` maps ``[N, K, H, W]`` of one level."""
        raise NotImplementedError

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        predictions = [self.predict_level(features, level) for level, features in enumerate(x)]
        return {
            name: torch.cat([flatten_level(level[index]) for level in predictions], dim=1)
            for index, name in enumerate(HEAD_OUTPUTS)
        }


class DetectionHead(PyramidHead):
    """FCOS head: classification and regression towers of separable layers, then 1x1
    predictors (``cls_logits`` C + 1, ``bbox_reg`` 4 through :func:`box_distances`,
    ``bbox_ctrness`` 1)."""

    def __init__(self, head: ResolvedHead) -> None:
        super().__init__(head.num_classes)
        self.classification_tower = SeparableTower(head.in_channels, head.channels, head.depth, head.levels)
        self.regression_tower = SeparableTower(head.in_channels, head.channels, head.depth, head.levels)
        self.cls_logits = nn.Conv2d(head.channels, head.num_classes, 1)
        self.bbox_reg = nn.Conv2d(head.channels, 4, 1)
        self.bbox_ctrness = nn.Conv2d(head.channels, 1, 1)

    def predict_level(self, x: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        classification = self.classification_tower(x, level)
        regression = self.regression_tower(x, level)
        return self.cls_logits(classification), box_distances(self.bbox_reg(regression)), self.bbox_ctrness(regression)


# ---------------------------------------------------------------------------- detectors
class DetectorCore(nn.Module):
    """Backbone, neck and head only: ``[B, 3, S, S]`` normalised images -> the raw head
    outputs as a tuple in :data:`HEAD_OUTPUTS` order. Shares (does not copy) the modules
    of the detector it comes from, and starts in their train/eval mode (a fresh module's
    default, train, would be pushed onto them by anything that restores the mode, such as
    ``torch.onnx.export``). Used for ONNX export and fvcore FLOP counts."""

    output_names: tuple[str, ...] = HEAD_OUTPUTS

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.training = head.training

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.head(list(self.backbone(images).values()))
        return tuple(outputs[name] for name in HEAD_OUTPUTS)


class DetectorInterface:
    """Methods shared by :class:`StaticDetector` and the supernet (mixed into FCOS)."""

    # set by FCOS.__init__ (torchvision's GeneralizedRCNNTransform, untyped) and by the subclasses
    transform: Any
    backbone: nn.Module
    head: nn.Module
    image_size: int
    resize: str

    def set_image_size(self, size: int) -> None:
        """Resize inputs to ``size`` (a multiple of 32) as :attr:`resize` says: to
        ``size x size`` (``square``: the transform's ``fixed_size``) or to a longer side of
        ``size`` (``longer-side``: its ``min_size`` and ``max_size``). Use the proxy size
        for supernet training and the deployment size (416) for deployment."""
        self.image_size = check_image_size(size)
        self.transform.min_size = (size,)
        self.transform.max_size = size
        self.transform.fixed_size = (size, size) if self.resize == "square" else None

    def set_resize(self, mode: str) -> None:
        """Switch the resize mode (:data:`RESIZE_MODES`) at the current image size."""
        self.resize = check_resize(mode)
        self.set_image_size(self.image_size)

    def core(self) -> DetectorCore:
        """The raw-output module (shares this detector's backbone and head)."""
        return DetectorCore(self.backbone, self.head)

    def forward_with_head_outputs(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        """``(self(images, targets), head outputs)``: the losses in train mode (detections
        in eval mode) plus the head's raw output dict ``cls_logits [B, A, C+1]``,
        ``bbox_regression [B, A, 4]``, ``bbox_ctrness [B, A, 1]`` on the transformed batch
        (for distilling a larger subnet's outputs into a smaller one)."""
        return run_with_head_outputs(cast(nn.Module, self), images, targets)


def run_with_head_outputs(
    model: nn.Module,
    images: list[torch.Tensor],
    targets: list[dict[str, torch.Tensor]] | None = None,
    head: nn.Module | None = None,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """Run ``model(images, targets)`` and also return what its head returned (captured by
    a forward hook that is removed afterwards). ``head`` defaults to ``model.head``; pass
    ``ddp_model.module.head`` when ``model`` is wrapped in DistributedDataParallel."""
    head = cast(nn.Module, model.head) if head is None else head
    captured: dict[str, torch.Tensor] = {}
    handle = head.register_forward_hook(lambda module, inputs, output: captured.update(output))
    try:
        result = model(images, targets)
    finally:
        handle.remove()
    return result, captured


class StaticDetector(DetectorInterface, FCOS):
    """A standalone torchvision FCOS detector for one resolved architecture.

    Args:
        detector: the resolved architecture (``DetectionSpace.resolve``).
        image_size: the transform's resize size, a multiple of 32.
        resize: how images are fitted to ``image_size`` (:data:`RESIZE_MODES`).
        **options: FCOS settings overriding :data:`DETECTION_DEFAULTS`.

    Attributes: ``spec`` (the ArchSpec), ``num_classes`` (C, background excluded),
    ``image_size``, ``resize``, ``detector_options``.
    """

    backbone: DetectionBackbone
    head: DetectionHead

    def __init__(self, detector: ResolvedDetector, image_size: int, *, resize: str = DEFAULT_RESIZE, **options: Any) -> None:
        settings = fcos_options(options)
        backbone = DetectionBackbone(Body(detector.backbone, detector.used_stages), Neck(detector.neck), detector.neck.channels)
        FCOS.__init__(
            self,
            backbone,
            detector.head.num_classes,
            min_size=check_image_size(image_size),
            max_size=image_size,
            image_mean=list(IMAGE_MEAN),
            image_std=list(IMAGE_STD),
            anchor_generator=make_anchor_generator(detector.strides),
            head=DetectionHead(detector.head),
            **settings,
        )
        self.spec: ArchSpec = detector.spec
        self.num_classes = detector.num_classes
        self.resize = check_resize(resize)
        self.set_image_size(image_size)
        self.detector_options = settings


def initialise_detector(model: StaticDetector) -> None:
    """Fresh weights: Kaiming-normal convs and unit BNs (``initialise_weights``), then the
    FCOS predictor initialisation (classification bias at the focal-loss prior)."""
    initialise_weights(model)
    initialise_predictors(model.head)


__all__ = [
    "DEFAULT_RESIZE",
    "DETECTION_DEFAULTS",
    "EXP_CODED_OUTPUTS",
    "HEAD_OUTPUTS",
    "LEGACY_RESIZE",
    "RESIZE_MODES",
    "Body",
    "DetectionBackbone",
    "DetectionHead",
    "DetectorCore",
    "DetectorInterface",
    "ExtraLevel",
    "Neck",
    "NeckBlock",
    "PyramidHead",
    "SeparableTower",
    "SharedSeparableLayer",
    "StaticDetector",
    "box_distances",
    "check_resize",
    "initialise_detector",
    "initialise_predictors",
    "make_anchor_generator",
    "run_with_head_outputs",
]
