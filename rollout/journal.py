"""The journal: every engine event of every rollout, in SQLite, one file per project directory.

Each write is one transaction, so ``rollout status`` and ``rollout rollback --last`` work even after
the runner was killed with SIGKILL: a deploy's "before" version is written before the deploy runs.
Calls go through a worker thread (``anyio.to_thread``) so the event loop never blocks on disk.

A rollout records its runner's pid and host, so ``rollout status`` tells a running rollout from a killed
one; ``rollout rollback --last`` appends its verified rollbacks to the rolled-back rollout's events, so
:func:`pick_last_run` skips a rollout whose changes are rolled back and verified.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from .bus import EngineEvent, RollbackDone

DEFAULT_JOURNAL = Path(".rollout") / "journal.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY, plan TEXT NOT NULL, plan_path TEXT, target TEXT, api_base TEXT, edge_url TEXT,
    started REAL NOT NULL, ended REAL, outcome TEXT, exit_code INTEGER, pid INTEGER, mode TEXT DEFAULT 'run',
    host TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id TEXT NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_rollout ON events (rollout_id, id);
CREATE INDEX IF NOT EXISTS events_by_kind_at ON events (kind, at);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id TEXT NOT NULL, worker TEXT NOT NULL, before TEXT,
    after TEXT, phase TEXT, at REAL NOT NULL, state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS migrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id TEXT NOT NULL, worker TEXT NOT NULL, binding TEXT NOT NULL,
    name TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hourly (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id TEXT NOT NULL, worker TEXT NOT NULL, hour_start REAL NOT NULL,
    requests INTEGER NOT NULL, errors INTEGER NOT NULL, data TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    id: str
    plan: str
    plan_path: str | None
    target: str | None
    api_base: str | None
    edge_url: str | None
    started: float
    ended: float | None
    outcome: str | None
    exit_code: int | None
    pid: int | None
    mode: str
    #: the machine the runner ran on (None in journals written before it was recorded)
    host: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """A worker this rollout changed (``state`` is ``intent`` until the deploy returned)."""

    rollout_id: str
    worker: str
    before: str | None
    after: str | None
    phase: str | None
    at: float
    state: str


class Journal:
    """Append-only record of rollouts in one SQLite file."""

    def __init__(self, path: Path = DEFAULT_JOURNAL) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    def open_sync(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(rollouts)")}
        if "host" not in columns:  # a journal from before hosts were recorded
            try:
                db.execute("ALTER TABLE rollouts ADD COLUMN host TEXT")
            except sqlite3.OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise
        self._db = db
        return self

    async def open(self) -> Journal:
        return await anyio.to_thread.run_sync(self.open_sync)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await anyio.to_thread.run_sync(db.close)

    async def __aenter__(self) -> Journal:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _tx(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        db = self._require()
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    db.execute(sql, params)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        db = self._require()
        with self._lock:
            return list(db.execute(sql, params).fetchall())

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("journal is not open")
        return self._db

    # -- writes ----------------------------------------------------------------------------------
    async def start_rollout(
        self, rollout_id: str, plan: str, plan_path: str | None, target: str, api_base: str | None,
        edge_url: str | None, started: float, pid: int, mode: str = "run", host: str | None = None,
    ) -> None:
        """Record a rollout (or watch) as started by process ``pid`` on ``host`` (default: this machine)."""
        sql = ("INSERT INTO rollouts (id, plan, plan_path, target, api_base, edge_url, started, pid, mode, host) "
               "VALUES (?,?,?,?,?,?,?,?,?,?)")
        params = (rollout_id, plan, plan_path, target, api_base, edge_url, started, pid, mode,
                  host or socket.gethostname())
        await anyio.to_thread.run_sync(self._tx, [(sql, params)])

    async def append(self, rollout_id: str, events: Sequence[EngineEvent]) -> None:
        rows = [("INSERT INTO events (rollout_id, at, kind, data) VALUES (?,?,?,?)",
                 (rollout_id, ev.at, ev.kind, json.dumps(ev.to_dict(), default=str))) for ev in events]
        if rows:
            await anyio.to_thread.run_sync(self._tx, rows)

    async def record_change(self, change: Change) -> None:
        sql = "INSERT INTO changes (rollout_id, worker, before, after, phase, at, state) VALUES (?,?,?,?,?,?,?)"
        params = (change.rollout_id, change.worker, change.before, change.after, change.phase, change.at,
                  change.state)
        await anyio.to_thread.run_sync(self._tx, [(sql, params)])

    async def record_migration(self, rollout_id: str, worker: str, binding: str, name: str, at: float) -> None:
        sql = "INSERT INTO migrations (rollout_id, worker, binding, name, at) VALUES (?,?,?,?,?)"
        await anyio.to_thread.run_sync(self._tx, [(sql, (rollout_id, worker, binding, name, at))])

    async def record_hour(self, rollout_id: str, worker: str, hour_start: float, requests: int, errors: int,
                          data: dict[str, Any]) -> None:
        sql = "INSERT INTO hourly (rollout_id, worker, hour_start, requests, errors, data) VALUES (?,?,?,?,?,?)"
        params = (rollout_id, worker, hour_start, requests, errors, json.dumps(data))
        await anyio.to_thread.run_sync(self._tx, [(sql, params)])

    async def finish(self, rollout_id: str, ended: float, outcome: str, exit_code: int) -> None:
        sql = "UPDATE rollouts SET ended=?, outcome=?, exit_code=? WHERE id=?"
        await anyio.to_thread.run_sync(self._tx, [(sql, (ended, outcome, exit_code, rollout_id))])

    # -- reads -----------------------------------------------------------------------------------
    async def rollouts(self, limit: int = 10, mode: str | None = None) -> list[RolloutRecord]:
        where = "WHERE mode = ?" if mode else ""
        params: tuple[Any, ...] = (mode, limit) if mode else (limit,)
        rows = await anyio.to_thread.run_sync(
            self._query,
            "SELECT id, plan, plan_path, target, api_base, edge_url, started, ended, outcome, exit_code, pid, mode, "
            f"host FROM rollouts {where} ORDER BY started DESC, rowid DESC LIMIT ?", params,
        )
        return [RolloutRecord(*row) for row in rows]

    async def rollout(self, rollout_id: str) -> RolloutRecord | None:
        """The rollout (or watch) with this id, or None."""
        rows = await anyio.to_thread.run_sync(
            self._query,
            "SELECT id, plan, plan_path, target, api_base, edge_url, started, ended, outcome, exit_code, pid, mode, "
            "host FROM rollouts WHERE id = ?", (rollout_id,),
        )
        return RolloutRecord(*rows[0]) if rows else None

    async def changes(self, rollout_id: str) -> list[Change]:
        rows = await anyio.to_thread.run_sync(
            self._query,
            "SELECT rollout_id, worker, before, after, phase, at, state FROM changes WHERE rollout_id=? ORDER BY id",
            (rollout_id,),
        )
        return [Change(*row) for row in rows]

    async def migrations(self, rollout_id: str) -> list[tuple[str, str, str]]:
        rows = await anyio.to_thread.run_sync(
            self._query, "SELECT worker, binding, name FROM migrations WHERE rollout_id=? ORDER BY id", (rollout_id,),
        )
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    async def events(self, rollout_id: str, kinds: Sequence[str] = ()) -> list[dict[str, Any]]:
        sql = "SELECT data FROM events WHERE rollout_id=?"
        params: list[Any] = [rollout_id]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params.extend(kinds)
        rows = await anyio.to_thread.run_sync(self._query, sql + " ORDER BY id", params)
        return [json.loads(row[0]) for row in rows]

    async def hours(self, since: float) -> list[dict[str, Any]]:
        rows = await anyio.to_thread.run_sync(
            self._query,
            "SELECT worker, hour_start, requests, errors, data FROM hourly WHERE hour_start >= ? ORDER BY hour_start",
            (since,),
        )
        return [{"worker": w, "hour_start": h, "requests": r, "errors": e, **json.loads(d)} for w, h, r, e, d in rows]

    async def hours_overlapping(self, start: float, end: float, hour_s: float = 3600.0) -> list[dict[str, Any]]:
        """The hourly rows whose hour ``[hour_start, hour_start + hour_s)`` overlaps ``[start, end]`` (each with
        its ``rollout_id``), oldest first.  An hour is written when it closes (or when its watch ends)."""
        rows = await anyio.to_thread.run_sync(
            self._query,
            "SELECT rollout_id, worker, hour_start, requests, errors, data FROM hourly "
            "WHERE hour_start > ? AND hour_start <= ? ORDER BY hour_start, id",
            (start - hour_s, end),
        )
        return [{"rollout_id": i, "worker": w, "hour_start": h, "requests": r, "errors": e, **json.loads(d)}
                for i, w, h, r, e, d in rows]

    async def events_since(self, since: float, kinds: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        """``(rollout_id, event)`` of every event of these kinds at or after ``since`` (epoch seconds), of
        every rollout and watch, in the order they were written."""
        if not kinds:
            return []
        sql = (f"SELECT rollout_id, data FROM events WHERE kind IN ({','.join('?' * len(kinds))}) AND at >= ? "
               "ORDER BY id")
        rows = await anyio.to_thread.run_sync(self._query, sql, [*kinds, since])
        return [(str(rollout_id), json.loads(data)) for rollout_id, data in rows]


async def rolled_back_to(journal: Journal, rollout_id: str) -> dict[str, str]:
    """Per worker, the version a verified rollback of this rollout put back (by the run itself or by
    ``rollout rollback --last``), from its ``RollbackDone`` events; the last one wins."""
    done: dict[str, str] = {}
    for event in await journal.events(rollout_id, kinds=("RollbackDone",)):
        if event.get("verified") and event.get("worker") and event.get("to_version"):
            done[str(event["worker"])] = str(event["to_version"])
    return done


@dataclass(frozen=True, slots=True)
class RollbackPick:
    """What ``rollout rollback --last`` rolls back: the newest run whose changes are not all rolled back and
    verified (``record``, and those ``changes``), and the newer runs it passed over, each with why."""

    record: RolloutRecord | None
    changes: list[Change]
    skipped: list[tuple[RolloutRecord, str]]
    #: the journal holds no run at all
    empty: bool = False


async def pick_last_run(journal: Journal, limit: int = 100) -> RollbackPick:
    """The run ``rollout rollback --last`` rolls back (see :class:`RollbackPick`).

    A run is passed over when it changed nothing that has a version to go back to, when it ended
    ``rolled_back`` (the engine verified its rollback), or when every change has a verified rollback to
    its version before in the run's events.  A run with some changes still live is picked with those.
    """
    records = await journal.rollouts(limit, mode="run")
    skipped: list[tuple[RolloutRecord, str]] = []
    for record in records:
        left, why = await left_to_roll_back(journal, record)
        if why:
            skipped.append((record, why))
            continue
        return RollbackPick(record, left, skipped)
    return RollbackPick(None, [], skipped, empty=not records)


async def pick_run(journal: Journal, rollout_id: str) -> RollbackPick:
    """What ``rollout rollback ID`` rolls back: that run's changes not rolled back and verified yet (the same
    rules as :func:`pick_last_run`); ``record`` None and ``empty`` when the journal has no such id, ``record``
    None and the run in ``skipped`` (with why) when it has nothing left to roll back."""
    record = await journal.rollout(rollout_id)
    if record is None:
        return RollbackPick(None, [], [], empty=True)
    left, why = await left_to_roll_back(journal, record)
    if why:
        return RollbackPick(None, [], [(record, why)])
    return RollbackPick(record, left, [])


async def left_to_roll_back(journal: Journal, record: RolloutRecord) -> tuple[list[Change], str]:
    """``(changes, "")``: what ``record`` changed that is not rolled back and verified yet; or ``([], why)``
    when nothing is left ("changed nothing", "rolled back and verified")."""
    changes = [c for c in latest_changes(await journal.changes(record.id)) if c.before]
    if not changes:
        return [], "changed nothing"
    if record.outcome == "rolled_back":
        return [], "rolled back and verified"
    done = await rolled_back_to(journal, record.id)
    left = [c for c in changes if done.get(c.worker) != c.before]
    if not left:
        return [], "rolled back and verified"
    return left, ""


def rollback_done(worker: str, from_version: str | None, to_version: str, verified: bool, detail: str,
                  at: float) -> RollbackDone:
    """The event ``rollout rollback --last`` (or ``rollout rollback ID``) appends to the rolled-back rollout."""
    return RollbackDone(worker=worker, from_version=from_version, to_version=to_version, attempts=1,
                        verified=verified, detail=detail, at=at)


def latest_changes(changes: Sequence[Change]) -> list[Change]:
    """Per worker, the first "before" and the last "after", in the order the workers were first changed."""
    merged: dict[str, Change] = {}
    for change in changes:
        first = merged.get(change.worker)
        if first is None:
            merged[change.worker] = change
        else:
            merged[change.worker] = Change(first.rollout_id, change.worker, first.before,
                                           change.after or first.after, change.phase, change.at,
                                           change.state)
    return list(merged.values())
