"""Reading a pseudo-terminal's output in tests (shared by the gate, unlock and prompt tests)."""

from __future__ import annotations

import os
import select
import time


def read_fd(fd: int, seconds: float, until: bytes | None = None) -> bytes:
    """What ``fd`` yields within ``seconds`` (less: at end of output, or once ``until`` has been read)."""
    out = b""
    deadline = time.monotonic() + seconds
    while (until is None or until not in out) and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out
