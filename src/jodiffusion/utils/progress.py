"""Progress bars that read well both on a terminal and in a log file.

On a terminal (or in a notebook) this is plain ``tqdm.auto``. Redirected to a file, tqdm's redrawing
turns into noise: every refresh is another ``\\r``-joined copy of the bar, a closing bar repeats its last
line, and a bar that never moved leaves an empty ``generate: 0pair`` line. ``LineProgress`` writes whole
lines instead: at most one every ``JODIFFUSION_PROGRESS_SECONDS`` (default 10) seconds, its final line
once when it closes (also for bars a terminal would clear), and nothing for a bar that did no work.
tqdm has no such mode (its ``mininterval`` still redraws on ``set_postfix`` and repeats the final line),
hence this small subclass.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm as _tqdm_std
from tqdm.auto import tqdm as _tqdm_auto

DEFAULT_LINE_SECONDS = 10.0


def line_seconds() -> float:
    """Seconds between two lines of a bar written to a file (``JODIFFUSION_PROGRESS_SECONDS``)."""
    try:
        return max(0.0, float(os.environ.get("JODIFFUSION_PROGRESS_SECONDS", DEFAULT_LINE_SECONDS)))
    except ValueError:
        return DEFAULT_LINE_SECONDS


def _interactive(stream) -> bool:
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineProgress(_tqdm_std):
    """A tqdm bar that writes plain lines (see the module doc)."""

    def __init__(self, *args, **kwargs):
        self._interval = line_seconds()
        self._last_line = None
        self._last_n = None
        self._last_time = float("-inf")
        self._closing = False
        kwargs.setdefault("mininterval", min(self._interval, 1.0))
        kwargs.setdefault("ncols", 100)
        kwargs["dynamic_ncols"] = False
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if msg is not None and not msg.strip():
            return False  # tqdm clearing a bar: nothing to erase in a file
        if self.n == 0:
            return False  # no line for a bar that has not moved
        now = time.monotonic()
        if not self._closing and now - self._last_time < self._interval:
            return False
        if self._closing and self.n == self._last_n:
            return False  # the final count is on screen already (only the rate would differ)
        line = (self.__str__() if msg is None else msg).rstrip()
        if line == self._last_line:
            return False
        self.fp.write(line + "\n")
        self.fp.flush()
        self._last_line, self._last_n, self._last_time = line, self.n, now
        return True

    def close(self):
        if getattr(self, "disable", True):
            return
        self._closing = True
        self.leave = self.n > 0  # the final line once, also for bars a terminal would clear; none if empty
        self.fp = _DropBare(self.fp)
        super().close()


class _DropBare:
    """tqdm ends a closing bar with a bare newline; our lines carry their own."""

    def __init__(self, fp):
        self._fp = fp

    def write(self, text: str):
        if text.strip():
            self._fp.write(text)

    def flush(self):
        self._fp.flush()


def progress_bar(iterable=None, **kwargs):
    """``tqdm.auto.tqdm(iterable, **kwargs)`` on a terminal, a ``LineProgress`` when the output is a file."""
    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") or _interactive(stream):
        return _tqdm_auto(iterable, **kwargs)
    return LineProgress(iterable, **kwargs)


__all__ = ["LineProgress", "line_seconds", "progress_bar"]
