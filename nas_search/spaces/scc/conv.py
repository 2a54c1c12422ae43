"""Sliding-channel convolution (SCC, DSXplore, IPDPS'21): exact, FLOP-exact and fast on CPU.

Definition
----------
SCC is the pointwise stage of a depthwise-separable block. With ``Cin`` input channels,
``cg`` channel groups and overlap ratio ``co``, output channel ``c`` reads a cyclic window of
``L = Cin / cg`` consecutive input channels that starts at::

    start(c) = floor(c * (1 - co) * L) mod Cin

Its weight therefore has ``L`` entries per output channel, and it costs
``Cout * L * H * W`` FLOPs (one multiply-add is one FLOP, fvcore's convention). Weights are
stored *compact*, shape ``(Cout, L)``, in canonical order: row ``c`` is output channel ``c``
and column ``k`` is input channel ``window_index(...)[c, k] = (start(c) + k) mod Cin``.

The overlap as an exact fraction (the one deviation from DESIGN.md's wording)
------------------------------------------------------------------------------
``co`` is given with two decimals and is read as the *simplest fraction within half a
hundredth of it* (:func:`overlap_fraction`): 0.25 -> 1/4, 0.5 -> 1/2, and 0.33 -> 1/3. Taken
literally, 0.33 would be 33/100; then ``start(c)`` only repeats every ``100 * cg`` outputs,
so at the channel counts used here almost every output channel gets a window of its own
(400 distinct windows for 512 -> 512 channels at cg=4), and no schedule of dense kernels can
be both FLOP-exact and fast (with the PyTorch kernels or with the native one, whose row
blocks then hold one or two channels; see ``benchmarks/RESULTS.md``). With 1/3 the
starts repeat every ``3 * cg / gcd(2, 3 * cg)`` outputs (6 at cg=4), exactly like 1/4 (every
``4 * cg``) and 1/2 (every ``2 * cg``). The floor formula itself is unchanged, and
:func:`reference_sliding_channel_conv2d`, :func:`dense_mask` and :func:`window_index` all use
the same fraction.

How it runs fast
----------------
Because ``start(c + T) == start(c)`` for the period ``T`` above, the outputs fall into ``T``
*window classes*: class ``r`` holds outputs ``r, r + T, r + 2T, ...``, which all read the same
window. Every multiply-add is a real one (no masked zeros), so FLOPs are exact.

For float32 on the CPU the forward runs in one call of a native kernel
(:mod:`nas_search.spaces.scc.native`, built on first use with the system C++ compiler):
register-blocked SIMD products of up to four rows of one class by a block of pixels, reading
each window straight from ``x`` and writing each row straight to its canonical place, with
OpenMP threads over images, pixel blocks and channel blocks. It is faster than a grouped
1x1 conv of the same FLOPs on the benchmark shapes (``benchmarks/RESULTS.md``).

Without a compiler (or with ``NAS_SEARCH_SCC_NATIVE=0``), and for other dtypes and devices,
pure-PyTorch kernels run instead. A class is then one matrix product ``W[r::T] @ x[window]``
whose input is a *view* of ``x`` (no copy); only windows that wrap past the last channel read
from a small buffer that holds the last and first channels side by side. Two kernels
(precomputed schedule, cached per ``(Cin, Cout, cg, co)``; chosen per call by
:func:`_choose_kernel`; at best about as fast as a grouped 1x1 conv, see
``benchmarks/RESULTS.md``):

* one image: classes whose windows are evenly spaced run as one ``torch.bmm`` over
  overlapping strided views of ``x``, written into a contiguous buffer (so MKL's batched
  GEMM spreads them over the threads), and one row gather puts the buffer in canonical order;
* a batch: one ``bmm`` per class over all images (the class's weight rows are a strided
  view, broadcast over the batch), then one row gather.

Under ``torch.jit.trace`` (fvcore), ONNX export, ``torch.compile`` and ``torch.export`` the same
classes run as one ``conv2d`` per class on sliced windows, then the rows are interleaved into
canonical order: plain, exportable ops with the same exact FLOPs. Training uses the fast
forward with a hand-written backward in PyTorch (one product per class and contiguous run of
channels).

Only stride 1 and a 1x1 kernel are supported. Input is NCHW; channels-last input is
converted to contiguous NCHW first.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import cache, lru_cache
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from nas_search.errors import UserError
from nas_search.spaces.scc import native as scc_native

_HALF_HUNDREDTH = Fraction(1, 200)
_NATIVE_ROWS = 4  # output channels per row block of the native kernel (its MR)
_INPUT = "input"
_WRAP = "wrap"


# ---------------------------------------------------------------------------------------
# Definition: overlap fraction, window starts, index and mask
# ---------------------------------------------------------------------------------------


def _check_overlap(overlap: float) -> None:
    accepted = "accepted: a ratio in [0, 1) with two decimals, such as 0.25, 0.33, 0.5"
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not math.isfinite(overlap):
        raise UserError(f"SCC overlap {overlap!r} is not a number; {accepted}")
    if overlap < 0 or round(overlap * 100) >= 100:
        raise UserError(f"SCC overlap {overlap!r} is out of range; {accepted}")


def overlap_fraction(overlap: float | Fraction) -> Fraction:
    """The exact overlap ratio that ``overlap`` (given with two decimals) stands for.

    It is the fraction with the smallest denominator strictly within half a hundredth of
    ``overlap`` rounded to two decimals: 0.25 -> 1/4, 0.5 -> 1/2, 0.33 -> 1/3, 0.2 -> 1/5,
    0.3 -> 3/10. See the module docstring for why 0.33 is read as 1/3. A ``Fraction`` in
    ``[0, 1)`` is taken exactly as given (``Fraction(33, 100)`` is the literal reading).
    """
    if isinstance(overlap, Fraction):
        if not 0 <= overlap < 1:
            raise UserError(f"SCC overlap {overlap} is out of range; accepted: a ratio in [0, 1)")
        return overlap
    _check_overlap(overlap)
    return _simplest_fraction(round(overlap * 100))


@cache
def _simplest_fraction(hundredths: int) -> Fraction:
    target = Fraction(hundredths, 100)
    denominator = 1
    while True:
        candidate = Fraction(round(target * denominator), denominator)
        if abs(candidate - target) < _HALF_HUNDREDTH:
            return candidate
        denominator += 1


def _check_channels(in_channels: int, out_channels: int, groups: int) -> None:
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"SCC {name} {value!r} is invalid; accepted: a positive integer")
    if in_channels % groups:
        raise UserError(f"SCC groups {groups} does not divide in_channels {in_channels}; accepted: a divisor of {in_channels}")


def _configuration(
    in_channels: int, out_channels: int, groups: int, overlap: float | Fraction
) -> tuple[int, int, int, Fraction]:
    """Validated cache key: channels, groups and the exact overlap fraction."""
    _check_channels(in_channels, out_channels, groups)
    return in_channels, out_channels, groups, overlap_fraction(overlap)


@lru_cache(maxsize=256)
def _starts(in_channels: int, out_channels: int, groups: int, overlap: Fraction) -> tuple[int, ...]:
    stride = (1 - overlap) * (in_channels // groups)  # exact rational distance between starts
    return tuple((channel * stride.numerator) // stride.denominator % in_channels for channel in range(out_channels))


def window_starts(in_channels: int, out_channels: int, groups: int, overlap: float | Fraction) -> list[int]:
    """First input channel of each output channel's window:
    ``floor(c * (1 - co) * Cin / cg) mod Cin`` in exact rational arithmetic."""
    return list(_starts(*_configuration(in_channels, out_channels, groups, overlap)))


@lru_cache(maxsize=256)
def _window_index(in_channels: int, out_channels: int, groups: int, overlap: Fraction) -> torch.Tensor:
    length = in_channels // groups
    starts = _starts(in_channels, out_channels, groups, overlap)
    rows = [[(start + offset) % in_channels for offset in range(length)] for start in starts]
    return torch.tensor(rows, dtype=torch.long)


def window_index(in_channels: int, out_channels: int, groups: int, overlap: float | Fraction) -> torch.Tensor:
    """``(Cout, Cin / cg)`` long tensor: the input channel of each compact weight entry.

    Entry ``[c, k]`` is ``(start(c) + k) mod Cin``. A supernet gathers its compact weight with
    ``torch.gather(dense_weight[:Cout, :Cin], 1, window_index(...))``. The tensor is cached
    and shared between callers: do not modify it in place.
    """
    return _window_index(*_configuration(in_channels, out_channels, groups, overlap))


def dense_mask(in_channels: int, out_channels: int, groups: int, overlap: float | Fraction) -> torch.Tensor:
    """``(Cout, Cin)`` bool tensor, true where output ``c`` reads input ``i``."""
    mask = torch.zeros(out_channels, in_channels, dtype=torch.bool)
    mask.scatter_(1, window_index(in_channels, out_channels, groups, overlap), True)
    return mask


# ---------------------------------------------------------------------------------------
# Schedule: window classes and batched products, precomputed once per configuration
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WindowClass:
    """Outputs ``residue, residue + period, ...`` (``rows`` of them) share one window."""

    residue: int
    start: int
    rows: int


@dataclass(frozen=True)
class _Batch:
    """Window classes run as one ``bmm``: evenly spaced windows in one source tensor.

    ``source`` is the input itself or the small wrap buffer; ``offset`` is the first window's
    first channel in that source and ``step`` the distance between windows. The products land
    in rows ``[buffer_row, buffer_row + len(residues) * rows)`` of a per-sample buffer, in
    batch order. ``residue_step`` is set when the weight rows can be viewed without a copy
    (the residues form an increasing arithmetic progression).
    """

    source: str
    offset: int
    step: int
    residues: tuple[int, ...]
    rows: int
    buffer_row: int
    residue_step: int | None
    weight_size: tuple[int, int, int] = (0, 0, 0)  # view of the (possibly gathered) weight
    weight_stride: tuple[int, int, int] = (0, 0, 0)
    weight_offset: int = 0


@dataclass(frozen=True, eq=False)
class _Schedule:
    """Everything the kernels need for one ``(Cin, Cout, cg, co)``; built once, cached."""

    in_channels: int
    out_channels: int
    length: int
    period: int
    classes: tuple[_WindowClass, ...]
    wrap_head: int  # channels copied from the end of the input into the wrap buffer
    wrap_tail: int  # channels copied from the start of the input after them
    batches: tuple[_Batch, ...]
    gather_weight: bool  # some batch needs the weight rows gathered into batch order
    weight_order: tuple[int, ...]  # canonical weight row of each buffer row
    buffer_position: tuple[int, ...]  # buffer row of each canonical output channel

    def source_offset(self, window: _WindowClass) -> tuple[str, int]:
        """Which source tensor holds the window, and where it starts there."""
        return _source_offset(window, self.length, self.in_channels, self.wrap_head)

    def pieces(self, window: _WindowClass) -> list[tuple[int, int, int]]:
        """``(first weight column, first input channel, size)`` of the window's one or two
        contiguous runs of input channels (two when it wraps past the last channel)."""
        head = min(self.length, self.in_channels - window.start)
        runs = [(0, window.start, head)]
        if head < self.length:
            runs.append((head, 0, self.length - head))
        return runs


def _source_offset(window: _WindowClass, length: int, in_channels: int, wrap_head: int) -> tuple[str, int]:
    if window.start + length <= in_channels:
        return _INPUT, window.start
    return _WRAP, window.start - (in_channels - wrap_head)


def _period(in_channels: int, groups: int, overlap: Fraction) -> int:
    """Smallest ``T > 0`` with ``start(c + T) == start(c)`` for every ``c``: ``T * stride``
    must be a whole multiple of ``in_channels``."""
    stride = (1 - overlap) * (in_channels // groups)
    whole = stride.denominator * in_channels
    return whole // math.gcd(stride.numerator, whole)


def _extends(run: list[tuple[int, int]], offset: int) -> bool:
    """Whether a window at ``offset`` continues the evenly spaced run of ``(offset, residue)``."""
    gap = offset - run[-1][0]
    return gap >= 0 and (len(run) == 1 or gap == run[1][0] - run[0][0])


def _residue_step(residues: list[int]) -> int | None:
    if len(residues) == 1:
        return 1
    step = residues[1] - residues[0]
    if step < 1 or any(later - earlier != step for earlier, later in zip(residues, residues[1:])):
        return None
    return step


Located = tuple[_WindowClass, str, int]  # a class, its source tensor and its offset there


def _batch_by_offset(located: list[Located]) -> list[list[tuple[int, int]]]:
    """Classes grouped by (source, rows), sorted by window offset, split into evenly spaced
    runs: the fewest batches, though the weight rows may need a gather."""
    groups: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for window, source, offset in located:
        groups.setdefault((source, window.rows), []).append((offset, window.residue))
    runs: list[list[tuple[int, int]]] = []
    for key in sorted(groups):
        start = len(runs)
        for item in sorted(groups[key]):
            if len(runs) > start and _extends(runs[-1], item[0]):
                runs[-1].append(item)
            else:
                runs.append([item])
    return runs


def _batch_by_residue(located: list[Located]) -> list[list[tuple[int, int]]]:
    """Consecutive classes (same source and rows, evenly spaced windows) in residue order:
    the weight rows are always a strided view."""
    runs: list[list[tuple[int, int]]] = []
    previous: Located | None = None
    for current in located:
        window, source, offset = current
        if (
            previous is not None
            and (previous[1], previous[0].rows, previous[0].residue + 1) == (source, window.rows, window.residue)
            and _extends(runs[-1], offset)
        ):
            runs[-1].append((offset, window.residue))
        else:
            runs.append([(offset, window.residue)])
        previous = current
    return runs


def _batching_cost(runs: list[list[tuple[int, int]]]) -> int:
    """Number of kernel launches per sample: one bmm per run, plus one weight gather."""
    gather = any(_residue_step([residue for _, residue in run]) is None for run in runs)
    return len(runs) + int(gather)


def _inverse(permutation: list[int]) -> list[int]:
    inverse = [0] * len(permutation)
    for position, value in enumerate(permutation):
        inverse[value] = position
    return inverse


@lru_cache(maxsize=256)
def _build_schedule(in_channels: int, out_channels: int, groups: int, overlap: Fraction) -> _Schedule:
    starts = _starts(in_channels, out_channels, groups, overlap)
    length = in_channels // groups
    period = min(_period(in_channels, groups, overlap), out_channels)
    classes = tuple(
        _WindowClass(residue, starts[residue], len(range(residue, out_channels, period))) for residue in range(period)
    )
    wrapped = [window for window in classes if window.start + length > in_channels]
    wrap_head = max((in_channels - window.start for window in wrapped), default=0)
    wrap_tail = max((window.start + length - in_channels for window in wrapped), default=0)
    located = [(window, *_source_offset(window, length, in_channels, wrap_head)) for window in classes]
    by_residue = {window.residue: (window, source) for window, source, _ in located}
    runs = min(_batch_by_residue(located), _batch_by_offset(located), key=_batching_cost)

    batches: list[_Batch] = []
    weight_order: list[int] = []
    for run in runs:
        residues = [residue for _, residue in run]
        window, source = by_residue[residues[0]]
        step = run[1][0] - run[0][0] if len(run) > 1 else 0
        batches.append(
            _Batch(source, run[0][0], step, tuple(residues), window.rows, len(weight_order), _residue_step(residues))
        )
        for residue in residues:
            weight_order.extend(range(residue, out_channels, period))
    gather_weight = any(batch.residue_step is None for batch in batches)
    batches = [_with_weight_view(batch, length, period, gather_weight) for batch in batches]
    # Plain Python only: a tracer must not record anything while a schedule is built.
    return _Schedule(
        in_channels,
        out_channels,
        length,
        period,
        classes,
        wrap_head,
        wrap_tail,
        tuple(batches),
        gather_weight,
        tuple(weight_order),
        tuple(_inverse(weight_order)),
    )


def _with_weight_view(batch: _Batch, length: int, period: int, gathered: bool) -> _Batch:
    """Where the batch's ``(count, rows, L)`` weights sit: a strided view of the canonical
    weight, or a contiguous block of the weight gathered into batch order."""
    count = len(batch.residues)
    if gathered:
        stride, offset = (batch.rows * length, length, 1), batch.buffer_row * length
    else:
        assert batch.residue_step is not None
        stride, offset = (batch.residue_step * length, period * length, 1), batch.residues[0] * length
    return replace(batch, weight_size=(count, batch.rows, length), weight_stride=stride, weight_offset=offset)


def _schedule(in_channels: int, out_channels: int, groups: int, overlap: float | Fraction) -> _Schedule:
    return _build_schedule(*_configuration(in_channels, out_channels, groups, overlap))


@lru_cache(maxsize=512)
def _index(schedule: _Schedule, field: str, device: torch.device) -> torch.Tensor:
    """One of the schedule's index tuples as a cached long tensor on ``device`` (keyed by the
    schedule's identity, so a call costs no hashing of the tuple; never built under a tracer)."""
    return torch.tensor(getattr(schedule, field), dtype=torch.long, device=device)


