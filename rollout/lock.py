"""The rollout lock: one rollout per worker at a time.

* **On this machine** (always): an ``flock`` on ``$ROLLOUT_LOCK_DIR`` (default
  ``~/.cache/rollout/locks``)/``<account>-<worker>.lock``.  The account is the real Cloudflare account, or
  for a simulator (``CLOUDFLARE_API_BASE_URL`` set) that API base URL plus the account id in it.  The file
  holds the owner (pid, host, plan, commit, since).  The kernel drops the flock when the process dies, so
  a lock left by a killed runner is stale and simply taken over.
* **Across CI machines** (``Plan(lock="account")``): a KV record ``rollout-lock:<worker>`` in a
  namespace titled ``rollout-locks`` (created on first use; or ``ROLLOUT_LOCK_KV_NAMESPACE``), holding
  owner, commit and expiry.  KV has no compare-and-set, so taking it is *write, wait, read back*:
  the writer whose token is read back owns it.  The record carries a KV expiration, so a lock of a
  crashed machine expires by itself (default 30 minutes, renewed while the rollout runs is not done:
  set ``ROLLOUT_LOCK_TTL`` to cover the longest rollout).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from .errors import LockHeld

logger = logging.getLogger("rollout.lock")

NAMESPACE_TITLE = "rollout-locks"


def lock_dir() -> Path:
    env = os.environ.get("ROLLOUT_LOCK_DIR")
    return Path(env) if env else Path.home() / ".cache" / "rollout" / "locks"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lock."""

    pid: int
    host: str
    plan: str
    commit: str | None
    since: float
    worker: str = ""
    token: str = ""
    expires: float | None = None

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        ago = max(0, int(time.time() - self.since))
        commit = f", commit {self.commit[:12]}" if self.commit else ""
        return f"pid {self.pid} on {self.host} (plan {self.plan!r}{commit}) since {since} ({ago}s ago)"

    @classmethod
    def parse(cls, text: str | bytes) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except (ValueError, TypeError, KeyError):
            return None


def _safe(worker: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in worker)


def _key(scope: str, worker: str) -> str:
    digest = hashlib.sha256(scope.encode()).hexdigest()[:12]
    prefix = "sim-" if scope.startswith("api ") else ""
    return f"{prefix}{digest}-{_safe(worker)}"


def simulator_locks(worker: str, directory: Path | None = None) -> list[LocalLock]:
    """The lock files of ``worker`` in every simulator this machine rehearsed against (for ``unlock --sim``)."""
    folder = directory or lock_dir()
    paths = sorted(folder.glob(f"sim-*-{_safe(worker)}.lock")) if folder.is_dir() else []
    return [LocalLock.at(path, worker) for path in paths]


class LocalLock:
    """An flock on one file; ``acquire`` never waits."""

    def __init__(self, scope: str, worker: str, directory: Path | None = None) -> None:
        self.worker = worker
        self.path = (directory or lock_dir()) / f"{_key(scope, worker)}.lock"
        self._fd: int | None = None

    @classmethod
    def at(cls, path: Path, worker: str) -> LocalLock:
        """The lock in the file ``path`` (found by listing the lock folder)."""
        lock = cls("", worker, path.parent)
        lock.path = path
        return lock

    def read_holder(self) -> Holder | None:
        try:
            return Holder.parse(self.path.read_text(encoding="utf-8"))
        except OSError:
            return None

    def acquire(self, holder: Holder) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            current = self.read_holder()
            who = current.describe() if current else "another process (no owner recorded yet)"
            raise LockHeld(f"{self.worker} is being rolled out by {who}; lock file {self.path} "
                           f"(if that rollout is gone, run `rollout unlock {self.worker}`)") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(asdict(holder)).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def break_lock(self) -> bool:
        """Remove the lock file (a holder keeps its flock on the removed file; new runners get a new one)."""
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False


