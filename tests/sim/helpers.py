"""Running the real wrangler CLI against the simulator (subprocesses, output parsing)."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from rollout._node import bundled_wrangler_cli, wrangler_command

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "cf_ssai" / "workers"
WRANGLER_VERSIONS = ("4.164.0", "4.86.0")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def json_stream(text: str) -> list[Any]:
    """Objects of ``wrangler tail --format json`` output (multi-line, 4-space indented)."""
    decoder, i = json.JSONDecoder(), 0
    out: list[Any] = []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)


def wrangler_env(sim_env: dict[str, str], home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _PROXY_VARS and not k.startswith("CLOUDFLARE_")}
    env.update(sim_env)
    env.update({
        "WRANGLER_SEND_METRICS": "false", "WRANGLER_SEND_ERROR_REPORTS": "false", "WRANGLER_HIDE_BANNER": "true",
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "CI": "true",
    })
    return env


class Wrangler:
    """One wrangler version, pointed at one simulator, working in one project directory."""

    def __init__(self, version: str, sim_env: dict[str, str], cwd: Path, home: Path) -> None:
        self.version = version
        self.command = wrangler_command(bundled_wrangler_cli(version))
        self.env = wrangler_env(sim_env, home)
        self.cwd = cwd

    async def run(self, *args: str, cwd: Path | None = None) -> Result:
        result = await anyio.run_process(
            [*self.command, *args], cwd=cwd or self.cwd, env=self.env, stdin=None, check=False,
        )
        return Result(result.returncode, result.stdout.decode(), strip_ansi(result.stderr.decode()))

    async def tail(self, worker: str, until: Callable[[str], bool], *, within: float,
                   stop: bool = True) -> Result:
        """Run ``wrangler tail --format json`` until ``until(stdout)`` holds or it exits (then SIGTERM)."""
        process = await anyio.open_process(
            [*self.command, "tail", worker, "--format", "json"], cwd=self.cwd, env=self.env,
        )
        out, err = bytearray(), bytearray()
        async with process, anyio.create_task_group() as tg:
            tg.start_soon(_drain, process, out, err)
            with anyio.move_on_after(within):
                while True:
                    if process.returncode is not None or until(out.decode(errors="replace")):
                        break
                    await anyio.sleep(0.1)
            if process.returncode is None and stop:
                process.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                await process.wait()
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), strip_ansi(err.decode()))


async def _drain(process: Process, out: bytearray, err: bytearray) -> None:
    async def pump(stream: Any, buf: bytearray) -> None:
        async for chunk in stream:
            buf.extend(chunk)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump, process.stdout, out)
        tg.start_soon(pump, process.stderr, err)
