"""Latency on a device: a lookup table (LUT) of profiled blocks plus a learned correction.

A *device* is a (hardware, runtime) pair, such as this machine's CPU running onnxruntime
on one thread.  Its latency model is built in two steps:

1. **Profile** (:func:`profile_table`, ``nas-search profile``): every distinct block
   configuration the space can produce at its deployment size (the op, input and output
   channels after rounding, hidden channels, kernel, stride, expansion, SCC groups and
   overlap, squeeze-excite width, residual, input size), plus the stem and the head (for
   a detection space: the neck and head parts of :mod:`nas_search.tasks.detect.latency`,
   registered per task in :data:`TABLE_TASKS`), is built as a standalone module
   (:data:`nas_search.spaces.static.STATIC_BLOCKS`, :func:`register_part_kind`) and timed
   on its own at batch 1 and a fixed thread count: warm-up runs, then the median of
   repeated samples (the minimum is stored too), the modules of a chunk timed in
   interleaved rounds so that a burst of load from other processes hits all of them
   alike.  Random whole subnets (100 by default) are measured the same way, spread among
   the block chunks so that both see the same drift of the machine's speed.  Everything
   goes into one JSON file recording the device, runtime, threads, library versions, clock
   and date (:class:`LatencyTable`); a half-built table is saved every few seconds and a
   new run resumes where it stopped.  Three measurement rules matter on a shared machine
   (each is explained where it is implemented): the thread-CPU clock with one thread
   (:data:`CLOCKS`), an untimed run before each interleaved sample
   (:func:`time_interleaved`), and denormals flushed to zero (:func:`measurement_settings`).
2. **Predict** (:class:`LatencyModel`): the sum of the table entries of an architecture's
   parts, plus a learned correction in the spirit of nn-Meter: a ridge regression on
   per-block features summed over the network (table latency, fused layers, FLOPs, memory
   traffic, weight bytes) predicting the whole-model latency minus the LUT sum, weighted
   so that it minimises the *relative* error.  It learns what isolated blocks miss: cold
   weights and instruction caches between blocks, per-call overheads counted once.  It is
   refit from the measured subnets stored in the table whenever the table is loaded
   (milliseconds), so the table is plain data and nothing is pickled.

Blocks missing from a partial table (a ``--widths`` subset, or an interrupted profile) are
estimated from the entries of the same kind by a non-negative fit on FLOPs and memory
traffic; :meth:`LatencyModel.predict` says how many parts were estimated.

The number of distinct parts is large (:func:`distinct_blocks`, ``nas-search profile
--count-only``): 27,903 for ``mobile`` at 224 px, 15,723 for ``cifar`` and 9,860 for
``micro`` at 32 px, and 28,358 for ``detect`` at 416 px.  A full ``mobile`` profile
takes hours on one core (about 0.1 s of ONNX
export plus the timing per block with onnxruntime); it is resumable, and ``--widths
0.25,0.5,1`` gives a quick partial table.
"""

from __future__ import annotations

import io
import json
import math
import platform
import random
import statistics
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from nas_search.errors import UserError, missing_file
from nas_search.hw_models.flops import BLOCK_COSTS, Cost, conv_norm, output_size
from nas_search.hw_models.memory import block_layer_stats
from nas_search.spaces.space import (
    ResolvedBlock,
    ResolvedNetwork,
    SearchSpace,
    has_residual,
    hidden_channels,
    scaled_channels,
)
from nas_search.spec import BLOCK_OPERATIONS, ArchSpec, BlockSpec
from nas_search.utils import atomic_write_text

TABLE_FORMAT = "nas-search-latency-table"
TABLE_FORMAT_VERSION = 1
#: Fewest measured subnets for which the learned correction is fitted (else: LUT sum only).
MIN_CORRECTION_SUBNETS = 12


# ====================================================================================
# Block configurations

#: Output size of the parts whose output is not ``output_size(input, kernel, stride)``.
SIZE_OF_OUTPUT: dict[str, Callable[["BlockConfig"], int]] = {
    "head": lambda config: 1,
    "fuse": lambda config: config.input_size,
}


