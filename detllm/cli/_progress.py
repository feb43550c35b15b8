"""Progress on stderr: a bar redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .._escape import text as escape
from .._text_util import clip

_WIDTH = 79
_BAR = 24


class Progress:
    """``progress(done, total, run, detail)`` for :func:`detllm.capture.check.check`.

    On a terminal one line is redrawn (at most ten times a second, and at every new
    run); elsewhere (a log file, CI) one line is written per run, so logs stay short.
    """

    def __init__(self, prefix: str, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.prefix = prefix
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and _isatty(self.stream)
        self.run: str | None = None
        self.drawn = 0.0
        self.shown = False
        self.start = time.monotonic()

    def __call__(self, done: int, total: int, run: str, detail: str) -> None:
        if not self.enabled:
            return
        new_run = run != self.run
        self.run = run
        if self.tty:
            now = time.monotonic()
            if not new_run and now - self.drawn < 0.1:
                return
            self.drawn = now
            filled = round(_BAR * done / total) if total else 0
            line = f"{self.prefix} [{'#' * filled}{'.' * (_BAR - filled)}] {done}/{total} {run}: {detail}"
            self.stream.write("\r" + clip(escape(line), _WIDTH).ljust(_WIDTH))
            self.shown = True
        elif new_run:
            self.stream.write(escape(f"{self.prefix}: [{done}/{total}] {run}: {detail} ({time.monotonic() - self.start:.0f} s)") + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Clear the bar, so that what follows starts on a clean line."""
        if self.shown:
            self.stream.write("\r" + " " * _WIDTH + "\r")
            self.stream.flush()
            self.shown = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
