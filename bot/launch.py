"""The `asana-export-bot` console script: the imports run with the garbage collector paused.

Importing the bot (SQLAlchemy, aiohttp, Bolt, pydantic, our modules) makes a few hundred
thousand objects that live as long as the process, yet the cyclic collector ran about 250
times during it: 119 ms of a 744 ms import (counted with `gc.callbacks`), a sixth of start-up.
So collection waits until the imports are done; then `gc.freeze()` moves what they made to the
permanent generation, which later full collections skip as well.

The command line itself is light (click, the settings); each command imports what it needs
when it runs, so a command's own imports go through `collector_paused` too.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Run imports without cyclic collections, then freeze what they made (see module doc).
    Leaves the collector as it found it (a test runner may have it off)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def main() -> None:
    """Import the command line with the collector paused, then run it."""
    with collector_paused():
        from bot.cli import main as command_line
    command_line()