@dataclass(frozen=True)
class BlockConfig:
    """One distinct part that is timed: a block, the stem or the head, at its input size.

    Attributes:
        op: ``stem``, ``head`` or a block op (``mbconv``, ``dsc``, ``scc``, ``slim``).
        in_channels / out_channels: channels after rounding to the channel divisor.
        input_size: spatial size of the part's input (square).
        kernel / stride: the depthwise kernel and stride (stem: its 3x3 conv; head: 1, 1).
        hidden_channels: expanded width (mbconv), squeeze width (slim), else input width.
        expansion: mbconv expansion ratio (1 for other parts).
        groups / overlap: SCC channel groups and overlap (1 and 0 for other parts).
        squeeze_excite_channels: reduced width of the squeeze-excite (0 when absent).
        residual: whether the block adds its input to its output.
        num_classes: classifier outputs (head only, else 0).
    """

    op: str
    in_channels: int
    out_channels: int
    input_size: int
    kernel: int = 1
    stride: int = 1
    hidden_channels: int = 0
    expansion: float = 1.0
    groups: int = 1
    overlap: float = 0.0
    squeeze_excite_channels: int = 0
    residual: bool = False
    num_classes: int = 0

    @property
    def key(self) -> str:
        """Stable lookup key, e.g. ``mbconv|in24|out24|hid96|k5|s1|e4|g1|o0|se0|res1|px56|cls0``."""
        return (
            f"{self.op}|in{self.in_channels}|out{self.out_channels}|hid{self.hidden_channels}|k{self.kernel}"
            f"|s{self.stride}|e{self.expansion:g}|g{self.groups}|o{self.overlap:g}|se{self.squeeze_excite_channels}"
            f"|res{int(self.residual)}|px{self.input_size}|cls{self.num_classes}"
        )

    @property
    def output_size(self) -> int:
        """Spatial size of the part's output (1 for the head, which ends in the classifier;
        the input size for a detector's ``fuse``, whose ``stride`` is that of its second input)."""
        if self.op in SIZE_OF_OUTPUT:
            return SIZE_OF_OUTPUT[self.op](self)
        return output_size(self.input_size, self.kernel, self.stride)

    @classmethod
    def from_block(cls, block: ResolvedBlock, input_size: int) -> "BlockConfig":
        """The configuration of a resolved block whose input is ``input_size`` pixels."""
        return cls(
            op=block.spec.op, in_channels=block.in_channels, out_channels=block.out_channels,
            input_size=input_size, kernel=block.spec.kernel, stride=block.stride,
            hidden_channels=block.hidden_channels, expansion=block.spec.expansion, groups=block.spec.groups,
            overlap=block.spec.overlap, squeeze_excite_channels=block.squeeze_excite_channels,
            residual=block.residual,
        )

    def resolved_block(self) -> ResolvedBlock:
        """The :class:`ResolvedBlock` of a block configuration (not for stem or head)."""
        spec = BlockSpec(
            op=self.op, kernel=self.kernel, width=1.0, expansion=self.expansion, groups=self.groups,
            overlap=self.overlap, squeeze_excite=self.squeeze_excite_channels > 0,
        )
        return ResolvedBlock(
            spec=spec, in_channels=self.in_channels, out_channels=self.out_channels, stride=self.stride,
            hidden_channels=self.hidden_channels, squeeze_excite_channels=self.squeeze_excite_channels,
            residual=self.residual,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (every field)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BlockConfig":
        """Build from :meth:`to_dict` output, checking field names and types."""
        known = {item.name: item for item in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UserError(f"block entry has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
        if data.get("op") not in PART_BUILDERS:
            import nas_search.tasks.detect  # noqa: F401  (interim: registers the detector parts)
        if data.get("op") not in PART_BUILDERS:
            raise UserError(f"block entry op={data.get('op')!r} is invalid; allowed: {', '.join(PART_BUILDERS)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            expected = {"op": str, "residual": bool, "expansion": float, "overlap": float}.get(name, int)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise UserError(f"block entry {name}={value!r} is invalid; allowed: a value of type {expected.__name__}")
            values[name] = value
        config = cls(**values)
        if min(config.in_channels, config.out_channels, config.input_size) <= 0:
            raise UserError(f"block entry {config.key} has a non-positive channel count or size; allowed: positive")
        return config


def _build_stem(config: BlockConfig):
    from nas_search.spaces.static import conv_norm_activation

    return conv_norm_activation(config.in_channels, config.out_channels, config.kernel, config.stride)


def _build_head(config: BlockConfig):
    from torch import nn

    from nas_search.spaces.static import conv_norm_activation

    return nn.Sequential(
        conv_norm_activation(config.in_channels, config.out_channels), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
        nn.Linear(config.out_channels, config.num_classes),
    )


def _build_block(config: BlockConfig):
    from nas_search.spaces.static import STATIC_BLOCKS

    return STATIC_BLOCKS[config.op](config.resolved_block())


#: How each kind of part is built as a standalone module.
PART_BUILDERS: dict[str, Callable[[BlockConfig], Any]] = {
    "stem": _build_stem,
    "head": _build_head,
    **{op: _build_block for op in BLOCK_OPERATIONS},
}


#: How each kind of part is given an example input (default: one ``[1, C, S, S]`` tensor).
PART_EXAMPLES: dict[str, Callable[[BlockConfig], Any]] = {}


def register_part_kind(
    kind: str,
    builder: Callable[[BlockConfig], Any],
    cost: Callable[[BlockConfig], tuple[Cost, int, int]],
    example: Callable[[BlockConfig], Any] | None = None,
) -> None:
    """Add a kind of timed part (e.g. a detector's neck and head parts): how it is built
    as a standalone module, its analytic features ``(FLOPs and params, activation bytes
    moved, fused layers)`` and, when it takes more than one tensor, its example inputs."""
    PART_BUILDERS[kind] = builder
    PART_COSTS[kind] = cost
    if example is not None:
        PART_EXAMPLES[kind] = example


def _seeded(build: Callable[[], Any], seed: int = 0) -> Any:
    """Call ``build`` with torch's global generator seeded, leaving the caller's state alone."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_part(config: BlockConfig):
    """A (reproducibly) randomly initialised standalone ``nn.Module`` of a part, in eval mode."""
    from nas_search.spaces.static import initialise_weights

    def build():
        module = PART_BUILDERS[config.op](config)
        initialise_weights(module)
        return module.eval()

    return _seeded(build)


def _build_classifier(space: SearchSpace, spec: ArchSpec, num_classes: int | None, input_size: int):
    from nas_search.spaces.static import build_static_model

    return build_static_model(space.resolve(spec, num_classes=num_classes))


def build_subnet(space: SearchSpace, spec: ArchSpec, num_classes: int | None = None, input_size: int | None = None):
    """A (reproducibly) randomly initialised standalone model of ``spec`` (what a
    deployment runtime runs: a detector without pre- and post-processing), in eval mode."""
    size = space.input_size if input_size is None else input_size
    builder = _table_task(space).build
    return _seeded(lambda: builder(space, spec, num_classes, size).eval())


def _stem_cost(config: BlockConfig) -> tuple[Cost, int, int]:
    size = config.output_size
    cost = conv_norm(config.in_channels, config.out_channels, config.kernel, size)
    traffic = (config.in_channels * config.input_size**2 + config.out_channels * size * size) * 4
    return cost, traffic, 1


def _head_cost(config: BlockConfig) -> tuple[Cost, int, int]:
    size = config.input_size
    cost = conv_norm(config.in_channels, config.out_channels, 1, size)
    cost += Cost(config.out_channels * size * size, 0)
    cost += Cost(config.out_channels * config.num_classes, config.out_channels * config.num_classes + config.num_classes)
    traffic = (config.in_channels + 2 * config.out_channels) * size * size * 4 + config.out_channels * 4
    return cost, traffic, 3


def _block_cost(config: BlockConfig) -> tuple[Cost, int, int]:
    block = config.resolved_block()
    cost, _ = BLOCK_COSTS[config.op](block, config.input_size)
    return (cost, *block_layer_stats(block, config.input_size))


#: (FLOPs and params, activation traffic in bytes, fused layers) of each kind of part.
PART_COSTS: dict[str, Callable[[BlockConfig], tuple[Cost, int, int]]] = {
    "stem": _stem_cost,
    "head": _head_cost,
    **{op: _block_cost for op in BLOCK_OPERATIONS},
}


@dataclass(frozen=True)
class PartFeatures:
    """Analytic features of one part: FLOPs (= MACs), parameters, activation traffic
    (bytes read plus written) and the number of fused layers (kernel launches)."""

    flops: int
    params: int
    traffic_bytes: int
    layers: int


_FEATURE_CACHE: dict[str, PartFeatures] = {}


def part_features(config: BlockConfig) -> PartFeatures:
    """Features of a part (cached by key)."""
    cached = _FEATURE_CACHE.get(config.key)
    if cached is None:
        cost, traffic, layers = PART_COSTS[config.op](config)
        cached = _FEATURE_CACHE[config.key] = PartFeatures(cost.flops, cost.params, traffic, layers)
    return cached


def backbone_parts(network: ResolvedNetwork, input_size: int, stages: int | None = None) -> tuple[list[BlockConfig], list[int]]:
    """The stem and every block of the first ``stages`` stages (default: all) of a
    resolved network, each with its input size, and each stage's output size."""
    size = output_size(input_size, 3, network.stem_stride)
    parts = [BlockConfig("stem", network.input_channels, network.stem_channels, input_size, kernel=3, stride=network.stem_stride)]
    sizes = []
    for stage in network.stages[:stages]:
        for block in stage:
            parts.append(BlockConfig.from_block(block, size))
            size = output_size(size, block.spec.kernel, block.stride)
        sizes.append(size)
    return parts, sizes


def network_parts(network: ResolvedNetwork, input_size: int) -> list[BlockConfig]:
    """Stem, every block and the head of a resolved network, each with its input size."""
    parts, sizes = backbone_parts(network, input_size)
    parts.append(BlockConfig("head", network.last_channels, network.head_channels, sizes[-1], num_classes=network.num_classes))
    return parts


def restrict_widths(space: SearchSpace, widths: Sequence[float] | None) -> SearchSpace:
    """The same space (same name) with every block's width ratios limited to ``widths``,
    for a quick partial profile. ``None`` returns the space unchanged."""
    if not widths:
        return space
    wanted = set(float(width) for width in widths)
    stages = []
    for index, stage in enumerate(space.stages):
        kept = tuple(width for width in stage.widths if width in wanted)
        if not kept:
            raise UserError(
                f"--widths {','.join(f'{width:g}' for width in sorted(wanted))} leaves no width for stage {index} of "
                f"space {space.name!r}; allowed: some of {', '.join(f'{width:g}' for width in stage.widths)}"
            )
        stages.append(replace(stage, widths=kept))
    detector = getattr(space, "detector", None)
    if detector is None:
        return replace(space, stages=tuple(stages))
    narrowed = {}
    for name in ("neck_widths", "head_widths"):
        kept = tuple(width for width in getattr(detector, name) if width in wanted)
        if not kept:
            raise UserError(
                f"--widths {','.join(f'{width:g}' for width in sorted(wanted))} leaves no {name[:-1].replace('_', ' ')} "
                f"of space {space.name!r}; allowed: some of {', '.join(f'{width:g}' for width in getattr(detector, name))}"
            )
        narrowed[name] = kept
    return replace(space, stages=tuple(stages), detector=replace(detector, **narrowed))


def distinct_blocks(
    space: SearchSpace, input_size: int | None = None, channel_divisor: int = 8, num_classes: int | None = None
) -> list[BlockConfig]:
    """Every distinct part (stem, blocks, head; a detector's neck and head parts) any
    subnet of ``space`` can contain at ``input_size`` (default: the deployment size), in
    network order."""
    input_size = space.input_size if input_size is None else input_size
    classes = space.num_classes if num_classes is None else num_classes
    found: dict[str, BlockConfig] = {}
    for config in _table_task(space).distinct(space, input_size, channel_divisor, classes):
        found.setdefault(config.key, config)
    return list(found.values())


def distinct_backbone_parts(
    space: SearchSpace, input_size: int, channel_divisor: int = 8, stages: int | None = None
) -> tuple[list[BlockConfig], list[tuple[list[int], int]]]:
    """Every distinct stem and block of the first ``stages`` stages (default: all) at
    ``input_size``, and each stage's possible output widths and its output size.

    A stage's first block sees any output width of the previous stage (or of the stem) and
    the stage's stride; later blocks see the stage's own widths and stride 1. SCC choices
    whose groups do not divide the input channels are invalid in the space and skipped.
    """
    found: list[BlockConfig] = []
    keep = found.append
    stage_outputs: list[tuple[list[int], int]] = []
    size = output_size(input_size, 3, space.stem_stride)
    previous = sorted({scaled_channels(space.stem_channels, width, channel_divisor) for width in space.stem_widths})
    for channels in previous:
        keep(BlockConfig("stem", 3, channels, input_size, kernel=3, stride=space.stem_stride))
    for stage_index, stage in enumerate(space.stages[:stages]):
        outputs = sorted({scaled_channels(stage.max_channels, width, channel_divisor) for width in stage.widths})
        stage_output_size = output_size(size, 3, stage.stride)
        positions = [0] + ([1] if stage.max_depth > 1 else [])
        for position in positions:
            inputs = previous if position == 0 else outputs
            stride = stage.stride if position == 0 else 1
            block_input_size = size if position == 0 else stage_output_size
            for block_spec in space.block_choices(stage_index):
                out_channels = scaled_channels(stage.max_channels, block_spec.width, channel_divisor)
                for in_channels in inputs:
                    if block_spec.op == "scc" and in_channels % block_spec.groups:
                        continue
                    hidden = hidden_channels(block_spec, in_channels, out_channels, channel_divisor)
                    squeeze = scaled_channels(hidden / 4, 1.0, channel_divisor) if block_spec.squeeze_excite else 0
                    block = ResolvedBlock(
                        spec=block_spec, in_channels=in_channels, out_channels=out_channels, stride=stride,
                        hidden_channels=hidden, squeeze_excite_channels=squeeze,
                        residual=has_residual(block_spec, position, in_channels, out_channels, stride),
                    )
                    keep(BlockConfig.from_block(block, block_input_size))
        previous, size = outputs, stage_output_size
        stage_outputs.append((outputs, size))
    return found, stage_outputs


def _distinct_classifier_parts(space: SearchSpace, input_size: int, channel_divisor: int, classes: int) -> list[BlockConfig]:
    parts, stage_outputs = distinct_backbone_parts(space, input_size, channel_divisor)
    last_widths, size = stage_outputs[-1]
    for last in last_widths:
        for width in space.head_widths:
            head = scaled_channels(space.head_channels, width, channel_divisor)
            parts.append(BlockConfig("head", last, head, size, num_classes=classes))
    return parts


@dataclass(frozen=True)
class TableTask:
    """How latency tables handle the networks of one task (``classify``, ``detect``).

    Attributes:
        parts: ``(resolved model, input size) -> parts``, in execution order.
        distinct: ``(space, input size, channel divisor, classes) -> every distinct part``.
        build: ``(space, spec, classes, input size) -> the whole standalone module``.
        extra_features: ``(resolved model, input size) -> (FLOPs, params, activation bytes,
            fused layers)`` of what runs outside the parts (e.g. a detector's final joins).
        check_input_size: raises :class:`UserError` for an input size the task's
            networks cannot take (a detector's must be a multiple of 32).
    """

    parts: Callable[[Any, int], list[BlockConfig]]
    distinct: Callable[[SearchSpace, int, int, int], list[BlockConfig]]
    build: Callable[[SearchSpace, ArchSpec, int | None, int], Any]
    extra_features: Callable[[Any, int], tuple[int, int, int, int]] | None = None
    check_input_size: Callable[[int], Any] | None = None


#: Tasks whose spaces latency tables can be profiled for; ``detect`` is registered by
#: ``nas_search.tasks.detect.latency``.
TABLE_TASKS: dict[str, TableTask] = {
    "classify": TableTask(parts=network_parts, distinct=_distinct_classifier_parts, build=_build_classifier),
}


def register_table_task(task: str, handler: TableTask) -> None:
    """Make latency tables work for spaces of ``task``."""
    TABLE_TASKS[task] = handler


def _table_task(space: SearchSpace) -> TableTask:
    if space.task not in TABLE_TASKS:
        raise UserError(f"space {space.name!r} (task {space.task}) has no latency table support; accepted tasks: "
                        f"{', '.join(TABLE_TASKS)}")
    return TABLE_TASKS[space.task]


def check_table_input_size(space: SearchSpace, input_size: int) -> None:
    """Raise :class:`UserError` when the space's networks cannot take ``input_size``."""
    task = _table_task(space)
    if task.check_input_size is not None:
        task.check_input_size(input_size)


def model_parts(space: SearchSpace, model: Any, input_size: int) -> list[BlockConfig]:
    """The timed parts of a resolved model of ``space`` (any task with table support)."""
    return _table_task(space).parts(model, input_size)


# ====================================================================================
# Runtimes and timing


@contextmanager
def measurement_settings(threads: int) -> Iterator[None]:
    """Run the body with ``threads`` torch threads and denormal floats flushed to zero,
    restoring both afterwards.

    Randomly initialised networks produce denormal activations that slow some kernels
    several-fold (measured here: one onnxruntime instance of a 0.24 ms subnet ran at
    0.45 ms); trained weights rarely do, so both runtimes flush them while profiling.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        torch.set_flush_denormal(False)


def _compile_torch(module, example) -> Any:
    return module


def _inputs(example) -> tuple:
    """A module's example as a tuple of arguments: a tuple is several inputs (a part may
    take several tensors); anything else, a list of images for a torchvision detector
    included, is the one input."""
    return example if isinstance(example, tuple) else (example,)


def _instantiate_torch(module, example, threads: int) -> Callable[[], Any]:
    import copy

    import torch

    instance = copy.deepcopy(module)  # its own weight buffers, at new addresses
    inputs = _inputs(example)

    def run() -> Any:
        with torch.inference_mode():
            return instance(*inputs)

    return run


def export_onnx_bytes(module, example) -> bytes:
    """The ONNX bytes of a module (TorchScript exporter, opset 17, warnings silenced); its
    inputs are named ``input`` (one) or ``input0``, ``input1``, ... (several)."""
    import torch

    inputs = _inputs(example)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, inputs, buffer, input_names=_input_names(len(inputs)), opset_version=17, dynamo=False,
        )
    return buffer.getvalue()


def _input_names(count: int) -> list[str]:
    return ["input"] if count == 1 else [f"input{index}" for index in range(count)]


def _compile_onnxruntime(module, example) -> bytes:
    return export_onnx_bytes(module, example)


def _instantiate_onnxruntime(model_bytes: bytes, example, threads: int) -> Callable[[], Any]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.set_denormal_as_zero", "1")  # see measurement_settings
    session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    inputs = _inputs(example)
    feed = {name: tensor.numpy() for name, tensor in zip(_input_names(len(inputs)), inputs)}
    return lambda: session.run(None, feed)


def _torch_versions() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__}


def _onnxruntime_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "torch (exporter)": torch.__version__}


@dataclass(frozen=True)
class Runtime:
    """How a module is run on the local CPU: ``compile(module, example)`` converts it once
    (the ONNX export), ``instantiate(compiled, example, threads)`` makes one independent
    instance (an onnxruntime session, a copy of the module) and returns a zero-argument
    callable running one batch-1 inference."""

    name: str
    description: str
    compile: Callable[[Any, Any], Any]
    instantiate: Callable[[Any, Any, int], Callable[[], Any]]
    versions: Callable[[], dict[str, str]]

    def prepare(self, module, example, threads: int) -> Callable[[], Any]:
        """One instance of ``module``, ready to run."""
        return self.instantiate(self.compile(module, example), example, threads)


#: Runtimes the local CPU can be profiled with.
RUNTIMES: dict[str, Runtime] = {
    "onnxruntime": Runtime("onnxruntime", "ONNX export (opset 17) run by onnxruntime's CPU provider",
                           _compile_onnxruntime, _instantiate_onnxruntime, _onnxruntime_versions),
    "torch": Runtime("torch", "PyTorch eager, inference mode", _compile_torch, _instantiate_torch, _torch_versions),
}


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``; :class:`UserError` listing the runtimes otherwise."""
    if name not in RUNTIMES:
        raise UserError(f"unknown runtime {name!r}; accepted: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


#: Clocks a sample can be read with. ``thread_cpu`` (CPU time of the calling thread) is
#: what the latency would be on an idle core: both runtimes compute in the calling thread
#: when given one intra-op thread, and time spent preempted by other processes is not
#: counted. On a shared 2-core machine it cut the spread of repeated samples several-fold
#: against the wall clock. With more threads only the wall clock measures latency.
CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "thread_cpu": time.thread_time,
}


@dataclass(frozen=True)
class TimingOptions:
    """How a latency is measured.

    Attributes:
        warmup: untimed runs of each module first (also used to calibrate ``loops``).
        repeats: timed samples per module; the median is the latency.
        min_sample_ms: a sample loops a module enough times to last at least this long
            (so that timer resolution does not matter for tiny blocks).
        max_loops: upper bound on the loops per sample.
        clock: one of :data:`CLOCKS`. ``auto`` is ``thread_cpu`` with one thread and
            ``wall`` otherwise.
        instances: independent instances of each module (onnxruntime sessions, module
            copies), each timed with ``repeats`` samples; the latency is the median of
            their medians. One instance of a small network can run much slower than
            another for its whole life (memory placement): on this CPU, five fresh
            onnxruntime sessions of one 0.49 ms subnet measured 0.47 to 0.76 ms, while one
            session timed five times stayed within 4%.
    """

    warmup: int = 3
    repeats: int = 15
    min_sample_ms: float = 1.0
    max_loops: int = 200
    clock: str = "auto"
    instances: int = 1

    def __post_init__(self) -> None:
        if self.warmup < 1 or self.repeats < 1 or self.instances < 1:
            raise UserError(f"timing warmup={self.warmup}, repeats={self.repeats}, instances={self.instances} are "
                            "invalid; allowed: at least 1 each")
        if self.clock != "auto" and self.clock not in CLOCKS:
            raise UserError(f"timing clock {self.clock!r} is invalid; allowed: auto, {', '.join(CLOCKS)}")

    def clock_for(self, threads: int) -> str:
        """The clock actually used at ``threads`` intra-op threads."""
        if self.clock != "auto":
            return self.clock
        return "thread_cpu" if threads == 1 else "wall"


@dataclass(frozen=True)
class Timing:
    """The median and minimum of the samples of one module, in milliseconds."""

    median_ms: float
    min_ms: float


def time_interleaved(
    runs: Sequence[Callable[[], Any]], options: TimingOptions = TimingOptions(), seed: int = 0, threads: int = 1
) -> list[Timing]:
    """Time several callables in interleaved rounds (each round runs every callable once,
    in a shuffled order), so that load from other processes is shared among them.

    Each timed sample of an interleaved callable follows one untimed run of it: the
    callable timed just before has evicted its weights and activations from the caches,
    and a cold run of a small network measured up to 3x its steady-state latency here.
    """
    clock = CLOCKS[options.clock_for(threads)]
    loops = []
    for run in runs:
        started = clock()
        for _ in range(options.warmup):
            run()
        per_call = max((clock() - started) / options.warmup, 1e-7)
        loops.append(max(1, min(options.max_loops, math.ceil(options.min_sample_ms / 1000 / per_call))))
    samples: list[list[float]] = [[] for _ in runs]
    interleaved = len(runs) > 1
    order = list(range(len(runs)))
    shuffler = random.Random(seed)
    for _ in range(options.repeats):
        shuffler.shuffle(order)
        for index in order:
            run, count = runs[index], loops[index]
            if interleaved:
                run()  # untimed: the previous callable of the round has evicted this one's data
            started = clock()
            for _ in range(count):
                run()
            samples[index].append((clock() - started) * 1000 / count)
    return [Timing(statistics.median(values), min(values)) for values in samples]


def measure_modules(
    modules: Sequence[tuple[Any, Any]], runtime: str, threads: int, options: TimingOptions = TimingOptions(), seed: int = 0
) -> list[Timing]:
    """Latency of ``(module, example input)`` pairs on the local CPU with ``runtime``."""
    chosen = get_runtime(runtime)
    with measurement_settings(threads):
        compiled = [chosen.compile(module, example) for module, example in modules]
        rounds = []
        for instance in range(options.instances):
            runs = [chosen.instantiate(item, example, threads) for item, (_, example) in zip(compiled, modules)]
            rounds.append(time_interleaved(runs, options, seed + 7919 * instance, threads))
            del runs  # free this instance before the next is made
    if options.instances == 1:
        return rounds[0]
    return [
        Timing(statistics.median(timing.median_ms for timing in timings), min(timing.min_ms for timing in timings))
        for timings in zip(*rounds)
    ]


def part_example(config: BlockConfig):
    """A random batch-1 input of a part (a tuple of tensors for a part with several inputs)."""
    import torch

    if config.op in PART_EXAMPLES:
        return PART_EXAMPLES[config.op](config)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, config.in_channels, config.input_size, config.input_size, generator=generator)


def local_hardware() -> str:
    """A one-line description of this machine's CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        else:
            name = platform.processor() or platform.machine()
    except OSError:
        name = platform.processor() or platform.machine()
    import os

    return f"{name} ({os.cpu_count()} logical cores, {platform.machine()})"


# ====================================================================================
# The table file


@dataclass(frozen=True)
class BlockMeasurement:
    """A table entry: a part and its measured latency."""

    config: BlockConfig
    latency_ms: float
    min_ms: float


@dataclass(frozen=True)
class SubnetMeasurement:
    """A whole subnet and its measured latency."""

    spec: ArchSpec
    latency_ms: float
    min_ms: float


@dataclass
class LatencyTable:
    """A latency lookup table of one space on one device, with whole-subnet measurements.

    Attributes:
        space / device / hardware / runtime / threads: what was profiled where.
        input_size / channel_divisor / num_classes: the deployment shape profiled.
        versions: library versions; created / updated: ISO dates (UTC).
        timing: the timing options used; widths: width subset profiled (None = all).
        distinct_blocks: number of distinct parts of the (possibly restricted) space.
        entries: measured parts by key; subnets: measured whole subnets.
    """

    space: str
    device: str
    hardware: str
    runtime: str
    threads: int
    input_size: int
    channel_divisor: int = 8
    num_classes: int = 10
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    timing: dict[str, Any] = field(default_factory=dict)
    widths: tuple[float, ...] | None = None
    distinct_blocks: int = 0
    entries: dict[str, BlockMeasurement] = field(default_factory=dict)
    subnets: list[SubnetMeasurement] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``device/runtime/Nthread(s)``, used as a cost model's ``device``."""
        return f"{self.device}/{self.runtime}/{self.threads}thread{'s' if self.threads != 1 else ''}"

    def add_entry(self, config: BlockConfig, timing: Timing) -> None:
        """Record a measured part."""
        self.entries[config.key] = BlockMeasurement(config, timing.median_ms, timing.min_ms)

    def add_subnet(self, spec: ArchSpec, timing: Timing) -> None:
        """Record a measured whole subnet."""
        self.subnets.append(SubnetMeasurement(spec, timing.median_ms, timing.min_ms))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the file format)."""
        return {
            "format": TABLE_FORMAT,
            "format_version": TABLE_FORMAT_VERSION,
            "space": self.space,
            "device": self.device,
            "hardware": self.hardware,
            "runtime": self.runtime,
            "threads": self.threads,
            "input_size": self.input_size,
            "channel_divisor": self.channel_divisor,
            "num_classes": self.num_classes,
            "versions": dict(self.versions),
            "created": self.created,
            "updated": self.updated,
            "timing": dict(self.timing),
            "widths": None if self.widths is None else list(self.widths),
            "distinct_blocks": self.distinct_blocks,
            "blocks": [
                {**entry.config.to_dict(), "latency_ms": round(entry.latency_ms, 6), "min_ms": round(entry.min_ms, 6)}
                for entry in self.entries.values()
            ],
            "subnets": [
                {"arch": str(item.spec), "spec": item.spec.to_dict(), "latency_ms": round(item.latency_ms, 6),
                 "min_ms": round(item.min_ms, 6)}
                for item in self.subnets
            ],
        }

    def save(self, path: str | Path) -> Path:
        """Write the table atomically as JSON."""
        self.updated = _now()
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    def check(self, *, space: str | None = None, runtime: str | None = None, device: str | None = None,
              input_size: int | None = None, threads: int | None = None, source: str = "latency table") -> None:
        """Raise :class:`UserError` when the table does not match what is asked for."""
        wanted = {"space": space, "runtime": runtime, "device": device, "input_size": input_size, "threads": threads}
        for name, value in wanted.items():
            actual = getattr(self, name)
            if value is not None and value != actual:
                raise UserError(
                    f"{source} was profiled for {name} {actual!r}, not {value!r}; profile one with "
                    f"`nas-search profile` for {name} {value!r} or pass a matching table"
                )


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _positive_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{what}={value!r} is invalid; allowed: a positive number of milliseconds")
    return float(value)


_REQUIRED_TYPES: dict[str, type | tuple[type, ...]] = {
    "space": str, "device": str, "hardware": str, "runtime": str, "threads": int, "input_size": int,
    "channel_divisor": int, "num_classes": int, "blocks": list, "subnets": list,
}


def table_from_dict(data: Any, source: str = "latency table") -> LatencyTable:
    """Parse and check the file format; every problem is a one-line :class:`UserError`."""
    if not isinstance(data, Mapping) or data.get("format") != TABLE_FORMAT:
        raise UserError(f"{source} is not a nas-search latency table (expected a JSON object with format {TABLE_FORMAT!r})")
    if data.get("format_version") != TABLE_FORMAT_VERSION:
        raise UserError(f"{source} has format_version {data.get('format_version')!r}; supported: {TABLE_FORMAT_VERSION}")
    for name, expected in _REQUIRED_TYPES.items():
        value = data.get(name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise UserError(f"{source} field {name}={value!r} is missing or invalid; expected {getattr(expected, '__name__', expected)}")
    if data["runtime"] not in RUNTIMES and data["device"] == "cpu":
        raise UserError(f"{source} has runtime {data['runtime']!r}; accepted for device 'cpu': {', '.join(RUNTIMES)}")
    table = LatencyTable(
        space=data["space"], device=data["device"], hardware=data["hardware"], runtime=data["runtime"],
        threads=data["threads"], input_size=data["input_size"], channel_divisor=data["channel_divisor"],
        num_classes=data["num_classes"], versions=dict(data.get("versions") or {}), created=str(data.get("created", "")),
        updated=str(data.get("updated", "")), timing=dict(data.get("timing") or {}),
        widths=None if data.get("widths") is None else tuple(float(width) for width in data["widths"]),
        distinct_blocks=int(data.get("distinct_blocks") or 0),
    )
    for index, row in enumerate(data["blocks"]):
        if not isinstance(row, Mapping):
            raise UserError(f"{source} blocks[{index}] is not an object")
        row = dict(row)
        latency = _positive_number(row.pop("latency_ms", None), f"{source} blocks[{index}].latency_ms")
        minimum = _positive_number(row.pop("min_ms", latency), f"{source} blocks[{index}].min_ms")
        try:
            config = BlockConfig.from_dict(row)
        except UserError as error:
            raise UserError(f"{source} blocks[{index}]: {error}") from None
        table.entries[config.key] = BlockMeasurement(config, latency, minimum)
    for index, row in enumerate(data["subnets"]):
        if not isinstance(row, Mapping) or "spec" not in row:
            raise UserError(f"{source} subnets[{index}] is not an object with a 'spec'")
        latency = _positive_number(row.get("latency_ms"), f"{source} subnets[{index}].latency_ms")
        minimum = _positive_number(row.get("min_ms", latency), f"{source} subnets[{index}].min_ms")
        try:
            spec = ArchSpec.from_dict(row["spec"])
        except UserError as error:
            raise UserError(f"{source} subnets[{index}]: {error}") from None
        if spec.space != table.space:
            raise UserError(f"{source} subnets[{index}] is an architecture of space {spec.space!r}, not {table.space!r}")
        table.subnets.append(SubnetMeasurement(spec, latency, minimum))
    return table


def load_table(path: str | Path) -> LatencyTable:
    """Read a latency table file (JSON)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latency table {missing_file(path)}: {path} (create one with `nas-search profile`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"latency table {path} is not valid JSON: {str(error).splitlines()[0]}") from None
    return table_from_dict(data, source=f"latency table {path}")


# ====================================================================================
# Profiling


@dataclass(frozen=True)
class ProfileOptions:
    """Everything :func:`profile_table` needs besides the space.

    Attributes:
        device: registry name of the device (``cpu`` is this machine).
        runtime: ``onnxruntime`` or ``torch``.
        threads: intra-op threads (fixed for the whole profile).
        input_size: deployment input size (default: the space's).
        widths: profile only these width ratios (a quick, partial table); None = all.
        subnets: random whole subnets to measure for the correction and its validation.
        seed: seed of the random subnets.
        chunk: parts prepared and timed together (interleaved) at a time.
        subnet_chunk: whole subnets timed together (1: one after the other).
        timing: warm-up and repeats.
        save_every_s: how often the half-built table is written.
    """

    device: str = "cpu"
    runtime: str = "onnxruntime"
    threads: int = 1
    input_size: int | None = None
    widths: tuple[float, ...] | None = None
    subnets: int = 100
    seed: int = 0
    chunk: int = 8
    subnet_chunk: int = 1
    timing: TimingOptions = TimingOptions()
    save_every_s: float = 10.0


@dataclass
class ProfileResult:
    """What a profile run did."""

    table: LatencyTable
    path: Path
    distinct_blocks: int
    measured_blocks: int
    resumed_blocks: int
    measured_subnets: int
    resumed_subnets: int
    seconds: float
    validation: dict[str, float] = field(default_factory=dict)


def sample_subnets(space: SearchSpace, count: int, seed: int, spread: bool = True) -> list[ArchSpec]:
    """``count`` random distinct subnets. With ``spread`` each is drawn with its own random
    size bias, which covers the space's whole cost range (as a budgeted search does);
    otherwise every choice is uniform (mid-sized subnets)."""
    rng = random.Random(seed)
    specs: dict[str, ArchSpec] = {}
    attempts = 0
    while len(specs) < count and attempts < count * 20:
        attempts += 1
        try:
            spec = space.sample(rng, bias=rng.random() if spread else None)
            space.resolve(spec)
        except UserError:
            continue
        specs.setdefault(spec.key, spec)
    return list(specs.values())


def _new_table(space: SearchSpace, options: ProfileOptions, input_size: int, distinct: int) -> LatencyTable:
    runtime = get_runtime(options.runtime)
    return LatencyTable(
        space=space.name, device=options.device, hardware=local_hardware(), runtime=options.runtime,
        threads=options.threads, input_size=input_size, channel_divisor=8, num_classes=space.num_classes,
        versions={"python": platform.python_version(), **runtime.versions()}, created=_now(),
        timing={**asdict(options.timing), "clock": options.timing.clock_for(options.threads),
                "statistic": "median of interleaved samples" if options.timing.instances == 1
                else f"median over {options.timing.instances} instances of the median of interleaved samples"},
        widths=options.widths, distinct_blocks=distinct,
    )


def profile_table(
    space: SearchSpace,
    out: str | Path,
    options: ProfileOptions = ProfileOptions(),
    *,
    progress: bool = True,
    blocks: Iterable[BlockConfig] | None = None,
    specs: Sequence[ArchSpec] | None = None,
) -> ProfileResult:
    """Profile the distinct parts of ``space`` and random whole subnets on the local CPU,
    writing (and resuming) the table at ``out``.

    ``blocks`` / ``specs`` replace the enumerated parts / the random subnets (e.g. to
    profile only what a set of architectures needs).
    """
    from nas_search.progress import progress_bar

    if options.threads < 1:
        raise UserError(f"--threads {options.threads} is invalid; accepted: a positive integer")
    get_runtime(options.runtime)
    started = time.perf_counter()
    input_size = space.input_size if options.input_size is None else options.input_size
    check_table_input_size(space, input_size)
    profiled_space = restrict_widths(space, options.widths)
    targets = list(blocks) if blocks is not None else distinct_blocks(profiled_space, input_size)
    out = Path(out)
    if out.exists():
        table = load_table(out)
        table.check(space=space.name, runtime=options.runtime, device=options.device, input_size=input_size,
                    threads=options.threads, source=f"existing latency table {out}")
    else:
        table = _new_table(space, options, input_size, len(targets))
    if blocks is None:
        table.distinct_blocks = max(table.distinct_blocks, len(targets))
    resumed_blocks = sum(config.key in table.entries for config in targets)
    todo = [config for config in targets if config.key not in table.entries]
    last_save = time.perf_counter()

    def maybe_save(force: bool = False) -> None:
        nonlocal last_save
        if force or time.perf_counter() - last_save >= options.save_every_s:
            table.save(out)
            last_save = time.perf_counter()

    subnet_specs = list(specs) if specs is not None else sample_subnets(profiled_space, options.subnets, options.seed)
    measured_keys = {item.spec.key for item in table.subnets}
    resumed_subnets = sum(spec.key in measured_keys for spec in subnet_specs)
    remaining = [spec for spec in subnet_specs if spec.key not in measured_keys]
    block_chunks = [todo[start : start + options.chunk] for start in range(0, len(todo), options.chunk)]
    subnet_chunks = [remaining[start : start + options.subnet_chunk] for start in range(0, len(remaining), options.subnet_chunk)]
    bar = progress_bar(len(todo) + len(remaining), f"profile {space.name} ({options.runtime}, {options.threads}t)", "item", progress)

    def measure_blocks(chunk: list[BlockConfig], seed: int) -> None:
        modules = [(build_part(config), part_example(config)) for config in chunk]
        for config, timing in zip(chunk, measure_modules(modules, options.runtime, options.threads, options.timing, seed)):
            table.add_entry(config, timing)

    def measure_specs(chunk: list[ArchSpec], seed: int) -> None:
        modules = [(build_subnet(space, spec, table.num_classes, input_size), _image(input_size)) for spec in chunk]
        for spec, timing in zip(chunk, measure_modules(modules, options.runtime, options.threads, options.timing, seed)):
            table.add_subnet(spec, timing)

    try:
        for step, (kind, chunk) in enumerate(_interleave(block_chunks, subnet_chunks)):
            (measure_blocks if kind == "blocks" else measure_specs)(chunk, step)
            bar.update(len(chunk))
            maybe_save()
        bar.close()
    finally:
        table.save(out)
    validation = cross_validate(table, space) if len(table.subnets) >= MIN_CORRECTION_SUBNETS * 2 else {}
    return ProfileResult(
        table=table, path=out, distinct_blocks=len(targets), measured_blocks=len(todo), resumed_blocks=resumed_blocks,
        measured_subnets=len(remaining), resumed_subnets=resumed_subnets, seconds=time.perf_counter() - started,
        validation=validation,
    )


def _interleave(block_chunks: list[list[BlockConfig]], subnet_chunks: list[list[ArchSpec]]) -> Iterator[tuple[str, list]]:
    """Block chunks with the subnet chunks spread evenly among them.

    The speed of a shared machine drifts over minutes; measuring the table entries and the
    whole subnets side by side keeps the correction from learning that drift."""
    total = len(subnet_chunks)
    placed = 0
    for index, chunk in enumerate(block_chunks):
        yield "blocks", chunk
        due = (index + 1) * total // len(block_chunks)
        while placed < due:
            yield "subnets", subnet_chunks[placed]
            placed += 1
    for chunk in subnet_chunks[placed:]:
        yield "subnets", chunk


def _image(input_size: int):
    import torch

    return torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))


