"""Control a running rollout from another terminal or a CI job: pause, resume, promote, abort.

The runner owns a unix socket, guarded by file permissions: the folder is 0700 and the socket 0600, so
only the same user can steer it.  Its path is derived from the journal and the rollout id
(:func:`socket_path`), short enough for the 108-byte limit of unix socket paths, so any client that knows
the journal finds it without a registry.  One JSON line in, one JSON line out::

    {"command": "pause"}            ->  {"ok": true, "state": "paused", "detail": "…"}

* ``pause``: the next phase does not start, and a bake does not end, until ``resume``;
* ``resume``: go on;
* ``promote``: answer a waiting gate "yes" (by ``rollout promote``), and end the current bake's minimum
  time now; a bake still waits for its evidence (every rollback guard ok): a promote skips waiting, never
  the proof;
* ``abort``: stop now, roll back what changed, verify, report (as a signal does).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

logger = logging.getLogger("rollout.control")

COMMANDS = ("pause", "resume", "promote", "abort", "state")
_MAX_LINE = 4096


def socket_path(journal: Path, rollout_id: str) -> Path:
    """Where the runner of ``rollout_id`` (journal ``journal``) listens: a private folder of this user."""
    key = hashlib.sha256(f"{journal.resolve()}|{rollout_id}".encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"rollout-{os.getuid()}" / f"{key}.sock"


@dataclass(frozen=True, slots=True)
class Reply:
    ok: bool
    state: str
    detail: str

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, "state": self.state, "detail": self.detail})


Handler = Callable[[str], Reply]


async def _serve_one(stream: anyio.abc.ByteStream, handle: Handler) -> None:
    async with stream:
        data = b""
        with anyio.move_on_after(5):
            while b"\n" not in data and len(data) < _MAX_LINE:
                try:
                    data += await stream.receive(_MAX_LINE)
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    break
        try:
            command = str(json.loads(data.split(b"\n", 1)[0] or b"{}").get("command", ""))
        except (ValueError, AttributeError):
            command = ""
        reply = handle(command) if command in COMMANDS else Reply(
            False, "?", f"unknown command {command!r}: one of {', '.join(COMMANDS)}")
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await stream.send((reply.to_json() + "\n").encode())


@contextlib.asynccontextmanager
async def serve_control(path: Path, handle: Handler) -> AsyncIterator[Path]:
    """Listen on ``path`` while the block runs (the socket is removed afterwards)."""
    folder = anyio.Path(path.parent)
    await folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    await folder.chmod(0o700)
    await anyio.Path(path).unlink(missing_ok=True)  # left by a killed runner of the same id
    listener = await anyio.create_unix_listener(path)
    os.chmod(path, 0o600)
    async with listener, anyio.create_task_group() as tg:
        async def accept() -> None:
            while True:
                stream = await listener.accept()
                tg.start_soon(_serve_one, stream, handle)

        tg.start_soon(accept)
        try:
            yield path
        finally:
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await anyio.Path(path).unlink(missing_ok=True)


async def send_control(path: Path, command: str, timeout_s: float = 10.0) -> Reply:
    """Send one command to a runner; raises OSError when nothing listens there."""
    with anyio.fail_after(timeout_s):
        stream = await anyio.connect_unix(path)
        async with stream:
            await stream.send((json.dumps({"command": command}) + "\n").encode())
            data = b""
            while b"\n" not in data:
                try:
                    data += await stream.receive(_MAX_LINE)
                except anyio.EndOfStream:
                    break
    body = json.loads(data.split(b"\n", 1)[0])
    return Reply(bool(body.get("ok")), str(body.get("state", "?")), str(body.get("detail", "")))
