"""User-facing errors.

Anything raised as :class:`UserError` is a problem with what the user supplied (a budget
string, a config, a data folder, a checkpoint, a storage URL).  The CLI prints its message
as one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import os


class UserError(ValueError):
    """Bad user input. The message names the bad value and what is accepted."""

    exit_code = 2


def missing_file(path: str | os.PathLike[str]) -> str:
    """Why ``path`` cannot be read as a file, in words: it is a folder, or it is not there."""
    from pathlib import Path

    return "is a folder, not a file" if Path(path).is_dir() else "not found"