def measure_subnets(
    space: SearchSpace, specs: Sequence[ArchSpec], runtime: str, threads: int, input_size: int | None = None,
    options: TimingOptions = TimingOptions(), chunk: int = 1, num_classes: int | None = None,
) -> list[Timing]:
    """Measured latency of whole subnets on the local CPU (interleaved in chunks);
    ``num_classes`` as in :func:`build_subnet` (default: the space's)."""
    size = space.input_size if input_size is None else input_size
    timings: list[Timing] = []
    for start in range(0, len(specs), chunk):
        modules = [(build_subnet(space, spec, num_classes, size), _image(size)) for spec in specs[start : start + chunk]]
        timings += measure_modules(modules, runtime, threads, options, seed=start)
    return timings


# ====================================================================================
# Prediction


#: Which number of a measurement a model uses: the median of the samples (the default) or
#: their minimum (what an undisturbed run takes; steadier on a busy machine).
STATISTICS: dict[str, Callable[["BlockMeasurement | SubnetMeasurement"], float]] = {
    "median": lambda measurement: measurement.latency_ms,
    "min": lambda measurement: measurement.min_ms,
}


def _check_statistic(statistic: str) -> str:
    if statistic not in STATISTICS:
        raise UserError(f"latency statistic {statistic!r} is invalid; accepted: {', '.join(STATISTICS)}")
    return statistic


