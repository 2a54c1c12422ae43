"""Exporting a searched classifier (``nas-search export`` of a ``classify`` study) and
rebuilding it from the exported files."""

from __future__ import annotations

from typing import Any

from torch import nn

from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec
from nas_search.tasks.base import ExportedModel, ExportRequest, exported_data_path, training_size


def export_classifier(request: ExportRequest) -> ExportedModel:
    """The classifier of an exported trial: inherited, BN-recalibrated weights, ``train.yaml``
    and the ``meta.json`` entries (top-1 accuracy, classes, the ONNX input)."""
    from nas_search.hw_models.flops import count_flops
    from nas_search.tasks.classify.data import SMALL_INPUT_LIMIT, VALIDATION_CROP_RATIO, load_classification_data
    from nas_search.tasks.classify.evaluate import calibration_tensor, recalibrate_batch_norm
    from nas_search.tasks.classify.supernet_training import load_supernet

    spec, checkpoint, attributes, epochs = request.spec, request.checkpoint, request.study_attributes, request.epochs
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
        "accuracy": request.trial_attributes.get("accuracy"),
        "accuracy_input_size": metadata["input_size"],
        "num_classes": metadata["num_classes"],
        "class_names": metadata.get("class_names"),
        "onnx": {
            "input": f"input: float32 [batch, 3, {input_size}, {input_size}], RGB pixels / 255 normalised with mean "
            f"{[round(value, 4) for value in data.mean]} and std {[round(value, 4) for value in data.std]}"
            + (
                f", resized to {input_size} and centre-cropped"
                if input_size <= SMALL_INPUT_LIMIT
                else f", the shorter side resized to {round(input_size / VALIDATION_CROP_RATIO)} and centre-cropped "
                f"to {input_size}"
            ),
            "outputs": {"logits": "[batch, classes] class logits (softmax for probabilities), in class_names order"},
        },
    }
    return ExportedModel(model, model, ("logits",), train_config, meta, cost.flops, cost.params)


def load_exported_classifier(spec: ArchSpec, space: SearchSpace, meta: dict[str, Any]) -> nn.Module:
    """The classifier module of an export of ``space`` (weights not loaded yet)."""
    from nas_search.spaces.static import build_static_model

    return build_static_model(space.resolve(spec, num_classes=meta.get("num_classes")))


__all__ = ["export_classifier", "load_exported_classifier"]
