"""Sliding-channel convolution: definition, exactness, FLOPs, export and weight layout."""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from nas_search.errors import UserError
from nas_search.spaces.scc import conv as scc_module
from nas_search.spaces.scc import native as scc_native
from nas_search.spaces.scc.conv import (
    SlidingChannelConv2d,
    dense_mask,
    overlap_fraction,
    reference_sliding_channel_conv2d,
    sliding_channel_conv2d,
    window_index,
    window_starts,
)

from support import skip_or_fail

GROUPS = (2, 4, 8)
OVERLAPS = (0.25, 0.33, 0.5)
# The fractions these two-decimal ratios stand for (0.33 is one third; see the module docstring).
EXACT_OVERLAPS = {0.25: Fraction(1, 4), 0.33: Fraction(1, 3), 0.5: Fraction(1, 2)}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These tensors are tiny; one thread keeps the tests fast on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def torch_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run SCC on the pure-PyTorch kernels (the fallback when no native build exists)."""
    monkeypatch.setenv(scc_native.ENVIRONMENT_SWITCH, "0")


def native_library():
    """The built native kernel; skipped (failed under NAS_SEARCH_REQUIRE_ALL=1) when absent."""
    library = scc_native.library()
    if library is None:
        skip_or_fail(f"native SCC kernel not built: {scc_native.unavailable_reason()}")
    return library


def brute_force_starts(in_channels: int, out_channels: int, groups: int, overlap: Fraction) -> list[int]:
    """floor(c * (1 - co) * Cin / cg) mod Cin, one Fraction at a time."""
    return [
        math.floor(Fraction(channel) * (1 - overlap) * Fraction(in_channels, groups)) % in_channels
        for channel in range(out_channels)
    ]


def random_case(
    in_channels: int, out_channels: int, groups: int, batch: int, height: int = 5, width: int = 7
) -> tuple[torch.Tensor, torch.Tensor]:
    """A reproducible input and a compact weight scaled to keep outputs of order one."""
    generator = torch.Generator().manual_seed(in_channels * 7919 + out_channels * 31 + groups * 7 + batch)
    length = in_channels // groups
    x = torch.randn(batch, in_channels, height, width, generator=generator)
    weight = torch.randn(out_channels, length, generator=generator) / math.sqrt(length)
    return x, weight


# ---------------------------------------------------------------------------------------
# Definition
# ---------------------------------------------------------------------------------------


def test_overlap_fraction_is_the_simplest_fraction_that_rounds_to_it() -> None:
    for hundredths in range(100):
        target = Fraction(hundredths, 100)
        candidates = [
            Fraction(numerator, denominator)
            for denominator in range(1, 101)
            for numerator in range(math.floor(denominator * target) - 1, math.ceil(denominator * target) + 2)
            if abs(Fraction(numerator, denominator) - target) < Fraction(1, 200)
        ]
        simplest = min(candidates, key=lambda fraction: fraction.denominator)
        assert overlap_fraction(hundredths / 100) == simplest, hundredths
    assert {overlap: overlap_fraction(overlap) for overlap in OVERLAPS} == EXACT_OVERLAPS


@pytest.mark.parametrize("in_channels,out_channels", [(64, 64), (128, 64), (24, 40), (40, 24), (8, 3), (512, 512)])
def test_window_starts_match_brute_force_rational(in_channels: int, out_channels: int) -> None:
    for groups, overlap in itertools.product(GROUPS, OVERLAPS):
        if in_channels % groups:
            continue
        expected = brute_force_starts(in_channels, out_channels, groups, EXACT_OVERLAPS[overlap])
        assert window_starts(in_channels, out_channels, groups, overlap) == expected


def test_window_starts_follow_the_stride_and_overlap() -> None:
    # 64 channels, cg=4: windows of 16; stride (1 - co) * 16 = 12, 8 for co = 1/4, 1/2.
    assert window_starts(64, 8, 4, 0.25) == [0, 12, 24, 36, 48, 60, 8, 20]
    assert window_starts(64, 10, 4, 0.5) == [0, 8, 16, 24, 32, 40, 48, 56, 0, 8]
    # One third: stride 32/3, floored; the starts repeat every 3 * cg / 2 = 6 outputs.
    assert window_starts(64, 8, 4, 0.33) == [0, 10, 21, 32, 42, 53, 0, 10]


def test_window_index_is_consistent_with_dense_mask() -> None:
    for in_channels, out_channels, groups, overlap in itertools.product((8, 24, 64), (1, 7, 64), GROUPS, OVERLAPS):
        if in_channels % groups:
            continue
        length = in_channels // groups
        index = window_index(in_channels, out_channels, groups, overlap)
        mask = dense_mask(in_channels, out_channels, groups, overlap)
        starts = torch.tensor(window_starts(in_channels, out_channels, groups, overlap))
        assert index.shape == (out_channels, length) and index.dtype == torch.long
        assert mask.shape == (out_channels, in_channels) and mask.dtype == torch.bool
        assert torch.equal(index[:, 0], starts)
        steps = (index[:, 1:] - index[:, :-1]) % in_channels
        assert torch.equal(steps, torch.ones(out_channels, length - 1, dtype=torch.long))
        assert mask.gather(1, index).all()
        assert torch.equal(mask.sum(1), torch.full((out_channels,), length))


# ---------------------------------------------------------------------------------------
# Exactness: forward and gradients against the dense masked reference
# ---------------------------------------------------------------------------------------

# (Cin, Cout, batch): odd window lengths (40 / 8 = 5), Cout below, equal to and above Cin,
# Cout = 1, batch 1 (sample-major schedule) and 3 (class-major schedule).
EXACTNESS_SHAPES = ((8, 5, 1), (24, 100, 3), (40, 1, 3), (40, 24, 1), (64, 64, 1), (64, 16, 3))
EXACTNESS_GRID = [
    (in_channels, out_channels, groups, overlap, batch)
    for (in_channels, out_channels, batch), groups, overlap in itertools.product(EXACTNESS_SHAPES, GROUPS, OVERLAPS)
]


@pytest.mark.parametrize("kernels", ["native", "torch"])
@pytest.mark.parametrize("in_channels,out_channels,groups,overlap,batch", EXACTNESS_GRID)
def test_forward_and_gradients_match_dense_masked_reference(
    in_channels: int, out_channels: int, groups: int, overlap: float, batch: int, kernels: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kernels == "native":
        native_library()
    else:
        monkeypatch.setenv(scc_native.ENVIRONMENT_SWITCH, "0")
    x, weight = random_case(in_channels, out_channels, groups, batch)
    x_fast, weight_fast = x.clone().requires_grad_(), weight.clone().requires_grad_()
    x_slow, weight_slow = x.clone().requires_grad_(), weight.clone().requires_grad_()
    fast = sliding_channel_conv2d(x_fast, weight_fast, groups, overlap)
    slow = reference_sliding_channel_conv2d(x_slow, weight_slow, groups, overlap)
    assert fast.shape == (batch, out_channels, 5, 7)
    assert (fast - slow).abs().max().item() <= 1e-5
    upstream = torch.randn_like(fast) / math.sqrt(fast[:, 0].numel())  # keeps weight gradients O(1)
    fast.backward(upstream)
    slow.backward(upstream)
    assert (x_fast.grad - x_slow.grad).abs().max().item() <= 1e-5
    assert (weight_fast.grad - weight_slow.grad).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "batch,size,overlap,kernel",
    [
        (1, 6, 0.25, "_forward_sample_major"),  # one image: batches of evenly spaced windows
        (5, 12, 0.5, "_forward_class_major"),  # a batch: one product per window class
        (2, 12, 0.0, "_forward_sample_major"),  # disjoint windows: a single batch per sample
    ],
)
def test_every_kernel_matches_the_reference(batch: int, size: int, overlap: float, kernel: str, torch_kernels) -> None:
    schedule = scc_module._schedule(64, 48, 4, overlap)
    assert scc_module._choose_kernel(batch, schedule).__name__ == kernel
    x, weight = random_case(64, 48, 4, batch, size, size)
    x.requires_grad_()
    weight.requires_grad_()
    fast = sliding_channel_conv2d(x, weight, 4, overlap)
    slow = reference_sliding_channel_conv2d(x, weight, 4, overlap)
    assert (fast - slow).abs().max().item() <= 1e-5
    upstream = torch.randn_like(fast) / math.sqrt(fast[:, 0].numel())  # keeps weight gradients O(1)
    fast_grads = torch.autograd.grad(fast, (x, weight), upstream)
    slow_grads = torch.autograd.grad(slow, (x, weight), upstream)
    for fast_grad, slow_grad in zip(fast_grads, slow_grads):
        assert (fast_grad - slow_grad).abs().max().item() <= 1e-5
    with torch.no_grad():  # the inference path skips the autograd function
        assert (sliding_channel_conv2d(x, weight, 4, overlap) - slow).abs().max().item() <= 1e-5


@pytest.mark.parametrize("batch", [1, 3])
def test_literal_fraction_overlap_is_exact_too(batch: int) -> None:
    # DESIGN.md's formula read literally (co = 33/100): nearly one window per output channel.
    literal = Fraction(33, 100)
    assert window_starts(64, 64, 4, literal) == brute_force_starts(64, 64, 4, literal)
    x, weight = random_case(64, 64, 4, batch)
    fast = sliding_channel_conv2d(x, weight, 4, literal)
    assert (fast - reference_sliding_channel_conv2d(x, weight, 4, literal)).abs().max().item() <= 1e-5
    with pytest.raises(UserError, match="overlap 1 is out of range"):
        window_starts(64, 64, 4, Fraction(1))


def test_reference_is_a_masked_dense_convolution() -> None:
    x, weight = random_case(40, 24, 8, 2)
    dense = torch.zeros(24, 40)
    for channel, row in enumerate(window_index(40, 24, 8, 0.33)):
        dense[channel, row] = weight[channel]
    assert torch.equal(dense != 0, dense_mask(40, 24, 8, 0.33))
    expected = F.conv2d(x, dense[:, :, None, None])
    assert (reference_sliding_channel_conv2d(x, weight, 8, 0.33) - expected).abs().max().item() <= 1e-6


def test_gradcheck_in_double_precision() -> None:
    x = torch.randn(2, 24, 3, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: sliding_channel_conv2d(a, b, 4, 0.33), (x, weight))


def test_input_only_and_weight_only_gradients() -> None:
    x, weight = random_case(64, 48, 4, 2)
    weight.requires_grad_()
    sliding_channel_conv2d(x, weight, 4, 0.25).square().sum().backward()
    reference = reference_sliding_channel_conv2d(x, weight, 4, 0.25)
    expected_weight = torch.autograd.grad(reference.square().sum(), weight)[0]
    assert (weight.grad - expected_weight).abs().max().item() <= 1e-4
    x.requires_grad_()
    frozen = weight.detach()
    sliding_channel_conv2d(x, frozen, 4, 0.25).sum().backward()
    expected_input = torch.autograd.grad(reference_sliding_channel_conv2d(x, frozen, 4, 0.25).sum(), x)[0]
    assert (x.grad - expected_input).abs().max().item() <= 1e-5


def test_channels_last_input_and_four_dimensional_weight() -> None:
    x, weight = random_case(64, 64, 4, 3)
    expected = reference_sliding_channel_conv2d(x, weight, 4, 0.5)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    result = sliding_channel_conv2d(channels_last, weight[:, :, None, None], 4, 0.5)
    assert (result - expected).abs().max().item() <= 1e-5


def test_module_bias_and_repr() -> None:
    module = SlidingChannelConv2d(32, 16, 4, 0.33, bias=True)
    x = torch.randn(2, 32, 4, 4)
    expected = reference_sliding_channel_conv2d(x, module.weight, 4, 0.33) + module.bias.view(1, -1, 1, 1)
    assert (module(x) - expected).abs().max().item() <= 1e-5
    assert "32, 16, groups=4, overlap=0.33, bias=True" in repr(module)


def test_fast_path_multiplies_no_masked_zeros(torch_kernels) -> None:
    module = SlidingChannelConv2d(64, 64, 4, 0.25).eval()
    x = torch.randn(1, 64, 6, 6)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.no_grad(), torch.profiler.profile(activities=activities, with_flops=True) as profile:
        module(x)
    multiply_adds = sum(event.flops for event in profile.key_averages() if event.key in ("aten::bmm", "aten::mm")) // 2
    assert multiply_adds == 64 * 16 * 6 * 6


# ---------------------------------------------------------------------------------------
# Native kernel: exactness over every tail and block shape, build cache, fallback
# ---------------------------------------------------------------------------------------

# Pixel counts around the SIMD widths (8 and 16 lanes, blocks of 16 to 64 pixels) and the
# deployment map sizes; channel counts with fewer outputs than window classes, uneven
# classes, one-row blocks and wrapping windows.
NATIVE_PIXELS = ((1, 1), (3, 5), (4, 4), (1, 17), (7, 7), (8, 8), (5, 13), (9, 9), (14, 14))
NATIVE_CHANNELS = ((8, 3, 2), (24, 40, 4), (40, 24, 8), (64, 64, 4), (96, 50, 4), (256, 256, 4))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("in_channels,out_channels,groups", NATIVE_CHANNELS)
def test_native_kernel_matches_the_reference_for_every_tail(
    in_channels: int, out_channels: int, groups: int, threads: int
) -> None:
    native_library()
    torch.set_num_threads(threads)
    try:
        for (height, width), overlap, batch in itertools.product(NATIVE_PIXELS, (0.0, 0.25, 0.33, 0.5), (1, 3)):
            x, weight = random_case(in_channels, out_channels, groups, batch, height, width)
            expected = reference_sliding_channel_conv2d(x, weight, groups, overlap)
            with torch.no_grad():
                result = sliding_channel_conv2d(x, weight, groups, overlap)
            error = (result - expected).abs().max().item()
            assert error <= 1e-5, (height, width, overlap, batch, error)
    finally:
        torch.set_num_threads(1)


def test_native_and_torch_kernels_agree_on_a_large_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    native_library()
    x, weight = random_case(128, 128, 4, 2, 28, 28)
    with torch.no_grad():
        native = sliding_channel_conv2d(x, weight, 4, 0.33)
        monkeypatch.setenv(scc_native.ENVIRONMENT_SWITCH, "0")
        portable = sliding_channel_conv2d(x, weight, 4, 0.33)
    assert native.shape == (2, 128, 28, 28)
    assert (native - portable).abs().max().item() <= 1e-5


def test_native_kernel_leaves_other_dtypes_to_torch() -> None:
    native_library()
    x, weight = random_case(32, 32, 4, 2)
    flat = x.view(2, 32, -1)
    assert scc_native.supports(flat, weight, 8)
    assert not scc_native.supports(flat.double(), weight.double(), 8)
    assert not scc_native.supports(flat.transpose(1, 2), weight, 8)
    assert not scc_native.supports(flat, weight, scc_native.MAX_LENGTH + 1)
    expected = reference_sliding_channel_conv2d(x.double(), weight.double(), 4, 0.5)
    assert (sliding_channel_conv2d(x.double(), weight.double(), 4, 0.5) - expected).abs().max().item() <= 1e-12


def test_native_build_is_cached_per_source_and_reused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    if scc_native.find_compiler() is None:
        skip_or_fail("no C++ compiler to build the native SCC kernel")
    monkeypatch.setenv(scc_native.CACHE_ENVIRONMENT, str(tmp_path))
    scc_native.reset()
    try:
        assert scc_native.library() is not None
        built = list(tmp_path.glob("scc_native-*.so"))
        assert len(built) == 1 and not list(tmp_path.glob("*.tmp.so"))  # renamed into place
        first_build = built[0].stat().st_mtime_ns
        scc_native.reset()
        assert scc_native.library() is not None
        assert built[0].stat().st_mtime_ns == first_build  # loaded again, not rebuilt
        x, weight = random_case(64, 48, 4, 2)
        with torch.no_grad():
            result = sliding_channel_conv2d(x, weight, 4, 0.25)
        assert (result - reference_sliding_channel_conv2d(x, weight, 4, 0.25)).abs().max().item() <= 1e-5
    finally:
        scc_native.reset()


def test_failed_build_warns_once_and_falls_back_to_torch(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(scc_native.CACHE_ENVIRONMENT, str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    scc_native.reset()
    try:
        x, weight = random_case(64, 48, 4, 2)
        with pytest.warns(RuntimeWarning, match="native sliding-channel kernel is not available"):
            result = sliding_channel_conv2d(x, weight, 4, 0.33)
        assert "no-such-compiler" in scc_native.unavailable_reason()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the second call is silent
            again = sliding_channel_conv2d(x, weight, 4, 0.33)
        expected = reference_sliding_channel_conv2d(x, weight, 4, 0.33)
        assert (result - expected).abs().max().item() <= 1e-5
        assert torch.equal(result, again)
        assert not list(tmp_path.glob("*.so"))  # nothing half-written left behind
    finally:
        scc_native.reset()


def test_environment_switch_disables_the_native_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(scc_native.ENVIRONMENT_SWITCH, "0")
    assert scc_native.library() is None
    assert scc_native.unavailable_reason() == f"disabled by {scc_native.ENVIRONMENT_SWITCH}"


# ---------------------------------------------------------------------------------------
# Weight layout: state_dict and supernet weight sharing
# ---------------------------------------------------------------------------------------


def test_state_dict_holds_only_weight_and_bias() -> None:
    assert set(SlidingChannelConv2d(64, 32, 4, 0.5).state_dict()) == {"weight"}
    state = SlidingChannelConv2d(64, 32, 4, 0.5, bias=True).state_dict()
    assert set(state) == {"weight", "bias"}
    assert state["weight"].shape == (32, 16) and state["bias"].shape == (32,)


def test_supernet_gathers_compact_weights_from_one_dense_parameter() -> None:
    shared = torch.randn(96, 80)  # (Cout_max, Cin_max)
    for in_channels, out_channels, groups, overlap in [(80, 96, 4, 0.33), (64, 48, 8, 0.25), (40, 72, 2, 0.5)]:
        index = window_index(in_channels, out_channels, groups, overlap)
        compact = torch.gather(shared[:out_channels, :in_channels], 1, index)
        static = SlidingChannelConv2d(in_channels, out_channels, groups, overlap)
        with torch.no_grad():
            static.weight.copy_(compact)
        masked = shared[:out_channels, :in_channels] * dense_mask(in_channels, out_channels, groups, overlap)
        x = torch.randn(2, in_channels, 3, 3)
        assert (static(x) - F.conv2d(x, masked[:, :, None, None])).abs().max().item() <= 1e-5


# ---------------------------------------------------------------------------------------
# Tools: fvcore FLOPs, tracing, ONNX
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "in_channels,out_channels,groups,overlap", [(64, 64, 4, 0.25), (64, 48, 4, 0.33), (40, 72, 8, 0.5), (24, 5, 2, 0.33)]
)
def test_fvcore_counts_exact_flops(in_channels: int, out_channels: int, groups: int, overlap: float) -> None:
    fvcore_nn = pytest.importorskip("fvcore.nn")
    module = SlidingChannelConv2d(in_channels, out_channels, groups, overlap).eval()
    x = torch.randn(1, in_channels, 9, 11)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    analysis = fvcore_nn.FlopCountAnalysis(module, x)
    analysis.unsupported_ops_warnings(False)
    assert analysis.total() == out_channels * (in_channels // groups) * 9 * 11


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_traced_module_matches_eager() -> None:
    module = SlidingChannelConv2d(64, 40, 4, 0.33).eval()
    x = torch.randn(2, 64, 5, 5)
    with torch.no_grad():
        traced = torch.jit.trace(module, x)
        assert (traced(x) - module(x)).abs().max().item() <= 1e-5


def test_onnx_export_matches_onnxruntime(tmp_path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    module = SlidingChannelConv2d(64, 48, 4, 0.33, bias=True).eval()
    x = torch.randn(1, 64, 7, 9)
    path = tmp_path / "scc.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = module(x).numpy()
    assert abs(result - expected).max() <= 1e-4


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments,fragment",
    [
        ((64, 64, 3, 0.5), "groups 3"),
        ((64, 64, 0, 0.5), "groups 0"),
        ((64, 0, 4, 0.5), "out_channels 0"),
        ((64, 64, 4, 1.0), "overlap 1.0"),
        ((64, 64, 4, -0.25), "overlap -0.25"),
        ((64, 64, 4, "half"), "overlap 'half'"),
        ((64, 64, 4, True), "overlap True"),
    ],
)
def test_bad_configuration_raises_user_error(arguments: tuple, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        SlidingChannelConv2d(*arguments)
    with pytest.raises(UserError, match=fragment):
        window_index(*arguments)


def test_bad_tensors_raise_user_error() -> None:
    with pytest.raises(UserError, match=r"shape \(32, 4\)"):
        sliding_channel_conv2d(torch.randn(1, 64, 2, 2), torch.randn(32, 4), 4, 0.5)
    with pytest.raises(UserError, match="groups 3"):
        sliding_channel_conv2d(torch.randn(1, 64, 2, 2), torch.randn(32, 16), 3, 0.5)
    with pytest.raises(UserError, match="4-D"):
        sliding_channel_conv2d(torch.randn(64, 2, 2), torch.randn(32, 16), 4, 0.5)
    with pytest.raises(UserError, match=r"accepted: \(N, 64, H, W\)"):
        SlidingChannelConv2d(64, 32, 4, 0.5)(torch.randn(1, 32, 2, 2))
