"""Small shared utilities: atomic file writes, checksums, channel rounding."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
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
