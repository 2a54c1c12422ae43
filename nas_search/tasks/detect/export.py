"""Exporting a searched detector (``nas-search export`` of a ``detect`` study) and
rebuilding it, with its post-processing settings, from the exported files."""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from nas_search.errors import UserError
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec
from nas_search.tasks.base import ExportedModel, ExportRequest, exported_data_path, training_size

#: The ``train.yaml`` comment lines on a detector's resize mode.
RESIZE_NOTE = (
    "# resize (detectors): square stretches images to input_size x input_size, longer-side keeps the\n"
    "# aspect ratio; keep the mode the weights were trained with (a file without it means longer-side).\n"
)


def export_detector(request: ExportRequest) -> ExportedModel:
    """The detector of an exported trial: inherited, BN-recalibrated weights at the deployment
    size, ``train.yaml`` and the ``meta.json`` entries (mAP, classes, ONNX outputs and
    post-processing)."""
    from nas_search.hw_models.flops import count_flops
    from nas_search.tasks.detect.data import load_detection_data
    from nas_search.tasks.detect.evaluate import detection_calibration_batches, recalibrate_detection_batch_norm
    from nas_search.tasks.detect.static import EXP_CODED_OUTPUTS, HEAD_OUTPUTS
    from nas_search.tasks.detect.supernet_training import load_detection_supernet

    spec, checkpoint, attributes, epochs = request.spec, request.checkpoint, request.study_attributes, request.epochs

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
        "map50": request.trial_attributes.get("map50"),
        "map": request.trial_attributes.get("map"),
        "score_input_size": image_size,
        "num_classes": num_classes,
        "class_names": list(metadata.get("classes") or []),
        "resize": model.resize,
        "onnx": _onnx_description(input_size, model.resize, strides),
        "postprocess": postprocess,
    }
    core = model.core().eval()
    return ExportedModel(
        model,
        core,
        tuple(HEAD_OUTPUTS),
        train_config,
        meta,
        cost.flops,
        cost.params,
        log_outputs=EXP_CODED_OUTPUTS,
        train_notes=RESIZE_NOTE,
    )


def _onnx_description(input_size: int, resize: str, strides: tuple[int, ...]) -> dict[str, Any]:
    """How to feed the fixed-shape ONNX input and read its outputs (``meta.json``)."""
    from nas_search.tasks.detect.static import IMAGE_MEAN, IMAGE_STD

    onnx_resize = {  # how to feed the fixed-shape ONNX input, per resize mode
        "square": f"stretched to {input_size} x {input_size} (aspect ratio not kept)",
        "longer-side": f"resized so the longer side is {input_size} (aspect ratio kept) and zero-padded to "
        f"{input_size} x {input_size} at the bottom and right",
    }
    return {
        "input": f"images: float32 [batch, 3, {input_size}, {input_size}], RGB in [0, 1] normalised with "
        f"mean {list(IMAGE_MEAN)} and std {list(IMAGE_STD)}, "
        + onnx_resize[resize]
        + f" (resize mode {resize!r}); boxes come out in those input pixels: scale them back "
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
    }


def load_exported_detector(spec: ArchSpec, space: SearchSpace, meta: dict[str, Any]) -> nn.Module:
    """The detector module of an export with its post-processing settings (weights not
    loaded yet; ``space`` is not needed: ``spec`` holds the whole detector). Exports from
    before resize modes existed were trained longer-side."""
    from nas_search.tasks.detect.build import build_detector
    from nas_search.tasks.detect.static import LEGACY_RESIZE

    return build_detector(
        spec,
        int(cast(Any, meta.get("num_classes"))),
        int(meta["input_size"]),
        resize=meta.get("resize", LEGACY_RESIZE),
        **meta.get("postprocess", {}),
    )


__all__ = ["RESIZE_NOTE", "export_detector", "load_exported_detector"]
