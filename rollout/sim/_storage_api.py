"""API handlers for the account's storage (mixed into :class:`rollout.sim._api.Api`).

Shapes as real wrangler reads them (4.86.0 and 4.164.0, checked against the call log):

* ``wrangler d1 list --json``: ``GET /d1/database?per_page=10&page=N`` until a short page.
* ``wrangler d1 migrations list|apply DB --remote``: ``POST /d1/database/{uuid}/query`` with
  ``{"sql": …}``; the result is one ``{results, success, meta}`` per statement.
* ``wrangler r2 bucket list``: ``GET /r2/buckets`` → ``{"buckets": [{name, creation_date}]}``.
* ``wrangler kv namespace list``: ``GET /storage/kv/namespaces?per_page=100&order=title&direction=asc&page=N``.
* KV values (the account lock): ``GET|PUT|DELETE /storage/kv/namespaces/{id}/values/{key}``; GET answers
  the raw value, not an envelope; PUT takes ``expiration_ttl`` or ``expiration``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Protocol

from rollout.sim._http import Request, Response
from rollout.sim._storage import KVValue, Storage, StorageError, paginate


class _Ctx(Protocol):
    request: Request
    params: dict[str, str]


class StorageRoutes:
    """Handlers; the host class provides ``storage``, ``state`` and ``clock``."""

    storage: Storage

    def _body(self, ctx: _Ctx) -> dict[str, Any]:
        try:
            body = json.loads(ctx.request.body or b"{}")
        except ValueError as exc:
            raise StorageError(400, 10026, f"could not parse the request body as JSON: {exc}") from exc
        return body if isinstance(body, dict) else {}

    # -- D1 ------------------------------------------------------------------------------------
    def d1_list(self, ctx: _Ctx) -> Any:
        items = [db.to_json() for db in sorted(self.storage.d1.values(), key=lambda d: d.name)]
        wanted = ctx.request.query.get("name", [None])[0]
        items = [i for i in items if wanted in (None, i["name"])]
        return paginate(items, ctx.request.query, 10)

    def d1_create(self, ctx: _Ctx) -> Any:
        name = str(self._body(ctx).get("name", ""))
        if not name:
            raise StorageError(400, 7400, "a database needs a name")
        if any(d.name == name for d in self.storage.d1.values()):
            raise StorageError(400, 7502, f"A database with that name already exists: {name}")
        return self.storage.add_d1(name, str(uuid.uuid4())).to_json()

    def d1_get(self, ctx: _Ctx) -> Any:
        return self.storage.find_d1(ctx.params["db"]).to_json()

    def d1_query(self, ctx: _Ctx) -> Any:
        db = self.storage.find_d1(ctx.params["db"])
        body = self._body(ctx)
        params = body.get("params")
        return db.query(str(body.get("sql", "")), params if isinstance(params, list) else None)

    # -- R2 ------------------------------------------------------------------------------------
    def r2_list(self, ctx: _Ctx) -> Any:
        from rollout.sim._storage import _iso

        return {"buckets": [{"name": n, "creation_date": _iso(t)} for n, t in sorted(self.storage.r2.items())]}

    def r2_create(self, ctx: _Ctx) -> Any:
        name = str(self._body(ctx).get("name", ""))
        if name in self.storage.r2:
            raise StorageError(409, 10004, "The bucket you tried to create already exists, and you own it.")
        self.storage.add_r2(name)
        return {}

    def r2_get(self, ctx: _Ctx) -> Any:
        from rollout.sim._storage import _iso

        name = ctx.params["bucket"]
        if name not in self.storage.r2:
            raise StorageError(404, 10006, "The specified bucket does not exist.")
        return {"name": name, "creation_date": _iso(self.storage.r2[name]), "location": "WEUR"}

    # -- KV ------------------------------------------------------------------------------------
    def kv_list(self, ctx: _Ctx) -> Any:
        items = [ns.to_json() for ns in sorted(self.storage.kv.values(), key=lambda n: n.title)]
        return paginate(items, ctx.request.query, 20)

    def kv_create(self, ctx: _Ctx) -> Any:
        title = str(self._body(ctx).get("title", ""))
        if any(ns.title == title for ns in self.storage.kv.values()):
            raise StorageError(400, 10014, "A namespace with this account ID and title already exists.")
        return self.storage.add_kv(title, uuid.uuid4().hex).to_json()

    def kv_get(self, ctx: _Ctx) -> Any:
        value = self.storage.kv_read(ctx.params["ns"], ctx.params["key"])
        return Response(200, value, content_type="application/octet-stream")

    def kv_put(self, ctx: _Ctx) -> Any:
        ns = self.storage.namespace(ctx.params["ns"])
        query = ctx.request.query
        expires = None
        try:
            if "expiration" in query:
                expires = float(query["expiration"][0])
            elif "expiration_ttl" in query:
                ttl = float(query["expiration_ttl"][0])
                if ttl < 60:
                    raise StorageError(400, 10019, f"Invalid expiration_ttl of {ttl:g}. Expiration TTL must be at "
                                       "least 60.")
                expires = self.storage.clock() + ttl
        except ValueError as exc:
            raise StorageError(400, 10019, f"invalid expiration: {exc}") from exc
        ns.values[ctx.params["key"]] = KVValue(ctx.request.body, expires)
        return {}

    def kv_delete(self, ctx: _Ctx) -> Any:
        self.storage.namespace(ctx.params["ns"]).values.pop(ctx.params["key"], None)
        return {}

    # -- queues --------------------------------------------------------------------------------
    def queue_create(self, ctx: _Ctx) -> Any:
        state: Any = getattr(self, "state")  # noqa: B009 - the host class's State
        name = str(self._body(ctx).get("queue_name", ""))
        qid = state.queues.setdefault(name, uuid.uuid5(uuid.NAMESPACE_URL, name).hex)
        return {"queue_id": qid, "queue_name": name}