@dataclass
class _KindFallback:
    """Non-negative fit ``latency ~ a * GFLOPs + b * MB of traffic + c * layers`` over one
    kind's entries, for parts missing from a partial table."""

    coefficients: np.ndarray

    @staticmethod
    def row(features: PartFeatures) -> list[float]:
        return [features.flops / 1e9, features.traffic_bytes / 1e6, float(features.layers)]

    def predict(self, features: PartFeatures) -> float:
        return float(np.asarray(self.row(features)) @ self.coefficients)


def _fit_fallbacks(table: LatencyTable, statistic: str) -> dict[str, _KindFallback]:
    from scipy.optimize import nnls

    grouped: dict[str, list[BlockMeasurement]] = {}
    for entry in table.entries.values():
        grouped.setdefault(entry.config.op, []).append(entry)
    fallbacks = {}
    for kind, entries in grouped.items():
        design = np.array([_KindFallback.row(part_features(entry.config)) for entry in entries])
        target = np.array([STATISTICS[statistic](entry) for entry in entries])
        weights = 1.0 / target  # relative error
        coefficients, _ = nnls(design * weights[:, None], target * weights)
        fallbacks[kind] = _KindFallback(coefficients)
    return fallbacks


#: Names of the correction features, in order: whole-network sums of per-part numbers
#: (the table latency, fused layers = kernel launches, FLOPs, activation traffic, weight
#: bytes). Per-kind latencies and counts were tried as well; on 80-subnet tables of this
#: machine they overfitted (5-fold share within 10% dropped by up to 0.15).
CORRECTION_FEATURES: tuple[str, ...] = ("lut_ms", "layers", "GFLOPs", "traffic_MB", "weights_MB")


