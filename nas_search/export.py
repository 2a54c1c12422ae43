"""Export a searched architecture: ``arch.yaml``, ``train.yaml``, ``model.pt``,
``model.onnx`` and ``meta.json``.

``model.pt`` is a plain ``state_dict`` (loads with ``torch.load(..., weights_only=True)``)
of the standalone network with inherited, BN-recalibrated weights; rebuild the module with
:func:`load_exported`. ``model.onnx`` is checked against onnxruntime before it is
written. All files are built in a temporary folder and moved into place one by one, so
an error leaves the target folder as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from nas_search.errors import UserError
from nas_search.search.records import TrialRecord
from nas_search.spec import ArchSpec, load_arch
from nas_search.tasks import get_space, get_task
from nas_search.tasks.base import ExportedModel, ExportRequest, exported_data_path, training_size
from nas_search.utils import check_output_path

EXPORT_FILES = ("arch.yaml", "train.yaml", "model.pt", "model.onnx", "meta.json")

#: Kept importable from here: the exported model and its helpers live with the Task contract.
__all__ = [
    "EXPORT_FILES",
    "ExportedModel",
    "export_onnx",
    "export_trial",
    "exported_data_path",
    "load_exported",
    "onnxruntime_latency_ms",
    "training_size",
]


def export_onnx(
    model: torch.nn.Module,
    input_size: int,
    path: str | Path,
    output_names: tuple[str, ...] = ("logits",),
    log_outputs: tuple[str, ...] = (),
) -> float:
    """Write ``model`` as ONNX (batch dimension dynamic), run it in onnxruntime and return
    the largest difference from PyTorch over all outputs, relative to the output's largest
    magnitude (absolute below 1); raise if they disagree.

    Outputs named in ``log_outputs`` are positive and exp-coded (a detector's box distances,
    ``exp(raw)``): they are compared as ``log`` values, i.e. by the difference of the raw
    outputs. Compared linearly, exp turns the ordinary fp32 rounding of a raw value near its
    clamp (e^10) into a large difference relative to the output's scale."""
    import onnxruntime

    model = model.eval()
    example = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["images"],
        output_names=list(output_names),
        dynamic_axes={"images": {0: "batch"}, **{name: {0: "batch"} for name in output_names}},
        opset_version=17,
        dynamo=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(example)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    actual = session.run(None, {"images": example.numpy()})
    # relative to each output's scale: an untrained or briefly trained network can have outputs
    # in the tens of thousands, where fp32 rounding alone differs by more than 1e-3
    differences = []
    for name, onnx_value, torch_value in zip(output_names, actual, expected):
        torch_value = torch_value.numpy()
        if name in log_outputs:
            floor = np.float32(1e-6)
            onnx_value, torch_value = np.log(np.maximum(onnx_value, floor)), np.log(np.maximum(torch_value, floor))
        differences.append(float(np.abs(onnx_value - torch_value).max()) / max(1.0, float(np.abs(torch_value).max())))
    difference = max(differences)
    if difference > 1e-3:
        raise RuntimeError(f"ONNX output differs from PyTorch by {difference:.2e}")
    return difference


