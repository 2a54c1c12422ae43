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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nas_search.spaces.ops import BLOCK_KINDS, KindTable
from nas_search.spaces.ops.costs import BYTES_PER_ELEMENT, INPUT_TENSOR, TensorProgram, TensorStep, output_size
from nas_search.spaces.space import ResolvedBlock, ResolvedNetwork, SearchSpace
from nas_search.spec import ArchSpec


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

    def to_dict(self) -> dict[str, Any]:
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

#: The tensor program of each block op (a live view of ``BLOCK_KINDS[op].program``), in the
#: order its static module runs its layers.
BLOCK_PROGRAMS: KindTable[BlockProgram] = KindTable("program")


def block_program(program: TensorProgram, block: ResolvedBlock, source: str, size: int, prefix: str) -> tuple[str, int]:
    """Append the layers of one block reading ``source`` (``size`` x ``size``); returns the
    block's output tensor and size. Unknown ops raise ``KeyError``."""
    if block.spec.op not in BLOCK_KINDS:
        raise KeyError(f"no tensor program for block op {block.spec.op!r}; known: {', '.join(BLOCK_KINDS)}")
    return BLOCK_KINDS[block.spec.op].program(program, block, source, size, prefix)


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
        program: TensorProgram = space.network_costs.program(resolved, input_size)
        return program
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

    def for_classes(self, num_classes: int | None) -> MemoryModel:
        """The same model for networks with ``num_classes`` outputs."""
        return MemoryModel(self.space, self.input_size, num_classes)

    def __call__(self, spec: ArchSpec) -> float:
        return float(peak_of_program(model_program(self.space, spec, self.input_size, self.num_classes)).peak_bytes)


__all__ = [
    "BLOCK_PROGRAMS",
    "BYTES_PER_ELEMENT",
    "INPUT_TENSOR",
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
