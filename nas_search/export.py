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
from nas_search.spaces import get_space
from nas_search.spaces.static import StaticNetwork, build_static_model
from nas_search.spec import ArchSpec, load_arch

EXPORT_FILES = ("arch.yaml", "train.yaml", "model.pt", "model.onnx", "meta.json")


def export_onnx(model: torch.nn.Module, input_size: int, path: str | Path) -> float:
    """Write ``model`` as ONNX (batch dimension dynamic), run it in onnxruntime and return
    the max abs difference from PyTorch; raise if they disagree."""
    import onnxruntime

    model = model.eval()
    example = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(
        model, (example,), str(path), input_names=["images"], output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(example).numpy()
    actual = session.run(None, {"images": example.numpy()})[0]
    difference = float(np.abs(actual - expected).max())
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
    if frozen.state != TrialState.COMPLETE or not frozen.user_attrs.get("feasible"):
        raise UserError(f"trial {number} of study {study.study_name!r} is not a feasible completed trial; try --trial best")
    return frozen


def export_trial(study_name: str, storage_url: str, trial: str | int, out_dir: str | Path, *, epochs: int = 20) -> dict[str, Any]:
    """Export one trial of a nas-search study into ``out_dir``."""
    from nas_search.data import load_classification_data
    from nas_search.evaluators.classification import calibration_tensor, recalibrate_batch_norm
    from nas_search.hw_models.flops import count_flops
    from nas_search.search.study import load_existing_study, open_storage
    from nas_search.training.checkpoint import checkpoint_checksum
    from nas_search.training.supernet_training import load_supernet

    study = load_existing_study(study_name, open_storage(storage_url, heartbeat=False))
    frozen = _resolve_trial(study, trial)
    attributes = study.user_attrs
    spec = ArchSpec.from_json(frozen.user_attrs["arch_json"])
    checkpoint = Path(attributes["supernet"])
    if not checkpoint.exists():
        raise UserError(f"supernet checkpoint {checkpoint} of study {study_name!r} is missing")
    supernet, metadata = load_supernet(checkpoint, space=spec.space)
    data = load_classification_data(metadata.get("data"), input_size=metadata["input_size"], augment=False, max_val=1)
    model = supernet.extract(spec)
    recalibrate_batch_norm(model, calibration_tensor(data.train, 512).split(64))
    model.eval()
    input_size = int(attributes["input_size"])
    cost = count_flops(spec, supernet.space, input_size, metadata["num_classes"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        (staging / "arch.yaml").write_text(spec.to_yaml())
        train_config = {
            "arch": spec.to_dict(),
            "data": metadata.get("data"),
            "num_classes": metadata["num_classes"],
            "input_size": metadata["input_size"],
            "deployment_input_size": input_size,
            "init": "inherited",
            "weights": "model.pt",
            "optimizer": "sgd",
            "learning_rate": 0.01,
            "weight_decay": 4e-5,
            "schedule": "cosine",
            "warmup_epochs": 0.5,
            "label_smoothing": 0.1,
            "epochs": epochs,
            "batch_size": 64,
            "seed": 0,
            "out": "trained",
        }
        (staging / "train.yaml").write_text(
            "# nas-search train train.yaml -- fine-tunes from the inherited weights (init: inherited) or\n"
            "# trains from scratch (init: scratch). Paths are relative to this file.\n"
            + yaml.safe_dump(train_config, sort_keys=False)
        )
        torch.save(model.state_dict(), staging / "model.pt")
        onnx_difference = export_onnx(model, input_size, staging / "model.onnx")
        latency = onnxruntime_latency_ms(staging / "model.onnx", input_size)
        meta = {
            "study": study_name,
            "storage": storage_url,
            "trial": frozen.number,
            "arch": str(spec),
            "space": spec.space,
            "flops": cost.flops,
            "params": cost.params,
            "input_size": input_size,
            "accuracy": frozen.user_attrs.get("accuracy"),
            "accuracy_input_size": metadata["input_size"],
            "latency_ms": {"cpu-onnxruntime-2threads": latency},
            "onnx_max_abs_difference": onnx_difference,
            "supernet": str(checkpoint),
            "supernet_checksum": checkpoint_checksum(checkpoint),
            "num_classes": metadata["num_classes"],
            "class_names": metadata.get("class_names"),
            "flops_convention": "fvcore: 1 multiply-add = 1 FLOP",
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        for name in EXPORT_FILES:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"out": str(out_dir), "files": [str(out_dir / name) for name in EXPORT_FILES], **meta}


def load_exported(directory: str | Path) -> StaticNetwork:
    """Rebuild an exported model from ``arch.yaml`` + ``meta.json`` + ``model.pt``."""
    directory = Path(directory)
    spec = load_arch(directory / "arch.yaml")
    meta_path = directory / "meta.json"
    num_classes = json.loads(meta_path.read_text())["num_classes"] if meta_path.exists() else None
    network = get_space(spec.space).resolve(spec, num_classes=num_classes)
    model = build_static_model(network)
    state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