def onnxruntime_latency_ms(path: str | Path, input_size: int, threads: int = 2, repeats: int = 30) -> float:
    """Median batch-1 latency of an ONNX file in onnxruntime on this CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"images": np.random.default_rng(0).standard_normal((1, 3, input_size, input_size), dtype=np.float32)}
    for _ in range(5):
        session.run(None, feed)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, feed)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def _resolve_trial(study, trial: str | int):
    from optuna.trial import TrialState

    from nas_search.search.report import best_trials

    if str(trial) == "best":
        best = best_trials(study, 1)
        if not best:
            raise UserError(f"study {study.study_name!r} has no feasible evaluated trial to export")
        return best[0]
    try:
        number = int(trial)
    except ValueError:
        raise UserError(f"bad --trial {trial!r}; accepted: best or a trial number") from None
    matches = [frozen for frozen in study.get_trials(deepcopy=False) if frozen.number == number]
    if not matches:
        raise UserError(f"study {study.study_name!r} has no trial {number} (it has {len(study.trials)})")
    frozen = matches[0]
    if frozen.state != TrialState.COMPLETE or not TrialRecord.from_trial(frozen).feasible:
        raise UserError(f"trial {number} of study {study.study_name!r} is not a feasible completed trial; try --trial best")
    return frozen


def export_trial(
    study_name: str, storage_url: str, trial: str | int, out_dir: str | Path, *, epochs: int = 20
) -> dict[str, Any]:
    """Export one trial of a nas-search study into ``out_dir``."""
    from nas_search.search.study import load_existing_study, open_storage
    from nas_search.training.checkpoint import checkpoint_checksum

    if epochs < 1:
        raise UserError(f"--epochs {epochs}; accepted: 1 or more (the epochs written into train.yaml)")
    check_output_path(out_dir, "--out", kind="folder")
    study = load_existing_study(study_name, open_storage(storage_url, heartbeat=False))
    frozen = _resolve_trial(study, trial)
    attributes = study.user_attrs
    record = TrialRecord.from_trial(frozen)
    spec = ArchSpec.from_json(record.arch_json)
    checkpoint = Path(attributes["supernet"])
    if not checkpoint.exists():
        raise UserError(f"supernet checkpoint {checkpoint} of study {study_name!r} is missing")
    checksum, recorded = checkpoint_checksum(checkpoint), attributes.get("supernet_checksum")
    if recorded is not None and checksum != recorded:
        raise UserError(
            f"supernet checkpoint {checkpoint} changed since study {study_name!r} scored its trials (sha256 "
            f"{checksum}, recorded {recorded}); its inherited weights would not be the scored ones: restore that "
            "file, or search again under a new --study"
        )
    task = attributes.get("task", "classify")
    exported = get_task(task).export_model(ExportRequest(spec, checkpoint, attributes, record.attributes, epochs))
    input_size = int(attributes["input_size"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        (staging / "arch.yaml").write_text(spec.to_yaml())
        (staging / "train.yaml").write_text(
            "# nas-search train train.yaml -- fine-tunes from the inherited weights (init: inherited) or\n"
            "# trains from scratch (init: scratch). Paths are relative to this file. input_size is the\n"
            "# training size: the deployment size on real data, the supernet's proxy size on a built-in\n"
            "# demo (override with `nas-search train --input-size N`); device: auto uses CUDA when present.\n"
            + exported.train_notes
            + yaml.safe_dump(exported.train_config, sort_keys=False)
        )
        torch.save(exported.model.state_dict(), staging / "model.pt")
        onnx_difference = export_onnx(
            exported.onnx_module, input_size, staging / "model.onnx", exported.output_names, exported.log_outputs
        )
        latency = onnxruntime_latency_ms(staging / "model.onnx", input_size)
        meta = {
            "study": study_name,
            "storage": storage_url,
            "trial": frozen.number,
            "task": task,
            "arch": str(spec),
            "space": spec.space,
            "flops": exported.flops,
            "params": exported.params,
            "input_size": input_size,
            **exported.meta,
            "latency_ms": {"cpu-onnxruntime-2threads": latency},
            "onnx_max_abs_difference": onnx_difference,
            "supernet": str(checkpoint),
            "supernet_checksum": checksum,
            "flops_convention": "fvcore: 1 multiply-add = 1 FLOP",
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        for name in EXPORT_FILES:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"out": str(out_dir), "files": [str(out_dir / name) for name in EXPORT_FILES], **meta}


def load_exported(directory: str | Path) -> torch.nn.Module:
    """Rebuild an exported model from ``arch.yaml`` + ``meta.json`` + ``model.pt`` (a
    classifier, or a detector with its post-processing settings)."""
    directory = Path(directory)
    spec = load_arch(directory / "arch.yaml")
    meta_path = directory / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    model = get_task(meta.get("task", "classify")).load_exported(spec, get_space(spec.space), meta)
    state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
