"""Optional SQLite persistence of the simulator's workers, so state survives a restart.

One row per worker holding its JSON (versions and deployments included).  Every call goes through
:func:`anyio.to_thread.run_sync`; a lock keeps them one at a time on the one connection.  Tails are
not persisted: a restart ends their sockets anyway.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import anyio.to_thread

from rollout.errors import SimulatorError
from rollout.sim._state import Worker

_SCHEMA = """
create table if not exists workers (name text primary key, data text not null);
create table if not exists meta (key text primary key, value text not null);
"""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = anyio.Lock()

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise SimulatorError(f"cannot open the simulator state file {self.path}: {exc}") from exc
        return db

    async def open(self) -> dict[str, Worker]:
        """Open (or create) the file and return the workers it holds."""
        async with self._lock:
            self._db = await anyio.to_thread.run_sync(self._open)
            rows = await anyio.to_thread.run_sync(self._rows)
        try:
            return {name: Worker.from_json(json.loads(data)) for name, data in rows}
        except (ValueError, TypeError, KeyError) as exc:
            raise SimulatorError(f"the simulator state file {self.path} is damaged: {exc}") from exc

    def _rows(self) -> list[tuple[str, str]]:
        assert self._db is not None
        return list(self._db.execute("select name, data from workers order by rowid"))

    async def save(self, worker: Worker) -> None:
        data = json.dumps(worker.to_json())

        def write() -> None:
            assert self._db is not None
            self._db.execute(
                "insert into workers (name, data) values (?, ?) "
                "on conflict(name) do update set data = excluded.data",
                (worker.name, data),
            )

        async with self._lock:
            await anyio.to_thread.run_sync(write)

    async def close(self) -> None:
        async with self._lock:
            if self._db is not None:
                db, self._db = self._db, None
                await anyio.to_thread.run_sync(db.close)
