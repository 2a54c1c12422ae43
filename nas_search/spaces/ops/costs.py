"""The pure records an op's cost arithmetic writes, below ``hw_models`` so that each op's
``BlockKind`` can hold its own FLOPs, layer listing and tensor program.

* :class:`Cost` and the FLOPs/parameter arithmetic of a conv, a batch norm and both
  (fvcore's convention, see :mod:`nas_search.hw_models.flops`);
* :class:`LayerCost`, one kernel a runtime launches, with the helpers that build it
  (:mod:`nas_search.hw_models.features`, :mod:`nas_search.hw_models.analytic`);
* :class:`TensorProgram`, the forward pass as named tensors for peak-memory estimates
  (:mod:`nas_search.hw_models.memory`).

The ``hw_models`` modules re-export every name defined here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------
# FLOPs and parameters


@dataclass
class Cost:
    """FLOPs and parameters of a part of a network."""

    flops: int = 0
    params: int = 0

    def __iadd__(self, other: Cost) -> Cost:
        self.flops += other.flops
        self.params += other.params
        return self


def output_size(size: int, kernel: int, stride: int) -> int:
    """Spatial output size of a 'same'-padded convolution."""
    padding = kernel // 2
    return (size + 2 * padding - kernel) // stride + 1


def conv(in_channels: int, out_channels: int, kernel: int, size: int, groups: int = 1, bias: bool = False) -> Cost:
    """Cost of a convolution whose output is ``size x size``."""
    weights = out_channels * (in_channels // groups) * kernel * kernel
    return Cost(weights * size * size, weights + (out_channels if bias else 0))


def batch_norm(channels: int, size: int) -> Cost:
    """Cost of an eval-mode BN over ``channels x size x size``."""
    return Cost(2 * channels * size * size, 2 * channels)


def conv_norm(in_channels: int, out_channels: int, kernel: int, size: int, groups: int = 1) -> Cost:
    """Conv followed by BN."""
    cost = conv(in_channels, out_channels, kernel, size, groups)
    cost += batch_norm(out_channels, size)
    return cost


# --------------------------------------------------------------------------------------
# Layer costs (kernels)


@dataclass(frozen=True)
class LayerCost:
    """The analytic cost of one kernel launched by the network.

    Attributes:
        kind: the kernel family, one of :data:`LAYER_KINDS`.
        stage: index of the stage the layer belongs to (0 = stem, last = head).
        macs: multiply-adds (= FLOPs in the fvcore convention).
        params: number of weights (and biases).
        activation_elements: elements read from input activations plus elements written.
    """

    kind: str
    stage: int
    macs: int
    params: int
    activation_elements: int

    @property
    def memory_elements(self) -> int:
        """Elements moved: input and output activations plus weights."""
        return self.activation_elements + self.params


#: The kernels of one block (a layer choice, a cell, a stem or a head), in order.
Block = tuple[LayerCost, ...]

#: Kernel families a layer can belong to.
LAYER_KINDS: tuple[str, ...] = (
    "conv",  # dense KxK convolution, K > 1
    "pointwise",  # dense 1x1 convolution
    "grouped_pointwise",  # grouped 1x1 convolution
    "depthwise",  # depthwise KxK convolution
    "pool",  # average pooling (local or global)
    "add",  # element-wise sum of two tensors
    "multiply",  # element-wise product (squeeze-excite scaling)
    "shuffle",  # channel shuffle (a memory copy)
    "linear",  # fully connected layer (also the 1x1 convs of squeeze-excite)
)


def convolution(
    *,
    stage: int,
    in_channels: int,
    out_channels: int,
    kernel: int,
    in_size: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
) -> tuple[LayerCost, int]:
    """Cost of a square convolution with "same" padding; returns ``(cost, out_size)``.

    ``out_size = ceil(in_size / stride)``, which is what padding ``kernel // 2`` gives for
    odd kernels.  MACs = ``out_channels * (in_channels / groups) * kernel^2 * out_size^2``.
    """
    out_size = -(-in_size // stride)
    weights = out_channels * (in_channels // groups) * kernel * kernel + (out_channels if bias else 0)
    macs = out_channels * (in_channels // groups) * kernel * kernel * out_size * out_size
    activations = in_channels * in_size * in_size + out_channels * out_size * out_size
    kind = _convolution_kind(in_channels=in_channels, out_channels=out_channels, kernel=kernel, groups=groups)
    return LayerCost(kind, stage, macs, weights, activations), out_size


def _convolution_kind(*, in_channels: int, out_channels: int, kernel: int, groups: int) -> str:
    if groups > 1 and groups == in_channels == out_channels:
        return "depthwise"
    if kernel == 1:
        return "grouped_pointwise" if groups > 1 else "pointwise"
    return "conv"


def elementwise(kind: str, *, stage: int, channels: int, size: int, inputs: int) -> LayerCost:
    """An element-wise kernel over a ``channels x size x size`` tensor with ``inputs`` inputs."""
    elements = channels * size * size
    return LayerCost(kind, stage, 0, 0, elements * (inputs + 1))


def pooling(*, stage: int, channels: int, in_size: int, out_size: int) -> LayerCost:
    """Average pooling from ``in_size`` to ``out_size`` pixels (zero FLOPs by convention)."""
    return LayerCost("pool", stage, 0, 0, channels * (in_size * in_size + out_size * out_size))


def linear(*, stage: int, in_features: int, out_features: int, bias: bool = True) -> LayerCost:
    """A fully connected layer on one vector."""
    weights = in_features * out_features + (out_features if bias else 0)
    return LayerCost("linear", stage, in_features * out_features, weights, in_features + out_features)


def append_convolution(
    layers: list[LayerCost],
    stage: int,
    in_channels: int,
    out_channels: int,
    kernel: int,
    size: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
) -> int:
    """Append the :func:`convolution` kernel to ``layers``; returns its output size."""
    cost, out_size = convolution(
        stage=stage,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel=kernel,
        in_size=size,
        stride=stride,
        groups=groups,
        bias=bias,
    )
    layers.append(cost)
    return out_size


# --------------------------------------------------------------------------------------
# Tensor programs

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


__all__ = [
    "BYTES_PER_ELEMENT",
    "INPUT_TENSOR",
    "LAYER_KINDS",
    "Block",
    "Cost",
    "LayerCost",
    "TensorProgram",
    "TensorStep",
    "append_convolution",
    "batch_norm",
    "conv",
    "conv_norm",
    "convolution",
    "elementwise",
    "linear",
    "output_size",
    "pooling",
]