@lru_cache(maxsize=64)
def _class_major_index(schedule: _Schedule, batch_size: int, device: torch.device) -> torch.Tensor:
    """Row of each ``(sample, canonical output)`` in the class-major buffer, where class ``r``
    occupies ``batch_size * rows`` consecutive rows (sample-major inside)."""
    index = [0] * (batch_size * schedule.out_channels)
    first_row = 0
    for window in schedule.classes:
        for sample in range(batch_size):
            for row, channel in enumerate(range(window.residue, schedule.out_channels, schedule.period)):
                index[sample * schedule.out_channels + channel] = first_row + sample * window.rows + row
        first_row += batch_size * window.rows
    return torch.tensor(index, dtype=torch.long, device=device)


# ---------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------


def _wrap_buffer(flat_input: torch.Tensor, schedule: _Schedule) -> torch.Tensor | None:
    """``(N, wrap_head + wrap_tail, HW)``: the last channels followed by the first ones."""
    if not schedule.wrap_head:
        return None
    head = flat_input[:, schedule.in_channels - schedule.wrap_head :]
    return torch.cat([head, flat_input[:, : schedule.wrap_tail]], 1)


def _sources(flat_input: torch.Tensor, schedule: _Schedule) -> dict[str, torch.Tensor]:
    sources = {_INPUT: flat_input}
    wrap = _wrap_buffer(flat_input, schedule)
    if wrap is not None:
        sources[_WRAP] = wrap
    return sources


