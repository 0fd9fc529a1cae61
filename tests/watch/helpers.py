"""Helpers of the watch tests: free ports, a loopback webhook receiver, simulator deploys."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskStatus

from rollout.sim import Simulator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deploy_new_version(sim: Simulator, worker: str) -> str:
    """What a deploy does to the simulator: upload the next version and send it 100% of traffic."""
    state = sim.state
    target = state.worker(worker)
    assert target is not None
    version = state.add_version(target, source="api", annotations={"workers/message": "test deploy"},
                                compatibility_date="2026-04-01", bindings=[], modules=["index.js"])
    state.deploy(target, [(version.id, 100.0)], source="api")
    return version.id


def deploy_version(sim: Simulator, worker: str, version_id: str) -> None:
    target = sim.state.worker(worker)
    assert target is not None
    sim.state.deploy(target, [(version_id, 100.0)], source="api")


@dataclass
class Receiver:
    """A minimal HTTP server on loopback that records JSON bodies of POSTs (a webhook receiver)."""

    port: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def kinds(self) -> list[str]:
        return [str(b.get("kind")) for b in self.bodies]

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        task_status.started()
        await listener.serve(self._handle)

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                body += await stream.receive()
            self.bodies.append(json.loads(body))
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
