"""Lines from standard input without blocking the event loop, and without losing one to a cancelled prompt.

One daemon thread reads lines and hands them over through a queue; a prompt waits for the next line in
small sleeps, so a breach, a signal or a gate's timeout can cancel it at any moment.  A line typed after
a cancelled prompt is not eaten by a stray read: it is the next prompt's answer, or dropped before it.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import TextIO

import anyio

_EOF = None


class StdinLines:
    """``await lines.next()`` returns the next line (without its newline), or None at end of input."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._eof = False

    def _pump(self) -> None:
        stream = self._stream or sys.stdin
        while True:
            try:
                line = stream.readline()
            except (OSError, ValueError):
                line = ""
            if not line:
                self._queue.put(_EOF)
                return
            self._queue.put(line.rstrip("\r\n"))

    def discard_pending(self) -> None:
        """Drop lines typed before the prompt that is about to be shown (they answered nothing)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is _EOF:
                self._eof = True
                return

    async def next(self) -> str | None:
        if self._eof:
            return None
        if self._thread is None:
            self._thread = threading.Thread(target=self._pump, name="rollout-stdin", daemon=True)
            self._thread.start()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                await anyio.sleep(0.05)
                continue
            if item is _EOF:
                self._eof = True
            return item


_shared: StdinLines | None = None


def stdin_lines() -> StdinLines:
    """The process's one reader of standard input."""
    global _shared
    if _shared is None:
        _shared = StdinLines()
    return _shared
