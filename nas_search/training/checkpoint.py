"""Supernet checkpoints: atomic saves, safe loads (``weights_only=True``), clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas_search.errors import UserError, missing_file
from nas_search.utils import atomic_torch_save, file_sha256

SUPERNET_FORMAT = "nas-search-supernet"
MODEL_FORMAT = "nas-search-model"
DETECTION_SUPERNET_FORMAT = "nas-search-detection-supernet"

#: The weight layout each supernet format is written in; a checkpoint of another version
#: is refused with a clear error. Version 2: an scc block's weights are its position's dsc
#: block's (``BlockKind.shares_weights_with``), so version-1 weights do not map.
FORMAT_VERSIONS = {SUPERNET_FORMAT: 2, DETECTION_SUPERNET_FORMAT: 2}

#: Entries every checkpoint holds, with their types, and those a supernet's adds: a file
#: of the right format without them (edited, or written by a foreign tool) is refused
#: with one line instead of failing later on a missing key.
REQUIRED_ENTRIES: dict[str, type | tuple[type, ...]] = {"model": dict, "epoch": int}
SUPERNET_ENTRIES: dict[str, type | tuple[type, ...]] = {"space": str, "num_classes": int}


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Atomically write a checkpoint dict (written to a temporary file, then renamed)."""
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path, expected_format: str = SUPERNET_FORMAT, space: str | None = None) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check its format (and space)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {missing_file(path)}: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types on foreign files (KeyError, UnpicklingError, ...)
        raise UserError(
            f"{path} is not a nas-search checkpoint, or is truncated or corrupt (torch.load: {_first_words(error)})"
        ) from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != expected_format:
        kind = (
            f"a {found} checkpoint"
            if isinstance(found, str) and found.startswith("nas-search-")
            else ("not a nas-search checkpoint")
        )
        raise UserError(f"{path} is {kind}; accepted here: a {expected_format} checkpoint")
    required = FORMAT_VERSIONS.get(expected_format)
    if required is not None and payload.get("format_version") != required:
        raise UserError(
            f"checkpoint {path} has format_version {payload.get('format_version')!r}, written by another nas-search "
            f"version; this one reads {required}: train the supernet again"
        )
    entries = {**REQUIRED_ENTRIES, **(SUPERNET_ENTRIES if expected_format in FORMAT_VERSIONS else {})}
    for key, expected_type in entries.items():
        value = payload.get(key)
        if not isinstance(value, expected_type) or isinstance(value, bool):
            found = "missing" if key not in payload else f"a {type(value).__name__}"
            type_name = expected_type.__name__ if isinstance(expected_type, type) else expected_type
            raise UserError(f"checkpoint {path} is damaged: its {key!r} entry is {found}, not a {type_name}; train it again")
    if space is not None:
        check_checkpoint_space(payload, path, space)
    return payload


def check_checkpoint_space(payload: dict[str, Any], path: str | Path, space: str) -> None:
    """Refuse a loaded checkpoint of another space (one line naming both)."""
    if payload.get("space") != space:
        raise UserError(f"checkpoint {path} is for space {payload.get('space')!r}, not {space!r}")


def _first_words(error: Exception, limit: int = 80) -> str:
    """The start of an error's first line, cut at a word boundary."""
    text = f"{type(error).__name__}: {str(error).splitlines()[0]}" if str(error) else type(error).__name__
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def refuse_to_overwrite(path: str | Path, resume: bool, elsewhere: str) -> None:
    """Without ``resume``, an existing checkpoint (a finished or interrupted run's) is not
    replaced: a retyped command must not destroy days of training. One-line error naming
    the two ways on: ``--resume``, or ``elsewhere`` (e.g. ``--out DIR``)."""
    from nas_search.utils import check_output_path

    path = Path(path)
    check_output_path(path, "--out")
    if not resume and path.exists():
        raise UserError(
            f"{path} already exists (an earlier run's checkpoint); pass --resume to continue it, or "
            f"{elsewhere} to start a new run"
        )


