"""The Optuna parameterisation of a space: every per-block choice under a stable name.

Names: ``stem_width``, ``head_width``, ``s{stage}_depth``, and for block ``b`` of stage
``s``: ``s{s}_b{b}_op``, ``_kernel``, ``_width``, then one per extra choice of the block's
op (its ``BlockKind.choices``): ``_expansion`` and ``_se`` (mbconv), ``_groups`` and
``_overlap`` (scc). Only the parameters of active blocks and their op are
suggested (conditional parameters), so the dashboard shows what each trial really used.

The space draws what follows the stem (``SearchSpace.suggest_head_choices``): a
classifier its ``head_width``; detection spaces (``detect``) ``neck_width``, ``neck_depth``, ``det_head_width`` and
``det_head_depth`` (the :class:`~nas_search.spec.DetectorSpec` fields) and have no
``head_width`` (a detector has no classifier head; the spec's ``head_width`` stays 1).
"""

from __future__ import annotations

from typing import Any

import optuna

from nas_search.spaces.ops import block_kind
from nas_search.spaces.space import SearchSpace
from nas_search.spec import DETECTOR_PARAMETERS, ArchSpec, BlockSpec, StageSpec


def _block_prefix(stage: int, block: int) -> str:
    return f"s{stage}_b{block}"


def suggest_spec(trial: optuna.Trial, space: SearchSpace) -> ArchSpec:
    """Sample an architecture through ``trial``'s suggest API."""
    stages = []
    for stage_index, choices in enumerate(space.stages):
        depth = trial.suggest_categorical(f"s{stage_index}_depth", list(choices.depths))
        blocks = []
        for block_index in range(depth):
            prefix = _block_prefix(stage_index, block_index)
            op = trial.suggest_categorical(f"{prefix}_op", list(choices.operations))
            kernel = trial.suggest_categorical(f"{prefix}_kernel", list(choices.kernels))
            width = trial.suggest_categorical(f"{prefix}_width", list(choices.widths))
            extra = block_kind(op).suggest_choices(trial, prefix, space, choices)
            blocks.append(BlockSpec(op=op, kernel=kernel, width=width, **extra))
        stages.append(StageSpec(tuple(blocks)))
    stem_width = trial.suggest_categorical("stem_width", list(space.stem_widths))
    return ArchSpec(space.name, tuple(stages), stem_width=stem_width, **space.suggest_head_choices(trial))


def spec_to_params(spec: ArchSpec) -> dict[str, Any]:
    """The trial parameters that :func:`suggest_spec` would suggest for ``spec`` (for
    ``study.enqueue_trial``)."""
    params: dict[str, Any] = {"stem_width": spec.stem_width}
    if spec.detector is None:
        params["head_width"] = spec.head_width
    else:
        params.update({name: getattr(spec.detector, field) for field, name in DETECTOR_PARAMETERS.items()})
    for stage_index, stage in enumerate(spec.stages):
        params[f"s{stage_index}_depth"] = stage.depth
        for block_index, block in enumerate(stage.blocks):
            prefix = _block_prefix(stage_index, block_index)
            params[f"{prefix}_op"] = block.op
            params[f"{prefix}_kernel"] = block.kernel
            params[f"{prefix}_width"] = block.width
            params.update(block_kind(block.op).parameters(block, prefix))
    return params