@dataclass(frozen=True)
class LatencyPrediction:
    """A latency prediction with its parts.

    Attributes:
        latency_ms: the prediction (LUT sum plus correction).
        lut_sum_ms: the sum of the table entries (some may be estimated).
        parts: number of parts (stem, blocks, head).
        estimated_parts: parts not in the table, estimated from entries of their kind.
        corrected: whether a learned correction was applied.
    """

    latency_ms: float
    lut_sum_ms: float
    parts: int
    estimated_parts: int
    corrected: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class LatencyCorrection:
    """Ridge regression of ``measured - LUT sum`` on :data:`CORRECTION_FEATURES`
    (standardised), weighted by ``1 / measured^2`` so that it minimises relative error,
    with the ridge strength chosen by leave-one-out cross-validation. Its numbers are plain
    arrays, refit from the table's subnet measurements whenever a table is loaded."""

    mean: np.ndarray
    scale: np.ndarray
    coefficients: np.ndarray
    intercept: float
    alpha: float

    def predict(self, row: np.ndarray) -> float:
        """Correction in milliseconds for one feature row."""
        return float(((row - self.mean) / self.scale) @ self.coefficients + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers, for inspection."""
        return {
            "features": list(CORRECTION_FEATURES), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
            "coefficients": self.coefficients.tolist(), "intercept": self.intercept, "alpha": self.alpha,
        }


def fit_correction(rows: np.ndarray, lut_sums: np.ndarray, measured: np.ndarray) -> LatencyCorrection:
    """Fit the correction on feature rows (one per measured subnet)."""
    from sklearn.linear_model import RidgeCV

    mean = rows.mean(axis=0)
    scale = rows.std(axis=0)
    scale[scale == 0] = 1.0
    standardised = (rows - mean) / scale
    weights = 1.0 / measured**2
    weights = weights / weights.mean()
    model = RidgeCV(alphas=np.logspace(-3, 3, 25)).fit(standardised, measured - lut_sums, sample_weight=weights)
    return LatencyCorrection(mean, scale, np.asarray(model.coef_, dtype=float), float(model.intercept_), float(model.alpha_))


class LatencyModel:
    """Cost model: predicted batch-1 latency (ms) of an architecture on a profiled device.

    ``model(spec)`` returns milliseconds; :meth:`predict` also says how much of the
    prediction came from the table.

    Args:
        table: the device's latency table.
        space: the space the table was profiled for.
        correction: fit the learned correction (needs :data:`MIN_CORRECTION_SUBNETS`
            measured subnets); ``False`` gives the plain LUT sum.
        training: the subnet measurements to fit on (default: all of the table's).
        statistic: ``median`` (default) or ``min`` of the stored samples (:data:`STATISTICS`).
        num_classes: classes of the networks predicted (default: the table's, which its
            measurements were fitted with); parts that depend on it and are not in the table
            (the classifier or the detector's predictors) are estimated (:meth:`predict`).
    """

    unit = "ms"

    def __init__(self, table: LatencyTable, space: SearchSpace, *, correction: bool = True,
                 training: Sequence[SubnetMeasurement] | None = None, statistic: str = "median",
                 num_classes: int | None = None) -> None:
        if table.space != space.name:
            raise UserError(f"latency table is for space {table.space!r}, not {space.name!r}")
        if not table.entries:
            raise UserError(f"latency table for space {table.space!r} on {table.label} has no block entries")
        self.table, self.space, self.statistic = table, space, _check_statistic(statistic)
        self.num_classes = table.num_classes if num_classes is None else num_classes
        self._task = _table_task(space)
        self.name = "latency"
        self.device = table.label
        self.input_size = table.input_size
        self._value = STATISTICS[statistic]
        self._fallbacks: dict[str, _KindFallback] | None = None  # fitted on the first missing part
        measurements = list(table.subnets if training is None else training)
        self.training_subnets = len(measurements)
        self.correction: LatencyCorrection | None = None
        if correction and len(measurements) >= MIN_CORRECTION_SUBNETS:
            rows, sums = zip(*(self._features(item.spec, table.num_classes)[:2] for item in measurements))
            measured = np.array([self._value(item) for item in measurements])
            self.correction = fit_correction(np.array(rows), np.array(sums), measured)

    def _part_latency(self, config: BlockConfig) -> tuple[float, bool]:
        entry = self.table.entries.get(config.key)
        if entry is not None:
            return self._value(entry), False
        if self._fallbacks is None:
            self._fallbacks = _fit_fallbacks(self.table, self.statistic)
        fallback = self._fallbacks.get(config.op)
        if fallback is None:
            raise UserError(
                f"latency table for space {self.table.space!r} on {self.table.label} has no {config.op!r} entries, so "
                f"it cannot estimate {config.key}; profile the full space with `nas-search profile`"
            )
        return max(fallback.predict(part_features(config)), 1e-4), True

    def for_classes(self, num_classes: int | None) -> "LatencyModel":
        """The same table and correction, predicting networks with ``num_classes`` classes."""
        if num_classes is None or num_classes == self.num_classes:
            return self
        other = object.__new__(LatencyModel)
        other.__dict__.update(self.__dict__)
        other.num_classes = num_classes
        return other

    def _features(self, spec: ArchSpec, num_classes: int | None = None) -> tuple[np.ndarray, float, int, int]:
        """(correction feature row, LUT sum, number of parts, number of estimated parts)."""
        network = self.space.resolve(spec, num_classes=self.num_classes if num_classes is None else num_classes)
        parts = self._task.parts(network, self.input_size)
        total = 0.0
        estimated = layers = flops = traffic = params = 0
        if self._task.extra_features is not None:
            flops, params, traffic, layers = self._task.extra_features(network, self.input_size)
        for config in parts:
            latency, was_estimated = self._part_latency(config)
            total += latency
            estimated += was_estimated
            features = part_features(config)
            layers += features.layers
            flops, traffic, params = flops + features.flops, traffic + features.traffic_bytes, params + features.params
        row = np.array([total, layers, flops / 1e9, traffic / 1e6, params * 4 / 1e6])
        return row, total, len(parts), estimated

    def predict(self, spec: ArchSpec) -> LatencyPrediction:
        """Prediction with the LUT sum and the number of estimated parts."""
        row, total, parts, estimated = self._features(spec)
        latency = total
        if self.correction is not None:
            # The correction never takes a prediction below a third of the LUT sum.
            latency = max(total + self.correction.predict(row), total / 3)
        return LatencyPrediction(latency, total, parts, estimated, self.correction is not None)

    def __call__(self, spec: ArchSpec) -> float:
        return self.predict(spec).latency_ms

    def describe(self) -> str:
        """One line: device, table size and whether a correction is used."""
        correction = (
            f"LUT sum + correction fitted on {self.training_subnets} measured subnets" if self.correction is not None
            else f"LUT sum (no correction: {self.training_subnets} measured subnets, needs {MIN_CORRECTION_SUBNETS})"
        )
        return f"{self.device} on {self.table.hardware}: {len(self.table.entries)} table entries, {correction}"


class FlopsProportionalModel:
    """The baseline: ``latency = a * FLOPs + b`` fitted by least squares on measured subnets."""

    unit = "ms"

    def __init__(self, space: SearchSpace, measurements: Sequence[SubnetMeasurement], input_size: int | None = None,
                 statistic: str = "median") -> None:
        self.space, self.name, self.device = space, "flops_proportional", "fitted"
        self.input_size = space.input_size if input_size is None else input_size
        flops = np.array([self._flops(item.spec) for item in measurements])
        measured = np.array([STATISTICS[_check_statistic(statistic)](item) for item in measurements])
        design = np.stack([flops, np.ones_like(flops)], axis=1)
        self.slope, self.intercept = np.linalg.lstsq(design, measured, rcond=None)[0]

    def _flops(self, spec: ArchSpec) -> float:
        from nas_search.hw_models.flops import count_flops

        return count_flops(spec, self.space, self.input_size).flops / 1e9

    def __call__(self, spec: ArchSpec) -> float:
        return float(self.slope * self._flops(spec) + self.intercept)


def prediction_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Share of predictions within +-10% of the measurement, RMSE in percent of the
    measurement, and Spearman's rank correlation."""
    from scipy.stats import spearmanr

    predicted_array, measured_array = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    relative = (predicted_array - measured_array) / measured_array
    rho = spearmanr(predicted_array, measured_array).statistic if len(measured_array) > 2 else float("nan")
    return {
        "within_10pct": float(np.mean(np.abs(relative) <= 0.10)),
        "rmse_pct": float(np.sqrt(np.mean(relative**2)) * 100),
        "spearman": float(rho),
        "count": int(len(measured_array)),
    }


def cross_validate(table: LatencyTable, space: SearchSpace, folds: int = 5, statistic: str = "median") -> dict[str, float]:
    """K-fold validation of the model on the table's measured subnets (correction refit on
    the other folds each time)."""
    subnets = list(table.subnets)
    predicted: list[float] = []
    measured: list[float] = []
    for fold in range(folds):
        held_out = subnets[fold::folds]
        training = [item for index, item in enumerate(subnets) if index % folds != fold]
        model = LatencyModel(table, space, training=training, statistic=statistic)
        predicted += [model(item.spec) for item in held_out]
        measured += [STATISTICS[statistic](item) for item in held_out]
    return prediction_metrics(predicted, measured)


__all__ = [
    "BlockConfig",
    "BlockMeasurement",
    "CORRECTION_FEATURES",
    "FlopsProportionalModel",
    "LatencyCorrection",
    "LatencyModel",
    "LatencyPrediction",
    "LatencyTable",
    "ProfileOptions",
    "ProfileResult",
    "RUNTIMES",
    "STATISTICS",
    "SubnetMeasurement",
    "Timing",
    "TimingOptions",
    "cross_validate",
    "distinct_blocks",
    "load_table",
    "measure_modules",
    "check_table_input_size",
    "model_parts",
    "register_part_kind",
    "register_table_task",
    "TABLE_TASKS",
    "TableTask",
    "backbone_parts",
    "distinct_backbone_parts",
    "measure_subnets",
    "network_parts",
    "part_features",
    "prediction_metrics",
    "profile_table",
    "restrict_widths",
    "sample_subnets",
    "table_from_dict",
    "time_interleaved",
]
