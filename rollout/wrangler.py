"""Run the real wrangler CLI as argument lists and read its results.

Every command runs as ``node --no-warnings --experimental-vm-modules …/cli.js ARGS`` with stdin from
/dev/null, proxy variables removed (wrangler sends the tail WebSocket through a proxy even for
loopback), telemetry and banners off, and ``WRANGLER_OUTPUT_FILE_PATH`` set so that results and
Cloudflare error codes come back as ND-JSON records instead of coloured text.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ._node import resolve_wrangler
from .errors import WranglerError

logger = logging.getLogger("rollout.wrangler")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CODE = re.compile(r"\[code: (\d+)\]")
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "http_proxy",
               "all_proxy", "no_proxy")
QUIET_ENV = {
    "WRANGLER_SEND_METRICS": "false",
    "WRANGLER_SEND_ERROR_REPORTS": "false",
    "WRANGLER_HIDE_BANNER": "true",
    "CI": "true",
    "NO_COLOR": "1",
}
#: Codes that mean "try again": internal errors and API hiccups.
TRANSIENT_CODES = frozenset({10013, 10001, 10002, 10043, 7010, 10429})


def strip_ansi(text: str) -> str:
    """Remove colour codes: wrangler colours errors even on a pipe."""
    return _ANSI.sub("", text)


def error_codes(text: str) -> tuple[int, ...]:
    """Cloudflare error codes in wrangler's output (``… [code: 10021]``), in order, without repeats."""
    seen: dict[int, None] = {}
    for match in _CODE.finditer(strip_ansi(text)):
        seen.setdefault(int(match.group(1)), None)
    return tuple(seen)


