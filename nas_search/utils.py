"""Small shared utilities: atomic file writes, checksums, channel rounding."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write a file via a temporary sibling and rename it into place.

    ``write`` receives the temporary path. Either the new file appears complete, or the old
    one (if any) is left untouched. The file gets the old one's permissions, or those of a
    plainly created file (``0o666`` less the umask), not the temporary file's private ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else _created_file_mode()
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    temporary = Path(temporary_name)
    try:
        write(temporary)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def check_output_path(path: str | Path, option: str, kind: str = "file") -> None:
    """Refuse, before any work, an output ``path`` that cannot be written, with a one-line
    :class:`~nas_search.errors.UserError` naming ``option``: for ``kind="file"`` an existing
    folder; for ``kind="folder"`` an existing file; for both, a location where nothing can
    be created (a file on the way, a read-only or virtual file system). The test creates
    and removes a temporary file in the nearest existing folder on the way."""
    from nas_search.errors import UserError

    path = Path(path)
    if kind == "file" and path.is_dir():
        raise UserError(f"{option} {path} is a folder; accepted: a file path")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; accepted: a folder (new or existing)")
    nearest = path if kind == "folder" else path.parent
    nearest = Path(os.path.abspath(nearest))
    while not nearest.exists():
        nearest = nearest.parent
    if not nearest.is_dir():
        raise UserError(
            f"{option} {path}: {nearest} is a file, so nothing can be written there; accepted: a path in a writable folder"
        )
    try:
        with tempfile.TemporaryFile(dir=nearest):
            pass
    except OSError as error:
        raise UserError(
            f"{option} {path}: cannot write in {nearest} ({error.strerror}); accepted: a path in a writable folder"
        ) from None


def _current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting and
    restoring it would briefly unmask files other threads create)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


def _read_umask_once() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _read_umask_once()  # at import, before any thread of ours exists


def _created_file_mode() -> int:
    """Permissions ``open(path, "w")`` would give a new file: ``0o666`` less the umask."""
    return 0o666 & ~_current_umask()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write text."""
    return atomic_write(path, lambda temporary: temporary.write_text(text))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """Atomically ``torch.save`` an object."""
    import torch

    return atomic_write(path, lambda temporary: torch.save(obj, temporary))


def file_sha256(path: str | Path, length: int = 16) -> str:
    """Hex SHA-256 of a file, truncated to ``length`` characters."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def round_channels(value: float, divisor: int, minimum: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` (at least ``minimum``,
    which defaults to ``divisor``), never going more than 10% below ``value``
    (the MobileNet rounding rule)."""
    minimum = divisor if minimum is None else minimum
    rounded = max(minimum, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