class AccountLock:
    """A KV record per worker, shared by every machine deploying to the account."""

    def __init__(self, http: httpx.AsyncClient, api_base: str, account_id: str, token: str,
                 namespace_id: str | None = None, settle_s: float = 1.0) -> None:
        self.http = http
        self.base = f"{api_base.rstrip('/')}/accounts/{account_id}/storage/kv/namespaces"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.namespace_id = namespace_id or os.environ.get("ROLLOUT_LOCK_KV_NAMESPACE")
        self.settle_s = settle_s

    async def _namespace(self) -> str:
        if self.namespace_id:
            return self.namespace_id
        page = 1
        while True:
            data = await self._call("GET", self.base, params={"per_page": 100, "page": page})
            for ns in data:
                if ns.get("title") == NAMESPACE_TITLE:
                    self.namespace_id = str(ns["id"])
                    return self.namespace_id
            if len(data) < 100:
                break
            page += 1
        created = await self._call("POST", self.base, json={"title": NAMESPACE_TITLE})
        self.namespace_id = str(created["id"])
        return self.namespace_id

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, url, headers=self.headers, **kwargs)
        body = response.json()
        if not body.get("success"):
            errors = "; ".join(f"{e.get('message')} [code: {e.get('code')}]" for e in body.get("errors", []))
            raise LockHeld(f"cannot use the account lock ({method} {url}): {errors}")
        return body.get("result")

    def _value_url(self, namespace: str, worker: str) -> str:
        return f"{self.base}/{namespace}/values/rollout-lock:{worker}"

    async def read(self, worker: str) -> Holder | None:
        namespace = await self._namespace()
        response = await self.http.get(self._value_url(namespace, worker), headers=self.headers)
        if response.status_code == 404:
            return None
        holder = Holder.parse(response.content)
        if holder is not None and holder.expires is not None and holder.expires <= time.time():
            return None
        return holder

    async def acquire(self, holder: Holder, ttl_s: float) -> None:
        current = await self.read(holder.worker)
        if current is not None and current.token != holder.token:
            raise LockHeld(f"{holder.worker} is being rolled out by {current.describe()} (account lock in KV, "
                           f"expires {time.strftime('%H:%M:%S', time.localtime(current.expires or 0))}; "
                           f"if that rollout is gone, run `rollout unlock --account {holder.worker}`)")
        namespace = await self._namespace()
        record = json.dumps(asdict(holder))
        await self._call("PUT", self._value_url(namespace, holder.worker), content=record.encode(),
                         params={"expiration": int(holder.expires or time.time() + ttl_s)})
        await anyio.sleep(self.settle_s)  # another writer racing us overwrites within this window
        after = await self.read(holder.worker)
        if after is None or after.token != holder.token:
            who = after.describe() if after else "another runner"
            raise LockHeld(f"{holder.worker}: lost the race for the account lock to {who}")

    async def release(self, holder: Holder) -> None:
        current = await self.read(holder.worker)
        if current is not None and current.token == holder.token:
            await self.delete(holder.worker)

    async def delete(self, worker: str) -> None:
        namespace = await self._namespace()
        await self._call("DELETE", self._value_url(namespace, worker))


def lock_scope(env: dict[str, str] | Any) -> str:
    """The account a lock belongs to: the real Cloudflare account, or one simulator (its API base URL) and
    the account in it.  Two rehearsals against two simulators on one machine do not lock each other out;
    two rollouts against the same simulator, or the same real account, do."""
    base = (env.get("CLOUDFLARE_API_BASE_URL") or "").rstrip("/")
    kind = f"api {base}" if base else "cloudflare"
    return f"{kind}|{env.get('CLOUDFLARE_ACCOUNT_ID', '')}"


@contextlib.asynccontextmanager
async def rollout_locks(plan: Any, env: dict[str, str] | Any) -> AsyncIterator[list[Holder]]:
    """The locks of a plan's workers (``plan.lock == "account"`` adds the KV lock); for ``run_plan``."""
    from .preflight import git_head

    commit = await git_head(plan.source.parent if plan.source else None)
    async with hold_locks([w.name for w in plan.workers], env=env, plan=plan.name, commit=commit,
                          account=plan.lock == "account") as holders:
        yield holders