def wrangler_env(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a wrangler subprocess: ours, minus proxies, plus ``extra``."""
    env = dict(os.environ if base is None else base)
    for name in _PROXY_VARS:
        env.pop(name, None)
    env.update(QUIET_ENV)
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True, slots=True)
class WranglerResult:
    """What one wrangler command did."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    records: tuple[dict[str, Any], ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def codes(self) -> tuple[int, ...]:
        """Cloudflare error codes, from the output file first, then from stderr."""
        found: dict[int, None] = {}
        for record in self.records:
            code = record.get("code")
            if record.get("type") == "command-failed" and isinstance(code, int):
                found.setdefault(code, None)
        for code in error_codes(self.stderr):
            found.setdefault(code, None)
        return tuple(found)

    @property
    def error_text(self) -> str:
        """The error lines of stderr without colours, banners and log-file notes."""
        lines = [line.rstrip() for line in strip_ansi(self.stderr).splitlines()]
        keep = [line for line in lines if line.strip() and "Logs were written" not in line
                and "If you think this is a bug" not in line]
        return "\n".join(keep).strip()

    def record(self, kind: str) -> dict[str, Any] | None:
        """The last output-file record of a type (``deploy``, ``version-upload``, …)."""
        for record in reversed(self.records):
            if record.get("type") == kind:
                return dict(record)
        return None

    @property
    def transient(self) -> bool:
        """True when retrying may help: API 5xx, network errors, internal-error codes."""
        if self.ok:
            return False
        text = self.error_text.lower()
        if any(code in TRANSIENT_CODES for code in self.codes):
            return True
        markers = ("fetch failed", "malformed response", "-> 50", "econnrefused", "econnreset",
                   "timed out", "internal server error", "bad gateway", "service unavailable")
        return any(marker in text for marker in markers)

    def raise_for_status(self) -> WranglerResult:
        if not self.ok:
            raise WranglerError(
                f"wrangler {' '.join(self.argv)} exited {self.returncode}: "
                f"{self.error_text.splitlines()[0] if self.error_text else 'no error text'}",
                argv=self.argv, returncode=self.returncode, codes=self.codes, stderr=self.error_text,
            )
        return self


@dataclass(frozen=True, slots=True)
class DeploymentState:
    """The active deployment of a worker: versions and their percentages."""

    worker: str
    versions: tuple[tuple[str, float], ...]
    deployment_id: str | None = None

    @property
    def sole_version(self) -> str | None:
        """The version id if one version serves 100%, else None."""
        if len(self.versions) == 1 and abs(self.versions[0][1] - 100.0) < 1e-6:
            return self.versions[0][0]
        return None

    def percentage(self, version: str) -> float:
        return sum(pct for vid, pct in self.versions if vid == version)


@dataclass(slots=True)
class Wrangler:
    """Runs wrangler with one environment; each call returns a :class:`WranglerResult`.

    Args:
        command: the argument list that starts wrangler (node, flags, cli.js).
        env: variables added to the cleaned environment (token, account, API base).
        run_dir: where wrangler's output files and debug logs go.
    """

    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    run_dir: Path = field(default_factory=lambda: Path(".rollout") / "wrangler")
    timeout_s: float = 180.0

    @classmethod
    def for_project(cls, project_dir: Path | None, env: Mapping[str, str], run_dir: Path) -> Wrangler:
        return cls(command=resolve_wrangler(project_dir), env=dict(env), run_dir=run_dir)

    def process_env(self, output_file: Path | None = None) -> dict[str, str]:
        extra = dict(self.env)
        extra["WRANGLER_LOG_PATH"] = str(self.run_dir / "logs")
        if output_file is not None:
            extra["WRANGLER_OUTPUT_FILE_PATH"] = str(output_file)
        return wrangler_env(extra)

    async def run(self, *args: str, cwd: Path | None = None, timeout_s: float | None = None) -> WranglerResult:
        """Run one wrangler command to completion; never raises for a non-zero exit."""
        await anyio.Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        output_file = self.run_dir / f"out-{uuid.uuid4().hex[:12]}.jsonl"
        argv = tuple(args)
        started = anyio.current_time()
        logger.info("wrangler %s", " ".join(argv))
        with anyio.fail_after(timeout_s or self.timeout_s):
            proc = await _run([*self.command, *argv], cwd, self.process_env(output_file))
        records = await _read_records(output_file)
        result = WranglerResult(
            argv=argv, returncode=proc[0], stdout=proc[1], stderr=proc[2], records=records,
            seconds=anyio.current_time() - started,
        )
        if not result.ok:
            logger.info("wrangler %s failed (%s): %s", argv[0], result.returncode, result.error_text[:300])
        return result

    # -- the commands rollout uses -------------------------------------------------------------

    async def deploy(self, config: Path | None, *, name: str | None = None, message: str | None = None,
                     cwd: Path | None = None) -> WranglerResult:
        args = ["deploy"]
        if config is not None:
            args += ["--config", str(config)]
        if name:
            args += ["--name", name]
        if message:
            args += ["--message", message]
        return await self.run(*args, cwd=cwd)

    async def deployment_status(self, worker: str) -> DeploymentState:
        """The active deployment, read with ``deployments status --json``."""
        result = (await self.run("deployments", "status", "--name", worker, "--json")).raise_for_status()
        return parse_deployment_status(worker, result.stdout)

    async def rollback(self, worker: str, version: str, message: str) -> WranglerResult:
        # -y is declared but not read by wrangler; non-interactive runs auto-confirm anyway.
        return await self.run("rollback", version, "--name", worker, "--message", message, "-y")

    async def versions_upload(self, config: Path | None, *, message: str | None = None,
                              cwd: Path | None = None) -> WranglerResult:
        args = ["versions", "upload"]
        if config is not None:
            args += ["--config", str(config)]
        if message:
            args += ["--message", message]
        return await self.run(*args, cwd=cwd)

    async def versions_deploy(self, worker: str, split: Sequence[tuple[str, float]], message: str) -> WranglerResult:
        # Without -y a non-TTY `versions deploy` exits 0 and deploys nothing.
        specs = [f"{vid}@{_pct(pct)}%" for vid, pct in split if pct > 0]
        return await self.run("versions", "deploy", *specs, "--name", worker, "--message", message, "-y")

    async def whoami(self) -> WranglerResult:
        return await self.run("whoami")

    def tail_argv(self, worker: str, *filters: str) -> list[str]:
        return [*self.command, "tail", worker, "--format", "json", *filters]


def _pct(pct: float) -> str:
    return str(int(pct)) if float(pct).is_integer() else f"{pct:g}"


def parse_deployment_status(worker: str, stdout: str) -> DeploymentState:
    """Read ``deployments status --json`` output (one deployment object)."""
    text = stdout.strip()
    start = text.find("{")
    if start < 0:
        raise WranglerError(f"deployments status for {worker} printed no JSON: {text[:200]!r}")
    try:
        data = json.JSONDecoder().raw_decode(text[start:])[0]
    except json.JSONDecodeError as exc:
        raise WranglerError(f"deployments status for {worker} printed bad JSON: {exc}") from exc
    versions = tuple(
        (str(v["version_id"]), float(v.get("percentage", 0))) for v in data.get("versions", [])
    )
    return DeploymentState(worker=worker, versions=versions, deployment_id=data.get("id"))


async def _run(argv: list[str], cwd: Path | None, env: dict[str, str]) -> tuple[int, str, str]:
    import subprocess

    proc = await anyio.open_process(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
    out = bytearray()
    err = bytearray()

    async def drain(stream: anyio.abc.ByteReceiveStream | None, into: bytearray) -> None:
        if stream is None:
            return
        async for chunk in stream:
            into.extend(chunk)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, proc.stdout, out)
            tg.start_soon(drain, proc.stderr, err)
            await proc.wait()
    finally:
        with anyio.CancelScope(shield=True):
            await terminate(proc)
    return (proc.returncode if proc.returncode is not None else -1,
            out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


async def terminate(proc: anyio.abc.Process, grace_s: float = 3.0) -> None:
    """SIGTERM, wait a grace period, then SIGKILL; always reaps the process."""
    if proc.returncode is None:
        try:
            proc.terminate()
        except ProcessLookupError:
            pass
        with anyio.move_on_after(grace_s):
            await proc.wait()
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
    await proc.aclose()


async def _read_records(path: Path) -> tuple[dict[str, Any], ...]:
    apath = anyio.Path(path)
    if not await apath.exists():
        return ()
    text = await apath.read_text(encoding="utf-8", errors="replace")
    await apath.unlink(missing_ok=True)
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return tuple(records)