def checkpoint_checksum(path: str | Path) -> str:
    """Short SHA-256 of a checkpoint file, recorded in studies and exports."""
    return file_sha256(path)


def check_steps_per_epoch(payload: dict, steps: int, path: str | Path) -> None:
    """Refuse to resume a checkpoint whose epochs had another number of optimizer steps
    (another training-set size, batch size or number of ``torchrun`` processes): its
    learning-rate schedule counts steps, so it would jump. Checkpoints written before this
    check carry no count and pass."""
    trained = payload.get("steps_per_epoch")
    if trained is not None and trained != steps:
        raise UserError(
            f"checkpoint {path} was trained with {trained} steps per epoch, not {steps} (another number of training "
            "images, batch size or torchrun processes); continue it with the same --max-train, batch size and "
            "processes, or start a new checkpoint (train: without --resume; run: another --study)"
        )


#: One name per concept: the typed view's field, then the keys that hold it on disk, in the
#: order they are looked up (detection supernets write ``image_size`` and ``classes``).
CHECKPOINT_KEY_NAMES: dict[str, tuple[str, ...]] = {
    "input_size": ("input_size", "image_size"),
    "class_names": ("class_names", "classes"),
}

#: The states a checkpoint holds besides its metadata.
STATE_ENTRIES: tuple[str, ...] = ("model", "optimizer", "scheduler", "scaler", "random_states")


def _entry(payload: dict[str, Any], name: str, default: Any = None) -> Any:
    """The value of a typed-view field, under whichever of its on-disk keys is present."""
    for key in CHECKPOINT_KEY_NAMES.get(name, (name,)):
        if key in payload:
            return payload[key]
    return default


@dataclass(frozen=True)
class SupernetCheckpoint:
    """Typed view of a supernet checkpoint (classification or detection), read from a
    loaded payload with one name per concept: ``input_size`` is the proxy training size
    (``image_size`` in detection checkpoints), ``class_names`` the class names
    (``classes`` there). Files written before the view existed read the same way.

    ``payload`` is the loaded dict itself, for the model and optimizer states."""

    format: str
    space: str
    num_classes: int
    epoch: int
    input_size: int | None = None
    class_names: tuple[str, ...] = ()
    epochs: int | None = None
    steps_per_epoch: int | None = None
    resize: str | None = None
    dataset: str | None = None
    data: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    history: tuple[dict, ...] = ()
    payload: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> SupernetCheckpoint:
        """The typed view of a payload checked by :func:`load_checkpoint`."""
        size = _entry(payload, "input_size")
        return cls(
            format=payload["format"],
            space=payload["space"],
            num_classes=int(payload["num_classes"]),
            epoch=int(payload["epoch"]),
            input_size=None if size is None else int(size),
            class_names=tuple(_entry(payload, "class_names", ())),
            epochs=payload.get("epochs"),
            steps_per_epoch=payload.get("steps_per_epoch"),
            resize=payload.get("resize"),
            dataset=payload.get("dataset"),
            data=payload.get("data"),
            config=dict(payload.get("config") or {}),
            history=tuple(payload.get("history", ())),
            payload=payload,
        )

    def metadata(self) -> dict[str, Any]:
        """The payload without its states, plus every concept under its typed name (a
        detection checkpoint's ``image_size`` also as ``input_size``)."""
        metadata = {key: value for key, value in self.payload.items() if key not in STATE_ENTRIES}
        for name, keys in CHECKPOINT_KEY_NAMES.items():
            if name not in metadata and any(key in metadata for key in keys):
                metadata[name] = _entry(metadata, name)
        return metadata


def read_supernet_checkpoint(
    path: str | Path, expected_format: str = SUPERNET_FORMAT, space: str | None = None
) -> SupernetCheckpoint:
    """Load a supernet checkpoint as :func:`load_checkpoint` does and return its typed view."""
    return SupernetCheckpoint.from_payload(load_checkpoint(path, expected_format, space))
