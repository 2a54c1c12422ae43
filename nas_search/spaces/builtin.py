"""Built-in search spaces, written as tables of stage rows.

Each row: ``StageChoices(max_channels, stride, depths, ...)``. Every block position may be
any of the four ops (slim module, depthwise-separable, sliding-channel, inverted residual)
with kernel 3/5/7 and a per-block width ratio from 0.25 to 1 in steps of 0.125.
"""

from __future__ import annotations

from nas_search.spaces.registry import SpaceRegistry
from nas_search.spaces.space import SearchSpace, StageChoices


def mobile() -> SearchSpace:
    """ImageNet-style mobile classifier at 224x224 deployment size, about 0.02 to 6.8 GFLOPs.

    Multi-scale features at strides 8, 16 and 32 (stages 3, 5 and 7).
    """
    return SearchSpace(
        name="mobile",
        task="classify",
        description="mobile classifier backbone, 224 px deployment, features at strides 8/16/32",
        input_size=224,
        train_input_size=64,
        stem_channels=32,
        stem_stride=2,
        head_channels=1536,
        num_classes=1000,
        stages=(
            StageChoices(max_channels=32, stride=1, depths=(1, 2, 3)),  # 112 px
            StageChoices(max_channels=80, stride=2, depths=(1, 2, 3, 4)),  # 56 px
            StageChoices(max_channels=136, stride=2, depths=(1, 2, 3, 4), feature=True),  # 28 px, stride 8
            StageChoices(max_channels=240, stride=2, depths=(1, 2, 3, 4, 5, 6)),  # 14 px
            StageChoices(max_channels=360, stride=1, depths=(1, 2, 3, 4, 5, 6), feature=True),  # 14 px, stride 16
            StageChoices(max_channels=512, stride=2, depths=(1, 2, 3, 4)),  # 7 px
            StageChoices(max_channels=640, stride=1, depths=(1, 2), feature=True),  # 7 px, stride 32
        ),
    )


def cifar() -> SearchSpace:
    """CIFAR-style classifier at 32x32, about 1.7 to 469 MFLOPs.

    Feature stages at strides 2, 4 and 8 (a 32 px input leaves no room for 8/16/32).
    """
    return SearchSpace(
        name="cifar",
        task="classify",
        description="small-image classifier, 32 px deployment, features at strides 2/4/8",
        input_size=32,
        train_input_size=32,
        stem_channels=32,
        stem_stride=1,
        head_channels=1024,
        num_classes=10,
        stages=(
            StageChoices(max_channels=48, stride=1, depths=(1, 2, 3)),  # 32 px
            StageChoices(max_channels=96, stride=2, depths=(1, 2, 3, 4), feature=True),  # 16 px
            StageChoices(max_channels=192, stride=2, depths=(1, 2, 3, 4), feature=True),  # 8 px
            StageChoices(max_channels=384, stride=2, depths=(1, 2, 3), feature=True),  # 4 px
        ),
    )


def micro() -> SearchSpace:
    """A very small 32 px classifier space (about 0.3 to 12 MFLOPs) for smoke tests and
    quick CPU runs of the whole pipeline; same ops and choices as the others."""
    return SearchSpace(
        name="micro",
        task="classify",
        description="tiny 32 px classifier for smoke tests and quick CPU runs",
        input_size=32,
        train_input_size=32,
        stem_channels=16,
        stem_stride=2,
        head_channels=256,
        num_classes=10,
        stages=(
            StageChoices(max_channels=32, stride=1, depths=(1, 2), expansions=(2.0, 3.0, 4.0), feature=True),  # 16 px
            StageChoices(max_channels=64, stride=2, depths=(1, 2), expansions=(2.0, 3.0, 4.0), feature=True),  # 8 px
            StageChoices(max_channels=96, stride=2, depths=(1, 2), expansions=(2.0, 3.0, 4.0), feature=True),  # 4 px
        ),
    )


#: The built-in classification spaces (also the backbones of detection spaces).
BACKBONE_SPACES = SpaceRegistry({"mobile": mobile, "cifar": cifar, "micro": micro})
