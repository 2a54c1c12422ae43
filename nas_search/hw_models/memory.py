"""Peak activation memory of a network at batch 1, in fp32, estimated analytically.

A deployment runtime (onnxruntime, TFLite, a microcontroller's static planner) holds an
activation tensor from the layer that writes it until the last layer that reads it, and
reuses the memory afterwards.  The peak over the forward pass of the bytes held at one
time is what has to fit next to the weights (``--memory 20MB``).

The forward pass is written out as a *tensor program*: an ordered list of
:class:`TensorStep` s, one per fused layer, each reading named tensors and writing one new
tensor.  The liveness rule, applied by :func:`peak_of_program`:

* a *layer* is a convolution with its batch norm (folded) and its activation (in place),
  or one element-wise add / multiply, a concatenation, a pooling, or a linear layer;
* while a layer runs, its inputs and its output are live, together with every tensor
  written earlier that a later layer still reads: the block input of a residual block
  (held for the final add), the input of a slim module (held for its projected 1x1 skip),
  the squeezed tensor of an SSE block (read by both expand branches) and the first expand
  branch (held while the second runs, until the concatenation), the depthwise output of a
  squeeze-excite block (held for the gate multiplication);
* a tensor is freed right after its last reader; the network input counts until the stem
  has read it; adds and concatenations write a new tensor (no in-place reuse);
* ``flatten`` is a view (no bytes), dropout is the identity at inference.

Worked example: an inverted-residual block with 24 input channels, expansion 4 (96 hidden),
a 3x3 depthwise and a residual, at 56 x 56.  Expand: input 24 + output 96 channels live; the
depthwise: the block input (held) 24 + 96 + 96; project: 24 + 96 + 24; add: 24 + 24 + 24.
The block peak is ``216 * 56 * 56 * 4`` bytes = 2.71 MB, at the depthwise layer.

This is what the test suite checks against a measurement: running the extracted model
node by node through ``torch.fx.Interpreter`` (which frees values after their last use),
with batch norm replaced by the identity (as folding does), and summing the bytes of the
distinct storages alive at each node gives exactly the same peak.

Weights are not counted (they are a separate, constant cost: ``4 * params`` bytes in fp32).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from nas_search.hw_models.flops import output_size
from nas_search.spaces.space import ResolvedBlock, ResolvedNetwork, SearchSpace
from nas_search.spec import ArchSpec

#: Bytes per activation element (fp32).
BYTES_PER_ELEMENT = 4
#: Name of the network input in a tensor program.
INPUT_TENSOR = "input"


@dataclass(frozen=True)
class TensorStep:
    """One fused layer of the forward pass: reads ``inputs``, writes ``output``.

    Attributes:
        output: name of the tensor written (also the layer's name, e.g. ``stage2.block0.expand``).
        inputs: names of the tensors read.
        output_bytes: size of the written tensor in bytes.
    """

    output: str
    inputs: tuple[str, ...]
    output_bytes: int


@dataclass
class TensorProgram:
    """An ordered list of :class:`TensorStep` s plus the size of every tensor."""

    sizes: dict[str, int] = field(default_factory=dict)
    steps: list[TensorStep] = field(default_factory=list)

    def add_input(self, name: str, elements: int) -> str:
        """Declare a tensor that exists before the first step (the network input)."""
        self.sizes[name] = elements * BYTES_PER_ELEMENT
        return name

    def add(self, name: str, inputs: tuple[str, ...], elements: int) -> str:
        """Append a layer writing ``elements`` values from ``inputs``; returns its tensor name."""
        if name in self.sizes:
            raise ValueError(f"tensor {name!r} is written twice")
        unknown = [tensor for tensor in inputs if tensor not in self.sizes]
        if unknown:
            raise ValueError(f"layer {name!r} reads unknown tensor(s) {unknown}")
        self.sizes[name] = elements * BYTES_PER_ELEMENT
        self.steps.append(TensorStep(name, tuple(inputs), elements * BYTES_PER_ELEMENT))
        return name

    def traffic_bytes(self) -> int:
        """Activation bytes read plus written over all steps (a memory-traffic feature)."""
        return sum(step.output_bytes + sum(self.sizes[name] for name in step.inputs) for step in self.steps)


@dataclass(frozen=True)
class MemoryEstimate:
    """The peak of a tensor program.

    Attributes:
        peak_bytes: the largest number of activation bytes live at one time.
        peak_layer: the layer during which the peak occurs.
        live_tensors: the tensors live at the peak (inputs, output and held tensors).
    """

    peak_bytes: int
    peak_layer: str
    live_tensors: tuple[str, ...]

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"peak_bytes": self.peak_bytes, "peak_layer": self.peak_layer, "live_tensors": list(self.live_tensors)}


def peak_of_program(program: TensorProgram) -> MemoryEstimate:
    """Apply the liveness rule of this module to a tensor program."""
    last_reader: dict[str, int] = {}
    for index, step in enumerate(program.steps):
        for name in step.inputs:
            last_reader[name] = index
    live: dict[str, int] = {name: size for name, size in program.sizes.items() if name not in {s.output for s in program.steps}}
    best = MemoryEstimate(sum(live.values()), "(before the first layer)", tuple(live))
    for index, step in enumerate(program.steps):
        live[step.output] = step.output_bytes
        current = sum(live.values())
        if current > best.peak_bytes:
            best = MemoryEstimate(current, step.output, tuple(live))
        for name in set(step.inputs):
            if last_reader.get(name) == index:
                del live[name]
    return best


# ------------------------------------------------------------------------------ programs
BlockProgram = Callable[[TensorProgram, ResolvedBlock, str, int, str], tuple[str, int]]


def _inverted_residual(program: TensorProgram, block: ResolvedBlock, source: str, size: int, prefix: str) -> tuple[str, int]:
    hidden = block.hidden_channels
    out_size = output_size(size, block.spec.kernel, block.stride)
    expanded = program.add(f"{prefix}.expand", (source,), hidden * size * size)
    current = program.add(f"{prefix}.depthwise", (expanded,), hidden * out_size * out_size)
    if block.squeeze_excite_channels:
        pooled = program.add(f"{prefix}.se_pool", (current,), hidden)
        reduced = program.add(f"{prefix}.se_reduce", (pooled,), block.squeeze_excite_channels)
        gate = program.add(f"{prefix}.se_expand", (reduced,), hidden)
        current = program.add(f"{prefix}.se_scale", (current, gate), hidden * out_size * out_size)
    current = program.add(f"{prefix}.project", (current,), block.out_channels * out_size * out_size)
    if block.residual:
        current = program.add(f"{prefix}.add", (current, source), block.out_channels * out_size * out_size)
    return current, out_size


def _separable(program: TensorProgram, block: ResolvedBlock, source: str, size: int, prefix: str) -> tuple[str, int]:
    out_size = output_size(size, block.spec.kernel, block.stride)
    current = program.add(f"{prefix}.depthwise", (source,), block.in_channels * out_size * out_size)
    current = program.add(f"{prefix}.pointwise", (current,), block.out_channels * out_size * out_size)
    if block.residual:
        current = program.add(f"{prefix}.add", (current, source), block.out_channels * out_size * out_size)
    return current, out_size


def _squeeze_expand(program: TensorProgram, source: str, squeeze: int, size: int, prefix: str) -> str:
    pixels = size * size
    squeezed = program.add(f"{prefix}.squeeze", (source,), squeeze * pixels)
    pointwise = program.add(f"{prefix}.expand_pointwise", (squeezed,), 4 * squeeze * pixels)
    depthwise = program.add(f"{prefix}.expand_depthwise", (squeezed,), squeeze * pixels)
    separable = program.add(f"{prefix}.expand_separable", (depthwise,), 4 * squeeze * pixels)
    return program.add(f"{prefix}.concat", (pointwise, separable), 8 * squeeze * pixels)


def _slim(program: TensorProgram, block: ResolvedBlock, source: str, size: int, prefix: str) -> tuple[str, int]:
    squeeze, out_channels = block.hidden_channels, block.out_channels
    out_size = output_size(size, block.spec.kernel, block.stride)
    first = _squeeze_expand(program, source, squeeze, size, f"{prefix}.first")
    second = _squeeze_expand(program, first, squeeze, size, f"{prefix}.second")
    skip = program.add(f"{prefix}.skip", (source,), out_channels * size * size)
    current = program.add(f"{prefix}.add", (second, skip), out_channels * size * size)
    current = program.add(f"{prefix}.depthwise", (current,), out_channels * out_size * out_size)
    current = program.add(f"{prefix}.pointwise", (current,), out_channels * out_size * out_size)
    return current, out_size


#: The tensor program of each block op, in the order its static module runs its layers.
BLOCK_PROGRAMS: dict[str, BlockProgram] = {
    "mbconv": _inverted_residual,
    "dsc": _separable,
    "scc": _separable,
    "slim": _slim,
}


def block_program(program: TensorProgram, block: ResolvedBlock, source: str, size: int, prefix: str) -> tuple[str, int]:
    """Append the layers of one block reading ``source`` (``size`` x ``size``); returns the
    block's output tensor and size. Unknown ops raise ``KeyError``."""
    if block.spec.op not in BLOCK_PROGRAMS:
        raise KeyError(f"no tensor program for block op {block.spec.op!r}; known: {', '.join(BLOCK_PROGRAMS)}")
    return BLOCK_PROGRAMS[block.spec.op](program, block, source, size, prefix)


def network_program(network: ResolvedNetwork, input_size: int) -> TensorProgram:
    """The tensor program of a whole classifier: stem, every block, head and classifier."""
    program = TensorProgram()
    current = program.add_input(INPUT_TENSOR, network.input_channels * input_size * input_size)
    size = output_size(input_size, 3, network.stem_stride)
    current = program.add("stem", (current,), network.stem_channels * size * size)
    for stage_index, stage in enumerate(network.stages):
        for block_index, block in enumerate(stage):
            current, size = block_program(program, block, current, size, f"stage{stage_index}.block{block_index}")
    current = program.add("head", (current,), network.head_channels * size * size)
    current = program.add("pool", (current,), network.head_channels)
    program.add("classifier", (current,), network.num_classes)
    return program


def estimate_memory(network: ResolvedNetwork, input_size: int) -> MemoryEstimate:
    """Peak activation memory of a resolved network at ``input_size``, with the layer where
    it occurs."""
    return peak_of_program(network_program(network, input_size))


def peak_memory_bytes(network: ResolvedNetwork, input_size: int) -> int:
    """Peak activation bytes (fp32, batch 1) of a resolved network at ``input_size``."""
    return estimate_memory(network, input_size).peak_bytes


def block_layer_stats(block: ResolvedBlock, size: int) -> tuple[int, int]:
    """``(activation bytes read plus written, number of fused layers)`` of one block at
    input ``size``: two latency features."""
    program = TensorProgram()
    source = program.add_input("block_input", block.in_channels * size * size)
    block_program(program, block, source, size, "block")
    return program.traffic_bytes(), len(program.steps)


def model_program(space: SearchSpace, spec: ArchSpec, input_size: int, num_classes: int | None = None) -> TensorProgram:
    """The tensor program of ``spec`` in ``space`` (any task) at ``input_size``."""
    resolved = space.resolve(spec, num_classes=num_classes)
    if space.network_costs is not None:  # a space whose networks are not plain classifiers
        return space.network_costs.program(resolved, input_size)
    return network_program(resolved, input_size)


class MemoryModel:
    """Cost model: peak activation bytes (fp32, batch 1) at a fixed input size, for any
    space (its ``network_costs`` give the tensor program of networks that are not plain
    classifiers)."""

    unit = "bytes"
    device = "any"

    def __init__(self, space: SearchSpace, input_size: int | None = None, num_classes: int | None = None) -> None:
        self.space, self.num_classes = space, num_classes
        self.input_size = space.input_size if input_size is None else input_size
        self.name = "peak_memory"

    def for_classes(self, num_classes: int | None) -> "MemoryModel":
        """The same model for networks with ``num_classes`` outputs."""
        return MemoryModel(self.space, self.input_size, num_classes)

    def __call__(self, spec: ArchSpec) -> float:
        return float(peak_of_program(model_program(self.space, spec, self.input_size, self.num_classes)).peak_bytes)


__all__ = [
    "BLOCK_PROGRAMS",
    "MemoryEstimate",
    "MemoryModel",
    "TensorProgram",
    "TensorStep",
    "block_layer_stats",
    "estimate_memory",
    "model_program",
    "network_program",
    "peak_memory_bytes",
    "peak_of_program",
]
