"""The ``nas-search`` command line: one table of commands (:data:`nas_search.cli.main.COMMANDS`),
each a thin wrapper that parses arguments and calls the library. Nothing imports this package."""

from nas_search.cli.main import main

__all__ = ["main"]
