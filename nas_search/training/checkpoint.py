"""Supernet checkpoints: atomic saves, safe loads (``weights_only=True``), clear errors."""

from __future__ import annotations

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
#: block's (``spaces.blocks.SHARED_BLOCK_WEIGHTS``), so version-1 weights do not map.
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
        raise UserError(f"{path} is not a nas-search checkpoint, or is truncated or corrupt (torch.load: "
                        f"{_first_words(error)})") from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != expected_format:
        kind = f"a {found} checkpoint" if isinstance(found, str) and found.startswith("nas-search-") else (
            "not a nas-search checkpoint")
        raise UserError(f"{path} is {kind}; accepted here: a {expected_format} checkpoint")
    required = FORMAT_VERSIONS.get(expected_format)
    if required is not None and payload.get("format_version") != required:
        raise UserError(
            f"checkpoint {path} has format_version {payload.get('format_version')!r}, written by another nas-search "
            f"version; this one reads {required}: train the supernet again"
        )
    entries = {**REQUIRED_ENTRIES, **(SUPERNET_ENTRIES if expected_format in FORMAT_VERSIONS else {})}
    for key, kind in entries.items():
        value = payload.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            found = "missing" if key not in payload else f"a {type(value).__name__}"
            raise UserError(f"checkpoint {path} is damaged: its {key!r} entry is {found}, not a "
                            f"{kind.__name__ if isinstance(kind, type) else kind}; train it again")
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
        raise UserError(f"{path} already exists (an earlier run's checkpoint); pass --resume to continue it, or "
                        f"{elsewhere} to start a new run")


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