def _forward_sample_major(flat_input: torch.Tensor, weight: torch.Tensor, schedule: _Schedule) -> torch.Tensor:
    """Per sample, one bmm per batch of evenly spaced windows, then one row gather."""
    batch_size, _, pixels = flat_input.shape
    out_channels, length = schedule.out_channels, schedule.length
    sources = _sources(flat_input, schedule)
    if schedule.gather_weight:
        weight = weight.index_select(0, _index(schedule, "weight_order", weight.device))
    weights = [
        weight.as_strided(batch.weight_size, batch.weight_stride, weight.storage_offset() + batch.weight_offset)
        for batch in schedule.batches
    ]
    buffer = flat_input.new_empty(batch_size, out_channels, pixels)
    for sample in range(batch_size):
        for batch, batch_weight in zip(schedule.batches, weights):
            source = sources[batch.source]
            count, rows = len(batch.residues), batch.rows
            first_channel = sample * source.shape[1] + batch.offset
            windows = source.as_strided(
                (count, length, pixels), (batch.step * pixels, pixels, 1), source.storage_offset() + first_channel * pixels
            )
            target = buffer.as_strided(
                (count, rows, pixels), (rows * pixels, pixels, 1), (sample * out_channels + batch.buffer_row) * pixels
            )
            torch.bmm(batch_weight, windows, out=target)
    return buffer.index_select(1, _index(schedule, "buffer_position", buffer.device))


