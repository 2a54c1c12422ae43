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
from dataclasses import dataclass
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
from nas_search.utils import check_output_path
from nas_search.tasks import get_space
from nas_search.spaces.static import build_static_model
from nas_search.spec import ArchSpec, load_arch

EXPORT_FILES = ("arch.yaml", "train.yaml", "model.pt", "model.onnx", "meta.json")


def export_onnx(model: torch.nn.Module, input_size: int, path: str | Path,
                output_names: tuple[str, ...] = ("logits",), log_outputs: tuple[str, ...] = ()) -> float:
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
        model, (example,), str(path), input_names=["images"], output_names=list(output_names),
        dynamic_axes={"images": {0: "batch"}, **{name: {0: "batch"} for name in output_names}},
        opset_version=17, dynamo=False,
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
    if frozen.state != TrialState.COMPLETE or not frozen.user_attrs.get("feasible"):
        raise UserError(f"trial {number} of study {study.study_name!r} is not a feasible completed trial; try --trial best")
    return frozen


@dataclass
class ExportedModel:
    """What a task's exporter produces before the files are written.

    Attributes:
        model: the standalone model (``state_dict`` goes to ``model.pt``).
        onnx_module: the module exported to ``model.onnx`` (the classifier; for a detector,
            the network without transform and post-processing).
        output_names: ONNX output names.
        train_config: the contents of ``train.yaml``.
        meta: task-specific entries of ``meta.json``.
        flops, params: analytic costs at the deployment size.
        log_outputs: exp-coded outputs that the ONNX check compares as logs (see
            :func:`export_onnx`).
    """

    model: torch.nn.Module
    onnx_module: torch.nn.Module
    output_names: tuple[str, ...]
    train_config: dict[str, Any]
    meta: dict[str, Any]
    flops: int
    params: int
    log_outputs: tuple[str, ...] = ()


def training_size(data: str | None, proxy_size: int, deployment_size: int) -> int:
    """The ``input_size`` an exported ``train.yaml`` trains at: the deployment size on real
    data (the network is trained where it will run), the proxy size on a built-in demo
    (its images are rendered small; upsampling them teaches nothing and costs
    ``(deployment / proxy)^2`` times the compute). ``nas-search train --input-size`` overrides."""
    return deployment_size if data is not None else proxy_size


def exported_data_path(attributes: dict, metadata: dict) -> str | None:
    """The training data of an export as an absolute path (the study's, else the
    supernet's), so ``train.yaml`` works from any folder; None for a built-in demo."""
    data = attributes.get("data") or metadata.get("data")
    return None if data is None else str(Path(data).expanduser().resolve())


def _export_classifier(spec: ArchSpec, checkpoint: Path, attributes: dict, frozen, epochs: int) -> ExportedModel:
    from nas_search.tasks.classify.data import load_classification_data
    from nas_search.tasks.classify.evaluate import calibration_tensor, recalibrate_batch_norm
    from nas_search.hw_models.flops import count_flops
    from nas_search.tasks.classify.supernet_training import load_supernet

    from nas_search.tasks.classify.data import SMALL_INPUT_LIMIT, VALIDATION_CROP_RATIO

    supernet, metadata = load_supernet(checkpoint, space=spec.space)
    data_path = exported_data_path(attributes, metadata)
    data = load_classification_data(data_path, input_size=metadata["input_size"], augment=False, max_val=1)
    model = supernet.extract(spec)
    recalibrate_batch_norm(model, calibration_tensor(data.train, 512).split(64))
    model.eval()
    input_size = int(attributes["input_size"])
    cost = count_flops(spec, supernet.space, input_size, metadata["num_classes"])
    train_config = {
        "arch": spec.to_dict(),
        "data": data_path,
        "num_classes": metadata["num_classes"],
        "input_size": training_size(data_path, metadata["input_size"], input_size),
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
        "device": "auto",
        "out": "trained",
    }
    meta = {
        "accuracy": frozen.user_attrs.get("accuracy"),
        "accuracy_input_size": metadata["input_size"],
        "num_classes": metadata["num_classes"],
        "class_names": metadata.get("class_names"),
        "onnx": {
            "input": f"input: float32 [batch, 3, {input_size}, {input_size}], RGB pixels / 255 normalised with mean "
                     f"{[round(value, 4) for value in data.mean]} and std {[round(value, 4) for value in data.std]}"
                     + (f", resized to {input_size} and centre-cropped" if input_size <= SMALL_INPUT_LIMIT else
                        f", the shorter side resized to {round(input_size / VALIDATION_CROP_RATIO)} and centre-cropped "
                        f"to {input_size}"),
            "outputs": {"logits": "[batch, classes] class logits (softmax for probabilities), in class_names order"},
        },
    }
    return ExportedModel(model, model, ("logits",), train_config, meta, cost.flops, cost.params)


