"""Run the real wrangler CLI as argument lists and read its results.

Every command runs as ``node --no-warnings --experimental-vm-modules …/cli.js ARGS`` with stdin from
/dev/null, proxy variables removed (wrangler sends the tail WebSocket through a proxy even for
loopback) and ``NO_PROXY`` covering loopback, telemetry and banners off, the console log level pinned
(``WRANGLER_LOG=debug`` in the user's shell would put debug lines into ``--json`` stdout; the debug log
file under the run directory gets every message anyway), and ``WRANGLER_OUTPUT_FILE_PATH`` set to a
file of its own per call, so that results and Cloudflare error codes come back as ND-JSON records
instead of coloured text.

What wrangler writes to that file (measured with 4.164.0 and 4.86.0 against the simulator): every
command a ``wrangler-session`` record; ``deploy`` a ``deploy`` record (``version_id``, ``targets``);
``versions upload`` a ``version-upload`` record (``version_id``); ``versions deploy`` a
``version-deploy`` record (``deployment_id``; ``version_traffic`` is always ``{}``); ``rollback`` and
the read commands nothing more; any failure a ``command-failed`` record with the Cloudflare ``code``.
State therefore comes from ``--json`` stdout, read by :func:`json_document` (never "the first ``{``").

Each command has a timeout (:data:`DEFAULT_TIMEOUTS`, overridable per :class:`Wrangler` or with
``ROLLOUT_WRANGLER_TIMEOUTS="rollback=30,deploy=600,default=120"``).  When it runs out, wrangler's whole
process group is killed and :class:`~rollout.errors.WranglerTimeout` (transient) is raised.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ._node import resolve_wrangler
from .errors import UsageError, WranglerError, WranglerTimeout

logger = logging.getLogger("rollout.wrangler")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CODE = re.compile(r"\[code: (\d+)\]")
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "http_proxy",
               "all_proxy", "no_proxy")
#: Colour switches of the user's shell that are dropped (NO_COLOR=1 is set instead).
_COLOR_VARS = ("FORCE_COLOR",)
#: Hosts that must never go through a proxy (the simulator is loopback); appended to ``NO_PROXY``.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
QUIET_ENV = {
    "WRANGLER_SEND_METRICS": "false",
    "WRANGLER_SEND_ERROR_REPORTS": "false",
    "WRANGLER_HIDE_BANNER": "true",
    "WRANGLER_LOG": "log",
    "CI": "true",
    "NO_COLOR": "1",
}
#: Seconds a wrangler command may run before its process group is killed, by command.  Generous
#: multiples of what the commands take (1-3 s each, mostly node start-up): reads and the rollback
#: (a few small API calls) get 60 s, so a hung API costs a rollback attempt a minute, not three;
#: uploads get 300 s (big bundles, and wrangler retries an upload 3 times itself).
DEFAULT_TIMEOUTS: dict[str, float] = {
    "deploy": 300.0,
    "versions upload": 300.0,
    "versions deploy": 120.0,
    "rollback": 60.0,
    "deployments status": 60.0,
    "deployments list": 60.0,
    "versions list": 60.0,
    "versions view": 60.0,
    "whoami": 60.0,
}
#: Every other command (d1 migrations, r2/kv/queues lists, …).
DEFAULT_TIMEOUT_S = 180.0
#: ``command=seconds`` pairs, comma separated; ``default=`` sets the fallback.
TIMEOUTS_ENV = "ROLLOUT_WRANGLER_TIMEOUTS"
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
    """The environment for a wrangler subprocess: ours, minus proxies and colour forcing, plus ``extra``.

    ``NO_PROXY``/``no_proxy`` keep what the user listed and add the loopback hosts, so that even a proxy
    variable given in ``extra`` never applies to a local simulator's API.
    """
    env = dict(os.environ if base is None else base)
    no_proxy = [host.strip() for name in ("NO_PROXY", "no_proxy") for host in env.get(name, "").split(",")]
    for name in (*_PROXY_VARS, *_COLOR_VARS):
        env.pop(name, None)
    env.update(QUIET_ENV)
    if extra:
        env.update(extra)
    no_proxy += [host.strip() for name in ("NO_PROXY", "no_proxy") for host in env.get(name, "").split(",")]
    hosts = list(dict.fromkeys(host for host in [*no_proxy, *LOOPBACK_HOSTS] if host))
    env["NO_PROXY"] = env["no_proxy"] = ",".join(hosts)
    return env


def parse_timeouts(text: str) -> dict[str, float]:
    """``"rollback=30, deploy=600, default=120"`` → ``{"rollback": 30.0, …}`` (command words may be spaced
    or dashed: ``versions-upload`` is ``versions upload``)."""
    timeouts: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or not name.strip() or not seconds > 0:
            raise UsageError(f"{TIMEOUTS_ENV}: {item.strip()!r} is not COMMAND=SECONDS with SECONDS > 0 "
                             f"(e.g. {TIMEOUTS_ENV}=\"rollback=30,deploy=600,default=120\")")
        timeouts[" ".join(name.replace("-", " ").split())] = seconds
    return timeouts


#: wrangler commands that take a sub-command (``versions deploy``); others take arguments (``rollback ID``).
_GROUPS = frozenset({"versions", "deployments", "d1", "r2", "kv", "queues", "secret", "triggers"})


def command_key(argv: Sequence[str]) -> str:
    """The command a wrangler argument list runs: ``versions deploy``, ``rollback``, ``d1 migrations``."""
    if not argv or argv[0].startswith("-"):
        return ""
    if argv[0] in _GROUPS and len(argv) > 1 and not argv[1].startswith("-"):
        return f"{argv[0]} {argv[1]}"
    return argv[0]


def json_document(stdout: str) -> Any:
    """The JSON document a ``--json`` command printed: the whole stdout, or else the last JSON value that
    starts a line at column 0 and ends its line.

    Never the first ``{`` of mixed output: with debug logging wrangler prints lines such as ``Metrics
    dispatcher: … {json}.`` and ``Saving to cache: {json}`` before and after the document, and the
    pretty-printed document itself always starts at column 0.  Raises ValueError when there is none.
    """
    text = strip_ansi(stdout)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    found: list[Any] = []
    i = 0
    while i < len(text):
        if text[i] in "{[" and (i == 0 or text[i - 1] == "\n"):
            try:
                value, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                pass
            else:
                line_end = text.find("\n", end)
                rest = text[end:] if line_end < 0 else text[end:line_end]
                if not rest.strip():
                    found.append(value)
                    i = end
                    continue
        nl = text.find("\n", i)
        if nl < 0:
            break
        i = nl + 1
    if not found:
        raise ValueError(f"no JSON document in the output: {text.strip()[:200]!r}")
    return found[-1]


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
    def version_id(self) -> str | None:
        """The version a ``deploy`` or ``versions upload`` created, from its output-file record."""
        for kind in ("deploy", "version-upload"):
            record = self.record(kind)
            if record is not None and isinstance(record.get("version_id"), str):
                return str(record["version_id"])
        return None

    @property
    def deployment_id(self) -> str | None:
        """The deployment a ``versions deploy`` created, from its output-file record."""
        record = self.record("version-deploy")
        if record is not None and isinstance(record.get("deployment_id"), str):
            return str(record["deployment_id"])
        return None

    def json(self) -> Any:
        """The JSON document of a ``--json`` command's stdout (see :func:`json_document`)."""
        try:
            return json_document(self.stdout)
        except ValueError as exc:
            raise WranglerError(f"wrangler {' '.join(self.argv)}: {exc}", argv=self.argv,
                                returncode=self.returncode, codes=self.codes, stderr=self.error_text) from None

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
        timeout_s: the limit of commands that neither ``timeouts`` nor :data:`DEFAULT_TIMEOUTS` name.
        timeouts: per-command limits (``{"rollback": 30}``) over :data:`DEFAULT_TIMEOUTS`.
    """

    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    run_dir: Path = field(default_factory=lambda: Path(".rollout") / "wrangler")
    timeout_s: float = DEFAULT_TIMEOUT_S
    timeouts: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def for_project(cls, project_dir: Path | None, env: Mapping[str, str], run_dir: Path) -> Wrangler:
        """The wrangler of a project; ``ROLLOUT_WRANGLER_TIMEOUTS`` (ours or in ``env``) sets limits."""
        timeouts = parse_timeouts(env.get(TIMEOUTS_ENV) or os.environ.get(TIMEOUTS_ENV, ""))
        default = timeouts.pop("default", DEFAULT_TIMEOUT_S)
        return cls(command=resolve_wrangler(project_dir), env=dict(env), run_dir=run_dir, timeout_s=default,
                   timeouts=timeouts)

    def timeout_for(self, argv: Sequence[str]) -> float:
        """The limit of one command: ``timeouts``, then :data:`DEFAULT_TIMEOUTS`, then ``timeout_s``."""
        key = command_key(argv)
        for table in (self.timeouts, DEFAULT_TIMEOUTS):
            for name in (key, key.split(" ")[0]):
                if name in table:
                    return float(table[name])
        return self.timeout_s

    def process_env(self, output_file: Path | None = None) -> dict[str, str]:
        extra = dict(self.env)
        extra["WRANGLER_LOG_PATH"] = str(self.run_dir / "logs")
        if output_file is not None:
            extra["WRANGLER_OUTPUT_FILE_PATH"] = str(output_file)
        return wrangler_env(extra)

    async def run(self, *args: str, cwd: Path | None = None, timeout_s: float | None = None) -> WranglerResult:
        """Run one wrangler command to completion; never raises for a non-zero exit.

        Raises:
            WranglerTimeout: it ran longer than ``timeout_s`` (default: :meth:`timeout_for`); its process
                group was killed.  Transient; the command may still have had its effect.
        """
        await anyio.Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        output_file = self.run_dir / f"out-{uuid.uuid4().hex[:12]}.jsonl"
        argv = tuple(args)
        limit = self.timeout_for(argv) if timeout_s is None else timeout_s
        started = anyio.current_time()
        logger.info("wrangler %s", " ".join(argv))
        try:
            returncode, stdout, stderr, timed_out = await _run(
                [*self.command, *argv], cwd, self.process_env(output_file), limit)
            records = await _read_records(output_file)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.Path(output_file).unlink(missing_ok=True)
        seconds = anyio.current_time() - started
        if timed_out:
            key = command_key(argv) or "default"
            logger.warning("wrangler %s timed out after %.0f s; its process group was killed", key, seconds)
            raise WranglerTimeout(
                f"wrangler {key} did not finish within {limit:g} s and was stopped (to allow longer: "
                f"{TIMEOUTS_ENV}={key.replace(' ', '-')}={limit * 2:g})",
                argv=argv, timeout_s=limit, stderr=strip_ansi(stderr).strip())
        result = WranglerResult(
            argv=argv, returncode=returncode, stdout=stdout, stderr=stderr, records=records, seconds=seconds,
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
    """Read ``deployments status --json`` output (one deployment object; see :func:`json_document`)."""
    try:
        data = json_document(stdout)
    except ValueError as exc:
        raise WranglerError(f"deployments status for {worker}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("versions", []), list):
        raise WranglerError(f"deployments status for {worker} printed no deployment: {str(data)[:200]!r}")
    try:
        versions = tuple(
            (str(v["version_id"]), float(v.get("percentage", 0))) for v in data.get("versions", [])
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise WranglerError(f"deployments status for {worker}: unexpected versions {data.get('versions')!r} "
                            f"({exc})") from None
    deployment_id = data.get("id")
    return DeploymentState(worker=worker, versions=versions,
                           deployment_id=deployment_id if isinstance(deployment_id, str) else None)


async def _run(argv: list[str], cwd: Path | None, env: dict[str, str],
               timeout_s: float) -> tuple[int, str, str, bool]:
    """``(returncode, stdout, stderr, timed_out)``.  wrangler runs in a session (process group) of its own,
    which is killed when the time is up or the caller is cancelled, so no node child outlives it."""
    proc = await anyio.open_process(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    out = bytearray()
    err = bytearray()

    async def drain(stream: anyio.abc.ByteReceiveStream | None, into: bytearray) -> None:
        if stream is None:
            return
        async for chunk in stream:
            into.extend(chunk)

    timed_out = False
    try:
        with anyio.move_on_after(timeout_s) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, proc.stdout, out)
                tg.start_soon(drain, proc.stderr, err)
                await proc.wait()
        # an exit followed by a grandchild holding the pipes open is not a timeout of wrangler
        timed_out = scope.cancelled_caught and proc.returncode is None
    finally:
        with anyio.CancelScope(shield=True):
            await terminate(proc, group=True)
    return (proc.returncode if proc.returncode is not None and not timed_out else -1,
            out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), timed_out)


def _signal(proc: anyio.abc.Process, sig: signal.Signals, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


async def terminate(proc: anyio.abc.Process, grace_s: float = 3.0, *, group: bool = False) -> None:
    """SIGTERM, wait a grace period, then SIGKILL; always reaps the process.

    ``group=True`` signals the process group the process leads (it must have been started with
    ``start_new_session=True``), so that its children go too.
    """
    if proc.returncode is None:
        _signal(proc, signal.SIGTERM, group)
        with anyio.move_on_after(grace_s):
            await proc.wait()
        if proc.returncode is None:
            _signal(proc, signal.SIGKILL, group)
    await proc.aclose()


async def _read_records(path: Path) -> tuple[dict[str, Any], ...]:
    apath = anyio.Path(path)
    if not await apath.exists():
        return ()
    text = await apath.read_text(encoding="utf-8", errors="replace")
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return tuple(records)
