"""What every command module shares: the one-line parser, the :class:`Command` row, and
:func:`emit` for ``--json`` or human output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

FLOPS_NOTE = "FLOPs follow fvcore: 1 multiply-add = 1 FLOP (FLOPs = MACs)."


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


@dataclass(frozen=True)
class Command:
    """One CLI command: its arguments and the function it calls."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Any]


#: Where ``--json`` documents go: the real stdout, while :func:`main` sends everything else
#: a command prints (progress lines, "resuming ...") to stderr, so stdout parses as JSON.
JSON_STREAMS: list[TextIO] = []


def json_stream() -> TextIO:
    """The stream for ``--json`` output: the process's stdout even while a command runs."""
    return JSON_STREAMS[-1] if JSON_STREAMS else sys.stdout


def emit(arguments: argparse.Namespace, payload: Any, human: Callable[[], None] | str | None = None) -> None:
    """Print JSON with ``--json`` (to the real stdout, alone), otherwise the human form."""
    if getattr(arguments, "json", False):
        if is_main_rank():  # under torchrun, one document
            print(
                json.dumps(payload, indent=None if isinstance(payload, list) else 2, default=str),
                file=json_stream(),
                flush=True,
            )
    elif callable(human):
        human()
    elif human is not None:
        print(human)


def is_main_rank() -> bool:
    """Whether this process is rank 0 (or not under torchrun)."""
    return os.environ.get("RANK", "0") == "0"