def _forward_class_major(flat_input: torch.Tensor, weight: torch.Tensor, schedule: _Schedule) -> torch.Tensor:
    """One bmm per window class over the whole batch, then one row gather."""
    batch_size, _, pixels = flat_input.shape
    length, period = schedule.length, schedule.period
    sources = _sources(flat_input, schedule)
    buffer = flat_input.new_empty(batch_size * schedule.out_channels, pixels)
    first_row = 0
    for window in schedule.classes:
        source_name, offset = schedule.source_offset(window)
        source = sources[source_name]
        rows = window.rows
        class_weight = weight.as_strided(
            (batch_size, rows, length), (0, period * length, 1), weight.storage_offset() + window.residue * length
        )
        windows = source.as_strided(
            (batch_size, length, pixels), (source.shape[1] * pixels, pixels, 1), source.storage_offset() + offset * pixels
        )
        target = buffer.as_strided((batch_size, rows, pixels), (rows * pixels, pixels, 1), first_row * pixels)
        torch.bmm(class_weight, windows, out=target)
        first_row += batch_size * rows
    rows_out = buffer.index_select(0, _class_major_index(schedule, batch_size, buffer.device))
    return rows_out.view(batch_size, schedule.out_channels, pixels)


Kernel = Callable[[torch.Tensor, torch.Tensor, _Schedule], torch.Tensor]


