"""The account's storage resources: D1 databases (real SQLite, in memory), R2 buckets, KV namespaces
(with values and expiry) and queues.  Served with the API calls real wrangler makes for
``d1 list/create/migrations``, ``r2 bucket list/create``, ``kv namespace list/create`` and ``queues list``,
plus the KV value calls the account-wide rollout lock uses.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Route table entries added to the API: (method, path regex after the account, operation, handler name).
STORAGE_ROUTES = [
    ("GET", r"/d1/database", "d1-list", "d1_list"),
    ("POST", r"/d1/database", "d1-create", "d1_create"),
    ("GET", r"/d1/database/(?P<db>[^/]+)", "d1-get", "d1_get"),
    ("POST", r"/d1/database/(?P<db>[^/]+)/query", "d1-query", "d1_query"),
    ("POST", r"/d1/database/(?P<db>[^/]+)/raw", "d1-query", "d1_query"),
    ("GET", r"/r2/buckets", "r2-list", "r2_list"),
    ("POST", r"/r2/buckets", "r2-create", "r2_create"),
    ("GET", r"/r2/buckets/(?P<bucket>[^/]+)", "r2-get", "r2_get"),
    ("GET", r"/storage/kv/namespaces", "kv-list", "kv_list"),
    ("POST", r"/storage/kv/namespaces", "kv-create", "kv_create"),
    ("GET", r"/storage/kv/namespaces/(?P<ns>[^/]+)/values/(?P<key>.+)", "kv-get", "kv_get"),
    ("PUT", r"/storage/kv/namespaces/(?P<ns>[^/]+)/values/(?P<key>.+)", "kv-put", "kv_put"),
    ("DELETE", r"/storage/kv/namespaces/(?P<ns>[^/]+)/values/(?P<key>.+)", "kv-delete", "kv_delete"),
    ("POST", r"/queues", "queue-create", "queue_create"),
]


class StorageError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(slots=True)
class D1Database:
    uuid: str
    name: str
    created_at: float
    db: sqlite3.Connection = field(default_factory=lambda: sqlite3.connect(":memory:", check_same_thread=False))

    def to_json(self) -> dict[str, Any]:
        tables = self.db.execute("select count(*) from sqlite_master where type='table'").fetchone()[0]
        return {"uuid": self.uuid, "name": self.name, "version": "production", "created_at": _iso(self.created_at),
                "num_tables": tables, "file_size": 12288, "read_replication": {"mode": "disabled"}}

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Run every statement of ``sql``; one D1 result object per statement, as the API returns."""
        out = []
        for statement in split_sql(sql):
            started = time.perf_counter()
            try:
                cursor = self.db.execute(statement, params or [])
            except sqlite3.Error as exc:
                raise StorageError(400, 7500, f"{exc}: SQLITE_ERROR") from exc
            columns = [c[0] for c in cursor.description or ()]
            rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            self.db.commit()
            out.append({"results": rows, "success": True, "meta": {
                "served_by": "rollout-sim", "duration": (time.perf_counter() - started) * 1000,
                "changes": max(cursor.rowcount, 0), "last_row_id": cursor.lastrowid or 0,
                "changed_db": cursor.rowcount > 0, "size_after": 12288, "rows_read": len(rows),
                "rows_written": max(cursor.rowcount, 0)}})
        return out

    def applied_migrations(self, table: str = "d1_migrations") -> list[str]:
        try:
            return [r[0] for r in self.db.execute(f'select name from "{table}" order by id')]
        except sqlite3.Error:
            return []


def split_sql(sql: str) -> list[str]:
    """Split a script into complete statements (sqlite3 decides where one ends)."""
    statements, buffer = [], ""
    for piece in sql.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        statements.append(buffer.strip().rstrip(";"))
    return statements


@dataclass(slots=True)
class KVValue:
    value: bytes
    expires_at: float | None = None


@dataclass(slots=True)
class KVNamespace:
    id: str
    title: str
    values: dict[str, KVValue] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "supports_url_encoding": True}


class Storage:
    """D1, R2, KV and queue resources of the one simulated account."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.d1: dict[str, D1Database] = {}
        self.r2: dict[str, float] = {}
        self.kv: dict[str, KVNamespace] = {}

    # -- creating (scenario pre-seeding and the create calls) --------------------------------
    def add_d1(self, name: str, db_uuid: str | None = None) -> D1Database:
        for db in self.d1.values():
            if db.name == name:
                return db
        db = D1Database(db_uuid or str(uuid.uuid5(uuid.NAMESPACE_URL, "d1:" + name)), name, self.clock())
        self.d1[db.uuid] = db
        return db

    def add_r2(self, name: str) -> None:
        self.r2.setdefault(name, self.clock())

    def add_kv(self, title: str, ns_id: str | None = None) -> KVNamespace:
        ns_id = ns_id or uuid.uuid5(uuid.NAMESPACE_URL, "kv:" + title).hex
        return self.kv.setdefault(ns_id, KVNamespace(ns_id, title))

    def find_d1(self, ref: str) -> D1Database:
        db = self.d1.get(ref) or next((d for d in self.d1.values() if d.name == ref), None)
        if db is None:
            raise StorageError(404, 7404, f"The database {ref} could not be found")
        return db

    def namespace(self, ns_id: str) -> KVNamespace:
        ns = self.kv.get(ns_id)
        if ns is None:
            raise StorageError(404, 10013, f"namespace {ns_id} not found")
        return ns

    def kv_read(self, ns_id: str, key: str) -> bytes:
        value = self.namespace(ns_id).values.get(key)
        if value is None or (value.expires_at is not None and value.expires_at <= self.clock()):
            raise StorageError(404, 10009, "get: 'key not found'")
        return value.value


def paginate(items: list[Any], query: dict[str, list[str]], default_per_page: int = 20) -> list[Any]:
    """Page pagination the way wrangler asks for it (``page`` from 1, ``per_page``)."""
    try:
        page = max(1, int(query.get("page", ["1"])[0]))
        per_page = max(1, int(query.get("per_page", [str(default_per_page)])[0]))
    except ValueError:
        page, per_page = 1, default_per_page
    return items[(page - 1) * per_page: page * per_page]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1e6):06d}Z"