@contextlib.asynccontextmanager
async def hold_locks(workers: Sequence[str], *, env: dict[str, str] | Any, plan: str, commit: str | None = None,
                     account: bool = False, http: httpx.AsyncClient | None = None,
                     ttl_s: float | None = None) -> AsyncIterator[list[Holder]]:
    """Take the lock of every worker (sorted, all or none) for the duration of the block.

    Raises:
        LockHeld: a worker is locked by another rollout; the message names the holder and since when.
    """
    ttl = ttl_s or float(os.environ.get("ROLLOUT_LOCK_TTL", "1800"))
    now = time.time()
    token = uuid.uuid4().hex
    holders = [Holder(os.getpid(), socket.gethostname(), plan, commit, now, w, token, now + ttl)
               for w in sorted(set(workers))]
    scope = lock_scope(env)
    local: list[LocalLock] = []
    remote: AccountLock | None = None
    taken: list[Holder] = []
    own_http = http is None and account
    client = http or (httpx.AsyncClient(timeout=10.0, trust_env=False) if account else None)
    try:
        for holder in holders:
            lock = LocalLock(scope, holder.worker)
            lock.acquire(holder)
            local.append(lock)
        if account and client is not None:
            remote = AccountLock(client, env["CLOUDFLARE_API_BASE_URL"] if env.get("CLOUDFLARE_API_BASE_URL")
                                 else "https://api.cloudflare.com/client/v4", env.get("CLOUDFLARE_ACCOUNT_ID", ""),
                                 env.get("CLOUDFLARE_API_TOKEN", ""))
            for holder in holders:
                await remote.acquire(holder, ttl)
                taken.append(holder)
        logger.info("locked %s", ", ".join(h.worker for h in holders))
        yield holders
    finally:
        with anyio.CancelScope(shield=True):
            if remote is not None:
                for holder in taken:
                    with contextlib.suppress(Exception):
                        await remote.release(holder)
            for lock in local:
                lock.release()
            if own_http and client is not None:
                await client.aclose()


# -- is a runner still there? (for ``rollout status``) -----------------------------------------------------
def _proc_flocks() -> dict[tuple[int, int], set[int]] | None:
    """``(device, inode) → pids`` of every flock on this machine (Linux ``/proc/locks``); None elsewhere."""
    try:
        text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    out: dict[tuple[int, int], set[int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->" or parts[1] != "FLOCK":  # "->": a waiter, not a holder
            continue
        try:
            pid = int(parts[4])
            major, minor, inode = parts[5].split(":")
            device = os.makedev(int(major, 16), int(minor, 16))
            out.setdefault((device, int(inode)), set()).add(pid)
        except ValueError:
            continue
    return out


def locks_held_by(pid: int, directory: Path | None = None) -> list[Holder] | None:
    """The rollout locks on this machine that process ``pid`` holds right now: its owner record names it and
    the kernel still has its flock on the file.  None when this system cannot tell (no ``/proc/locks``)."""
    flocks = _proc_flocks()
    if flocks is None:
        return None
    folder = directory or lock_dir()
    host = socket.gethostname()
    held: list[Holder] = []
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
        holder = LocalLock.at(path, "").read_holder()
        if holder is None or holder.pid != pid or holder.host != host:
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        if pid in flocks.get((stat.st_dev, stat.st_ino), set()):
            held.append(holder)
    return held


def process_alive(pid: int, started: float | None = None) -> bool:
    """Whether ``pid`` is a live process on this machine (not a zombie), and — when ``started`` is given and
    the system says when the process began — one that began before ``started`` (so not a reused pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent: gone
            return False
        if started is not None:
            boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                        if line.startswith("btime "))
            began = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
            if began > started + 5.0:  # 5 s slack: btime is whole seconds, clocks drift
                return False
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return True