def _choose_kernel(batch_size: int, schedule: _Schedule) -> Kernel:
    """Whichever of per-sample batches of windows and per-class products over the whole
    batch launches fewer kernels (one sample: always the former).

    Measured on 2 threads: per-class products beat stacking the images side by side along
    the pixel axis (tried; better only single-threaded on 7x7 maps) and per-sample batches.
    """
    if batch_size * len(schedule.batches) + int(schedule.gather_weight) <= len(schedule.classes):
        return _forward_sample_major
    return _forward_class_major


@lru_cache(maxsize=512)
def _native_tables(schedule: _Schedule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The native kernel's int32 tables (see ``scc_native.cpp``): output channels grouped by
    window class, row blocks of up to four channels of one class, and each class's window."""
    order: list[int] = []
    blocks: list[tuple[int, int, int]] = []
    for window in schedule.classes:
        channels = list(range(window.residue, schedule.out_channels, schedule.period))
        count = -(-len(channels) // _NATIVE_ROWS)  # balanced blocks: 5 rows run as 3 + 2, not 4 + 1
        for block in range(count):
            part = channels[len(channels) * block // count : len(channels) * (block + 1) // count]
            blocks.append((len(order), len(part), window.residue))
            order.extend(part)
    windows = [
        [(window.start + offset) % schedule.in_channels for offset in range(schedule.length)] for window in schedule.classes
    ]
    return (
        torch.tensor(order, dtype=torch.int32),
        torch.tensor(blocks, dtype=torch.int32),
        torch.tensor(windows, dtype=torch.int32),
    )


def _fast_forward(flat_input: torch.Tensor, weight: torch.Tensor, schedule: _Schedule) -> torch.Tensor:
    """The native kernel where it is built and applies (float32 on the CPU), else the
    pure-PyTorch kernel that launches fewer products."""
    if scc_native.supports(flat_input, weight, schedule.length):
        native = scc_native.library()
        if native is not None:
            return scc_native.forward(native, flat_input, weight, schedule.out_channels, _native_tables(schedule))
    return _torch_forward(flat_input, weight, schedule)


def _torch_forward(flat_input: torch.Tensor, weight: torch.Tensor, schedule: _Schedule) -> torch.Tensor:
    return _choose_kernel(flat_input.shape[0], schedule)(flat_input, weight, schedule)


class _SlidingChannelFunction(torch.autograd.Function):
    """Fast SCC with a hand-written backward (the forward writes into views with ``out=``)."""

    @staticmethod
    def forward(ctx: Any, flat_input: torch.Tensor, weight: torch.Tensor, schedule: _Schedule) -> torch.Tensor:
        ctx.schedule = schedule
        ctx.save_for_backward(flat_input, weight)
        return _fast_forward(flat_input, weight, schedule)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        flat_input, weight = ctx.saved_tensors
        schedule: _Schedule = ctx.schedule
        grad_output = grad_output.contiguous()
        batch_size = grad_output.size(0)
        need_input, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_input = torch.zeros_like(flat_input) if need_input else None
        grad_weight = torch.empty_like(weight) if need_weight else None
        for window in schedule.classes:
            outputs = grad_output[:, window.residue :: schedule.period]  # (N, rows, HW)
            class_weight = weight[window.residue :: schedule.period]  # (rows, L)
            for column, channel, size in schedule.pieces(window):
                piece_weight = class_weight[:, column : column + size]
                if grad_input is not None:
                    target = grad_input[:, channel : channel + size]
                    target.baddbmm_(piece_weight.t().expand(batch_size, size, window.rows), outputs)
                if grad_weight is not None:
                    inputs = flat_input[:, channel : channel + size].transpose(1, 2)  # (N, HW, size)
                    products = torch.bmm(outputs, inputs)
                    grad_weight[window.residue :: schedule.period, column : column + size] = products.sum(0)
        return grad_input, grad_weight, None


def _portable_forward(x: torch.Tensor, weight: torch.Tensor, schedule: _Schedule) -> torch.Tensor:
    """Plain differentiable ops (slices, one conv2d per window class, an interleave into
    canonical order): what tracing, ONNX export and compilers see. Same exact FLOPs."""
    outputs = []
    for window in schedule.classes:
        parts = [x[:, channel : channel + size] for _, channel, size in schedule.pieces(window)]
        window_input = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        class_weight = weight[window.residue :: schedule.period]
        outputs.append(F.conv2d(window_input, class_weight[:, :, None, None]))
    # Canonical order: output r + period * i is row i of class r. Interleave the rows that
    # every class has, then append the one extra row of the first classes.
    if len(outputs) == 1:
        return outputs[0]
    common = min(window.rows for window in schedule.classes)
    interleaved = torch.stack([output[:, :common] for output in outputs], 2).flatten(1, 2)
    extra = [output[:, common:] for output, window in zip(outputs, schedule.classes) if window.rows > common]
    return torch.cat([interleaved, *extra], 1) if extra else interleaved


def _needs_portable_ops() -> bool:
    """True while tracing (fvcore uses ``torch.jit.trace``; so does ONNX export with
    ``dynamo=False``) or compiling (``torch.compile``, ``torch.export`` and the default
    dynamo ONNX exporter), where writes into views with ``out=`` and Python autograd
    functions are not welcome."""
    # ``torch.jit.is_tracing`` is unannotated in torch; it returns a bool.
    return cast(Callable[[], bool], torch.jit.is_tracing)() or torch.compiler.is_compiling()


# ---------------------------------------------------------------------------------------
# Public functional API and module
# ---------------------------------------------------------------------------------------


def _static(size: int | torch.Tensor) -> int:
    """A tensor dimension as a Python int. Under ``torch.jit.trace`` sizes are tensors; the
    channel counts this is used for are fixed by the weights, so freezing them is correct."""
    if isinstance(size, torch.Tensor):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return int(size)
    return int(size)


def _compact_weight_2d(compact_weight: torch.Tensor, length: int) -> torch.Tensor:
    shape = tuple(_static(size) for size in compact_weight.shape)
    if len(shape) == 4 and shape[2:] == (1, 1):
        compact_weight = compact_weight.reshape(shape[0], shape[1])
    elif len(shape) != 2 or shape[1] != length:
        raise UserError(f"SCC compact weight has shape {shape}; accepted: (Cout, {length}) or (Cout, {length}, 1, 1)")
    return compact_weight


def _checked_input(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, int]:
    """The input as contiguous NCHW, and its channel count."""
    if x.dim() != 4:
        raise UserError(f"SCC input has shape {tuple(x.shape)}; accepted: 4-D (N, C, H, W)")
    in_channels = _static(x.shape[1])
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or in_channels % groups:
        raise UserError(f"SCC groups {groups!r} does not divide the {in_channels} input channels; accepted: a divisor")
    return x.contiguous(), in_channels


def _apply(x: torch.Tensor, weight: torch.Tensor, schedule: _Schedule, bias: torch.Tensor | None) -> torch.Tensor:
    """Run the schedule on a contiguous NCHW input and a contiguous ``(Cout, L)`` weight."""
    if _needs_portable_ops():
        output = _portable_forward(x, weight, schedule)
    else:
        batch_size, _, height, width = x.shape
        flat_input = x.view(batch_size, schedule.in_channels, height * width)
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            flat_output = _SlidingChannelFunction.apply(flat_input, weight, schedule)
        else:
            flat_output = _fast_forward(flat_input, weight, schedule)
        output = flat_output.view(batch_size, schedule.out_channels, height, width)
    if bias is not None:
        output = output + bias.view(1, -1, 1, 1)
    return output


def sliding_channel_conv2d(
    x: torch.Tensor, compact_weight: torch.Tensor, groups: int, overlap: float | Fraction, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Sliding-channel 1x1 convolution: exact, FLOP-exact, fast and differentiable.

    Args:
        x: ``(N, Cin, H, W)`` input (channels-last is accepted and made contiguous).
        compact_weight: ``(Cout, Cin / groups)`` or ``(Cout, Cin / groups, 1, 1)`` in
            canonical order (row ``c`` is output ``c``; column ``k`` is input channel
            ``window_index(Cin, Cout, groups, overlap)[c, k]``).
        groups: channel groups ``cg``; must divide ``Cin``.
        overlap: overlap ratio ``co`` (see :func:`overlap_fraction`).
        bias: optional ``(Cout,)`` bias.

    Returns:
        ``(N, Cout, H, W)``.
    """
    x, in_channels = _checked_input(x, groups)
    weight = _compact_weight_2d(compact_weight, in_channels // groups)
    schedule = _schedule(in_channels, _static(weight.shape[0]), groups, overlap)
    return _apply(x, weight.contiguous(), schedule, bias)


def reference_sliding_channel_conv2d(
    x: torch.Tensor, compact_weight: torch.Tensor, groups: int, overlap: float | Fraction
) -> torch.Tensor:
    """Slow reference: scatter the compact weight into a dense masked ``(Cout, Cin)`` 1x1
    weight and run a dense convolution. Differentiable; used by the tests."""
    x, in_channels = _checked_input(x, groups)
    weight = _compact_weight_2d(compact_weight, in_channels // groups)
    index = window_index(in_channels, _static(weight.shape[0]), groups, overlap).to(weight.device)
    dense = weight.new_zeros(weight.shape[0], in_channels).scatter(1, index, weight)
    return F.conv2d(x, dense[:, :, None, None])


class SlidingChannelConv2d(nn.Module):
    """Static sliding-channel pointwise convolution (stride 1, 1x1 kernel).

    ``weight`` has shape ``(out_channels, in_channels // groups)`` in canonical order, so a
    supernet can copy a compact weight gathered with :func:`window_index` straight into it.
    ``state_dict()`` holds only ``weight`` (and ``bias``): the schedule is a module-level cache.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, overlap: float | Fraction, bias: bool = False) -> None:
        super().__init__()
        _check_channels(in_channels, out_channels, groups)
        overlap_fraction(overlap)  # validates
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.overlap = overlap
        length = in_channels // groups
        self.weight = nn.Parameter(torch.empty(out_channels, length))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.schedule = _schedule(in_channels, out_channels, groups, overlap)  # plain attribute, not state
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Same initialisation as ``nn.Conv2d`` with fan-in ``in_channels // groups``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.size(1))
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or _static(x.shape[1]) != self.in_channels:
            raise UserError(f"SCC input has shape {tuple(x.shape)}; accepted: (N, {self.in_channels}, H, W)")
        return _apply(x.contiguous(), self.weight.contiguous(), self.schedule, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, groups={self.groups}, overlap={self.overlap}, "
            f"bias={self.bias is not None}"
        )


__all__ = [
    "SlidingChannelConv2d",
    "dense_mask",
    "overlap_fraction",
    "reference_sliding_channel_conv2d",
    "sliding_channel_conv2d",
    "window_index",
    "window_starts",
]
