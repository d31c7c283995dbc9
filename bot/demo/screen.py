"""How the demo talks to the person watching: rich panels on a terminal, plain lines elsewhere.

On a terminal each event is a framed panel and a spinner says what the demo is waiting for. When
stdout is a pipe or a file (CI, `| tee`), every event is a few plain lines with a timestamp: no
escape codes, no frames, no wrapping inside a link.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TextIO

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

#: Panel border colour per kind of event.
_STYLES = {
    "you": "cyan",
    "bot": "green",
    "card": "yellow",
    "finished": "bright_green",
    "asana": "magenta",
    "answer": "blue",
}


class Screen:
    """The demo's output; `fancy` (a terminal) picks panels over plain lines."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self.console = Console(file=self._out, highlight=False)
        self.fancy = self.console.is_terminal
        self._started = time.monotonic()

    def _clock(self) -> str:
        return f"{time.monotonic() - self._started:5.1f}s"

    def say(self, text: str, kind: str = "") -> None:
        """One line of narration (what happens next, what the demo did)."""
        if self.fancy:
            style = _STYLES.get(kind, "bold")
            self.console.print(Text(f"{self._clock()}  ", style="dim") + Text(text, style=style))
        else:
            print(f"[{self._clock()}] {text}", file=self._out, flush=True)

    def show(self, title: str, lines: Sequence[str], kind: str = "bot") -> None:
        """A message as the watcher would see it in Slack, under a title saying where it went."""
        if self.fancy:
            body = Text("\n".join(lines) or "(empty)")
            title_text = Text(title, style="bold")
            self.console.print(
                Panel(
                    body,
                    title=title_text,
                    title_align="left",
                    subtitle=Text(self._clock(), style="dim"),
                    subtitle_align="right",
                    border_style=_STYLES.get(kind, "white"),
                    width=min(self.console.width, 110),
                )
            )
        else:
            text = "\n".join(f"    | {line}" for line in lines)
            print(f"[{self._clock()}] {title}\n{text}", file=self._out, flush=True)

    def verbatim(self, lines: Sequence[str]) -> None:
        """Lines meant to be copied (a shell snippet): never framed, wrapped or styled."""
        for line in lines:
            if self.fancy:
                self.console.print(Text(line), soft_wrap=True)
            else:
                print(line, file=self._out, flush=True)

    def fail(self, line: str) -> None:
        """The one line that says why the demo stopped (stderr)."""
        print(f"asana-export-bot demo: {line}", file=self._err, flush=True)

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """A spinner naming what the demo waits for (terminal only; nothing in plain mode)."""
        if not self.fancy:
            yield
            return
        with self.console.status(Text(what, style="dim")):
            yield
