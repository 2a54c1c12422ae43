"""The native CPU kernel of the sliding-channel convolution: built once per machine, loaded with ctypes.

Why a native kernel
-------------------
The pure-PyTorch kernels in :mod:`nas_search.spaces.scc.conv` run SCC as a few batched matrix
products over views of the input plus one output gather. Each PyTorch call costs several
microseconds of dispatch and thread hand-off, and small matrix products (``L`` = 16 to 128)
run far below the speed of oneDNN's grouped 1x1 convolution of the same FLOPs
(``benchmarks/RESULTS.md``). ``native.cpp`` does the whole layer in one call: a
register-blocked SIMD micro-kernel (AVX-512, AVX2 + FMA, or portable C++) that reads each
window straight from the input and writes each output row straight to its canonical place,
with OpenMP threads over images, pixel blocks and channel blocks.

How it is built
---------------
On first use the source is compiled with the system C++ compiler (``$CXX``, else ``c++``,
``g++`` or ``clang++``; a one-off cost, see ``benchmarks/RESULTS.md``;
``-O3 -march=native -fopenmp``) into a cache folder:
``$NAS_SEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/nas-search``, else ``~/.cache/nas-search``.
The file name holds a hash of the source, the compiler's version and the CPU's flags, so a
cache shared between machines or compilers never hands one the other's build. The library
is written to a temporary name and renamed into place, so concurrent first uses (DDP ranks,
DataLoader workers) are safe. It links the OpenMP runtime that PyTorch has already loaded
(``libgomp.so.1``), so both share one thread pool and ``torch.set_num_threads`` applies.

When it is not used
-------------------
Set ``NAS_SEARCH_SCC_NATIVE=0`` to use the pure-PyTorch kernels. Without a compiler, or if the
build fails, a single warning says why and the pure-PyTorch kernels are used: results are the
same, only slower. The native kernel serves float32 CPU tensors in the forward pass (inference
and the forward of training); other dtypes and devices, the backward pass, tracing, ONNX
export and ``torch.compile`` use the PyTorch code in :mod:`nas_search.spaces.scc.conv`.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("native.cpp")
ENVIRONMENT_SWITCH = "NAS_SEARCH_SCC_NATIVE"
CACHE_ENVIRONMENT = "NAS_SEARCH_CACHE_DIR"
ABI_VERSION = 1
MAX_LENGTH = 4096  # the kernel's stack buffer of window offsets
COMPILE_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
COMPILE_TIMEOUT_SECONDS = 120

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_state: dict[str, object] = {}  # "library": CDLL | None once loaded or refused; "reason": why not


def enabled_by_environment() -> bool:
    """False when ``NAS_SEARCH_SCC_NATIVE`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(ENVIRONMENT_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_directory() -> Path:
    """Where built kernels are kept (see the module docstring)."""
    configured = os.environ.get(CACHE_ENVIRONMENT)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nas-search"


def find_compiler() -> str | None:
    """``$CXX`` if set (even if it does not exist: the build then fails and says so), else
    the first of ``c++``, ``g++`` and ``clang++`` on the PATH."""
    configured = os.environ.get("CXX")
    if configured:
        return configured
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _cpu_flags() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return line
    return platform.processor()


def _build_key(compiler: str) -> str:
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError as error:
        raise RuntimeError(f"C++ compiler {compiler!r} cannot run: {error}") from error
    digest = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        version.encode(),
        platform.machine().encode(),
        _cpu_flags().encode(),
        " ".join(COMPILE_FLAGS).encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _compile(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
    os.close(descriptor)
    try:
        result = subprocess.run(
            [compiler, *COMPILE_FLAGS, str(SOURCE), "-o", temporary],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise RuntimeError(f"{compiler} failed: {message[0] if message else 'exit code ' + str(result.returncode)}")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _load(path: Path) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    library.nas_search_scc_abi_version.restype = ctypes.c_int32
    if library.nas_search_scc_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{path} has another ABI version")
    function = library.nas_search_scc_forward_f32
    function.restype = ctypes.c_int32
    function.argtypes = (
        [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 5 + [ctypes.c_void_p] * 2 + [ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
    )
    return library


def _build_and_load() -> ctypes.CDLL:
    compiler = find_compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    target = cache_directory() / f"scc_native-{_build_key(compiler)}.so"
    if not target.exists():
        logger.info("building the native SCC kernel with %s into %s", compiler, target)
        _compile(compiler, target)
    return _load(target)


def library() -> ctypes.CDLL | None:
    """The loaded native kernel, building it on first use; ``None`` when disabled by the
    environment or when it cannot be built (one warning then says why)."""
    if not enabled_by_environment():
        return None
    if "library" in _state:
        return _state["library"]  # type: ignore[return-value]
    with _lock:
        if "library" not in _state:
            try:
                _state["library"] = _build_and_load()
            except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as error:
                _state["library"] = None
                _state["reason"] = str(error)
                warnings.warn(
                    f"nas-search: the native sliding-channel kernel is not available ({error}); using the "
                    f"slower pure-PyTorch kernels (set {ENVIRONMENT_SWITCH}=0 to silence this)",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _state["library"]  # type: ignore[return-value]


def unavailable_reason() -> str | None:
    """Why :func:`library` returned ``None`` (``None`` when it is loaded or not tried yet)."""
    if not enabled_by_environment():
        return f"disabled by {ENVIRONMENT_SWITCH}"
    reason = _state.get("reason")
    return None if reason is None else str(reason)


def reset() -> None:
    """Forget the loaded library (tests use it to try another compiler or cache folder)."""
    with _lock:
        _state.clear()


def supports(flat_input: torch.Tensor, weight: torch.Tensor, length: int) -> bool:
    """Whether the native kernel can run this call: float32 CPU tensors, contiguous, not
    recorded by a tracer, and a window of at most :data:`MAX_LENGTH` channels."""
    return (
        flat_input.device.type == "cpu"
        and flat_input.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and flat_input.is_contiguous()
        and weight.is_contiguous()
        and length <= MAX_LENGTH
    )


def forward(
    native: ctypes.CDLL,
    flat_input: torch.Tensor,
    weight: torch.Tensor,
    out_channels: int,
    tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """``(N, Cout, P)`` output of the native kernel for a ``(N, Cin, P)`` input and a
    ``(Cout, L)`` weight; ``tables`` are the schedule's int32 ``order``, ``blocks`` and
    ``window`` tensors (see ``native.cpp``)."""
    batch_size, in_channels, pixels = flat_input.shape
    length = weight.shape[1]
    order, blocks, window = tables
    output = flat_input.new_empty(batch_size, out_channels, pixels)
    status = native.nas_search_scc_forward_f32(
        flat_input.data_ptr(),
        weight.data_ptr(),
        output.data_ptr(),
        batch_size,
        in_channels,
        out_channels,
        pixels,
        length,
        order.data_ptr(),
        blocks.data_ptr(),
        blocks.shape[0],
        window.data_ptr(),
        torch.get_num_threads(),
    )
    if status != 0:
        raise RuntimeError(f"native SCC kernel refused its arguments (status {status})")
    return output
