"""The `asana-export-bot` console script: the imports run with the garbage collector paused.

Importing the bot (SQLAlchemy, aiohttp, Bolt, pydantic, our modules) makes a few hundred
thousand objects that live as long as the process, yet the cyclic collector ran about 250
times during it: 119 ms of a 744 ms import (counted with `gc.callbacks`), a sixth of start-up.
So collection waits until the imports are done; then `gc.freeze()` moves what they made to the
permanent generation, which later full collections skip as well.
"""

from __future__ import annotations

import gc


def main() -> None:
    """Import the command line with the collector paused, then run it."""
    gc.disable()
    try:
        from bot.cli import main as command_line
    finally:
        gc.freeze()
        gc.enable()
    command_line()