def _export_detector(spec: ArchSpec, checkpoint: Path, attributes: dict, frozen, epochs: int) -> ExportedModel:
    from nas_search.tasks.detect.data import load_detection_data
    from nas_search.tasks.detect.static import EXP_CODED_OUTPUTS, HEAD_OUTPUTS, IMAGE_MEAN, IMAGE_STD
    from nas_search.tasks.detect.evaluate import detection_calibration_batches, recalibrate_detection_batch_norm
    from nas_search.hw_models.flops import count_flops
    from nas_search.tasks.detect.supernet_training import load_detection_supernet

    supernet, metadata = load_detection_supernet(checkpoint)
    if metadata.get("space") != spec.space:
        raise UserError(f"checkpoint {checkpoint} is for space {metadata.get('space')!r}, not {spec.space!r}")
    image_size = int(metadata["image_size"])
    data_path = exported_data_path(attributes, metadata)
    data = load_detection_data(data_path, input_size=image_size, augment=False, max_val=1, resize=supernet.resize)
    model = supernet.extract(spec)
    recalibrate_detection_batch_norm(model, detection_calibration_batches(data.train, 256, batch_size=16))
    input_size = int(attributes["input_size"])
    model.set_image_size(input_size)
    model.eval()
    num_classes = int(metadata["num_classes"])
    cost = count_flops(spec, supernet.space, input_size, num_classes)
    strides = supernet.space.resolve(spec, num_classes=num_classes).strides
    postprocess = dict(model.detector_options)
    onnx_resize = {  # how to feed the fixed-shape ONNX input, per resize mode
        "square": f"stretched to {input_size} x {input_size} (aspect ratio not kept)",
        "longer-side": f"resized so the longer side is {input_size} (aspect ratio kept) and zero-padded to "
                       f"{input_size} x {input_size} at the bottom and right",
    }
    train_config = {
        "task": "detect",
        "arch": spec.to_dict(),
        "data": data_path,
        "num_classes": num_classes,
        "classes": list(metadata.get("classes") or []),
        "input_size": training_size(data_path, image_size, input_size),
        "deployment_input_size": input_size,
        "resize": model.resize,
        "init": "inherited",
        "weights": "model.pt",
        "optimizer": "adamw",
        "learning_rate": 5e-4,
        "weight_decay": 1e-4,
        "warmup_epochs": 1.0,
        "epochs": epochs,
        "batch_size": 16,
        "seed": 0,
        "out": "trained",
        "postprocess": postprocess,
    }
    meta = {
        "map50": frozen.user_attrs.get("map50"),
        "map": frozen.user_attrs.get("map"),
        "score_input_size": image_size,
        "num_classes": num_classes,
        "class_names": list(metadata.get("classes") or []),
        "resize": model.resize,
        "onnx": {
            "input": f"images: float32 [batch, 3, {input_size}, {input_size}], RGB in [0, 1] normalised with "
                     f"mean {list(IMAGE_MEAN)} and std {list(IMAGE_STD)}, "
                     + onnx_resize[model.resize]
                     + f" (resize mode {model.resize!r}); boxes come out in those input pixels: scale them back "
                       "by the image's own width and height factors",
            "outputs": {
                "cls_logits": "[batch, anchors, classes + 1] logits (sigmoid; column 0 is background)",
                "bbox_regression": "[batch, anchors, 4] FCOS box distances (left, top, right, bottom) in units of the "
                                   "level's stride, decoded as torchvision's BoxLinearCoder(normalize_by_size=True)",
                "bbox_ctrness": "[batch, anchors, 1] centerness logits; score = sqrt(sigmoid(cls) * sigmoid(ctrness))",
            },
            "anchor_points": f"one per feature-map cell at strides {', '.join(map(str, strides))} "
                             f"(maps of {', '.join(str(-(-input_size // stride)) for stride in strides)} cells a side), "
                             "level by level, row-major; anchor size = stride",
            "post_processing": "not in the ONNX file: per level keep scores > score_thresh, the top "
                               "topk_candidates, decode boxes, then class-wise NMS at nms_thresh and keep "
                               "detections_per_img (settings below)",
        },
        "postprocess": postprocess,
    }
    core = model.core().eval()
    return ExportedModel(model, core, tuple(HEAD_OUTPUTS), train_config, meta, cost.flops, cost.params,
                         log_outputs=EXP_CODED_OUTPUTS)


#: One exporter per task (the study's ``task`` attribute).
EXPORTERS = {"classify": _export_classifier, "detect": _export_detector}


def export_trial(study_name: str, storage_url: str, trial: str | int, out_dir: str | Path, *, epochs: int = 20) -> dict[str, Any]:
    """Export one trial of a nas-search study into ``out_dir``."""
    from nas_search.search.study import load_existing_study, open_storage
    from nas_search.training.checkpoint import checkpoint_checksum

    if epochs < 1:
        raise UserError(f"--epochs {epochs}; accepted: 1 or more (the epochs written into train.yaml)")
    check_output_path(out_dir, "--out", kind="folder")
    study = load_existing_study(study_name, open_storage(storage_url, heartbeat=False))
    frozen = _resolve_trial(study, trial)
    attributes = study.user_attrs
    spec = ArchSpec.from_json(frozen.user_attrs["arch_json"])
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
    exported = EXPORTERS[task](spec, checkpoint, attributes, frozen, epochs)
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
            + ("# resize (detectors): square stretches images to input_size x input_size, longer-side keeps the\n"
               "# aspect ratio; keep the mode the weights were trained with (a file without it means longer-side).\n"
               if "resize" in exported.train_config else "")
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
    num_classes = meta.get("num_classes")
    if meta.get("task") == "detect":
        from nas_search.tasks.detect.static import LEGACY_RESIZE, build_detector

        # Exports from before resize modes existed were trained longer-side.
        model = build_detector(spec, int(num_classes), int(meta["input_size"]), resize=meta.get("resize", LEGACY_RESIZE),
                               **meta.get("postprocess", {}))
    else:
        model = build_static_model(get_space(spec.space).resolve(spec, num_classes=num_classes))
    state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
