"""The runtimes a part or a whole network is timed with on the local CPU (onnxruntime,
PyTorch eager), the measurement settings they share, and a description of this machine."""

from __future__ import annotations

import io
import os
import platform
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_search.errors import UserError


@contextmanager
def measurement_settings(threads: int) -> Iterator[None]:
    """Run the body with ``threads`` torch threads and denormal floats flushed to zero,
    restoring both afterwards.

    Randomly initialised networks produce denormal activations that slow some kernels
    several-fold (``benchmarks/RESULTS.md``); trained weights rarely do, so both runtimes
    flush them while profiling.
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


def _compile_torch(module: Any, example: Any) -> Any:
    return module


def _inputs(example: Any) -> tuple[Any, ...]:
    """A module's example as a tuple of arguments: a tuple is several inputs (a part may
    take several tensors); anything else, a list of images for a torchvision detector
    included, is the one input."""
    return example if isinstance(example, tuple) else (example,)


def _instantiate_torch(module: Any, example: Any, threads: int) -> Callable[[], Any]:
    import copy

    import torch

    instance = copy.deepcopy(module)  # its own weight buffers, at new addresses
    inputs = _inputs(example)

    def run() -> Any:
        with torch.inference_mode():
            return instance(*inputs)

    return run


def export_onnx_bytes(module: Any, example: Any) -> bytes:
    """The ONNX bytes of a module (TorchScript exporter, opset 17, warnings silenced); its
    inputs are named ``input`` (one) or ``input0``, ``input1``, ... (several)."""
    import torch

    inputs = _inputs(example)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            buffer,  # type: ignore[arg-type]  # a file object is accepted
            input_names=_input_names(len(inputs)),
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def _input_names(count: int) -> list[str]:
    return ["input"] if count == 1 else [f"input{index}" for index in range(count)]


def _compile_onnxruntime(module: Any, example: Any) -> bytes:
    return export_onnx_bytes(module, example)


def _instantiate_onnxruntime(model_bytes: bytes, example: Any, threads: int) -> Callable[[], Any]:
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

    def prepare(self, module: Any, example: Any, threads: int) -> Callable[[], Any]:
        """One instance of ``module``, ready to run."""
        return self.instantiate(self.compile(module, example), example, threads)


#: Runtimes the local CPU can be profiled with.
RUNTIMES: dict[str, Runtime] = {
    "onnxruntime": Runtime(
        "onnxruntime",
        "ONNX export (opset 17) run by onnxruntime's CPU provider",
        _compile_onnxruntime,
        _instantiate_onnxruntime,
        _onnxruntime_versions,
    ),
    "torch": Runtime("torch", "PyTorch eager, inference mode", _compile_torch, _instantiate_torch, _torch_versions),
}


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``; :class:`UserError` listing the runtimes otherwise."""
    if name not in RUNTIMES:
        raise UserError(f"unknown runtime {name!r}; accepted: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


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
    return f"{name} ({os.cpu_count()} logical cores, {platform.machine()})"


__all__ = ["RUNTIMES", "Runtime", "export_onnx_bytes", "get_runtime", "local_hardware", "measurement_settings"]
