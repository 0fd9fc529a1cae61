"""The Cloudflare API subset wrangler uses, under ``/client/v4``, in Cloudflare's envelope.

Each route has an operation name (``version-upload``, ``deployment-create``, ...) that fault injection
and the call log use; some calls also carry a command name (``deploy``, ``rollback``,
``versions-deploy``, ``versions-upload``, ``tail``, ``whoami``) worked out from what was sent.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from rollout.sim._clock import SimClock
from rollout.sim._faults import FaultInjector
from rollout.sim._http import Request, Response, bearer_matches
from rollout.sim._resources import (
    deployment_json,
    script_json,
    service_json,
    settings_json,
    version_json,
    worker_json,
)
from rollout.sim._state import AUTHOR_EMAIL, State, Worker, iso
from rollout.sim._storage import STORAGE_ROUTES, StorageError
from rollout.sim._storage_api import StorageRoutes
from rollout.sim._upload import UploadError, check_upload, read_upload

logger = logging.getLogger("rollout.sim")

API_PREFIX = "/client/v4"
MAX_VERSIONS_PER_DEPLOYMENT = 2


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One API call as the simulator saw it (the call log)."""

    time: float
    method: str
    path: str
    query: str
    operation: str
    command: str | None
    status: int
    code: int | None


@dataclass(slots=True)
class Ctx:
    request: Request
    params: dict[str, str]
    command: str | None = None
    changed: list[Worker] = field(default_factory=list)


_ACCT = r"/accounts/(?P<account>[^/]+)"
_SCRIPT = _ACCT + r"/workers/scripts/(?P<name>[^/]+)"
_SCRIPT_NAME = re.compile(r"/workers/(?:scripts|services|workers)/([^/?]+)")
_ROUTE_TABLE = [
    ("GET", r"/user/tokens/verify", "verify-token", "verify_token"),
    ("GET", r"/user", "user", "user"),
    ("GET", r"/accounts", "accounts", "accounts"),
    ("GET", r"/memberships", "memberships", "memberships"),
    ("GET", _ACCT + r"/workers/services/(?P<name>[^/]+)", "service-get", "service_get"),
    ("GET", _ACCT + r"/workers/workers/(?P<name>[^/]+)", "worker-get", "worker_get"),
    ("GET", _ACCT + r"/workers/subdomain", "account-subdomain", "account_subdomain"),
    ("GET", _ACCT + r"/workers/scripts", "scripts-list", "scripts_list"),
    ("GET", _ACCT + r"/queues", "queues-list", "queues_list"),
    ("PUT", _SCRIPT, "script-upload", "script_upload"),
    ("GET", _SCRIPT + r"/deployments", "deployments-list", "deployments_list"),
    ("POST", _SCRIPT + r"/deployments", "deployment-create", "deployment_create"),
    ("GET", _SCRIPT + r"/settings", "settings-get", "settings_get"),
    ("GET", _SCRIPT + r"/script-settings", "script-settings-get", "settings_get"),
    ("PATCH", _SCRIPT + r"/script-settings", "script-settings-patch", "script_settings_patch"),
    ("GET", _SCRIPT + r"/versions", "versions-list", "versions_list"),
    ("POST", _SCRIPT + r"/versions", "version-upload", "version_upload"),
    ("GET", _SCRIPT + r"/versions/(?P<id>[^/]+)", "version-get", "version_get"),
    ("GET", _SCRIPT + r"/subdomain", "subdomain-get", "subdomain_get"),
    ("POST", _SCRIPT + r"/subdomain", "subdomain-post", "subdomain_post"),
    ("GET", _SCRIPT + r"/secrets", "secrets-list", "secrets_list"),
    ("POST", _SCRIPT + r"/tails", "tail-create", "tail_create"),
    ("DELETE", _SCRIPT + r"/tails/(?P<id>[^/]+)", "tail-delete", "tail_delete"),
    *[(m, _ACCT + p, op, h) for m, p, op, h in STORAGE_ROUTES],
]
_COMMANDS = {
    "verify-token": "whoami", "user": "whoami", "accounts": "whoami", "memberships": "whoami",
    "deployments-list": "deployments", "versions-list": "versions", "version-get": "versions",
    "tail-create": "tail", "tail-delete": "tail", "script-upload": "deploy",
    "d1-list": "d1", "d1-create": "d1", "d1-get": "d1", "d1-query": "d1", "r2-list": "r2", "r2-create": "r2",
    "r2-get": "r2", "kv-list": "kv", "kv-create": "kv", "kv-get": "kv", "kv-put": "kv", "kv-delete": "kv",
}

_STORAGE_OPS = frozenset(op for _, _, op, _ in STORAGE_ROUTES)


def envelope(result: Any = None, errors: list[dict[str, Any]] | None = None) -> bytes:
    body = {"success": not errors, "errors": errors or [], "messages": [], "result": result}
    return json.dumps(body).encode()


def error_response(status: int, code: int, message: str) -> Response:
    return Response(status, envelope(None, [{"code": code, "message": message}]))


def _not_found_worker(name: str) -> ApiError:
    return ApiError(404, 10007, f"This Worker ({name}) does not exist on your account.")


class Api(StorageRoutes):
    """Routes ``/client/v4`` requests to handlers; owns the call log and the fault injector."""

    def __init__(self, state: State, clock: SimClock, faults: FaultInjector, account_id: str,
                 tail_url: Callable[[Request, str], str], tail_lifetime: float) -> None:
        self.state = state
        self.storage = state.storage
        self.clock = clock
        self.faults = faults
        self.account_id = account_id
        self.tail_url = tail_url
        self.tail_lifetime = tail_lifetime
        self.calls: list[ApiCall] = []
        self.on_change: Callable[[Worker], Awaitable[None]] | None = None
        self.on_tail_delete: Callable[[str], None] | None = None
        #: when set, every call must carry ``Authorization: Bearer <token>`` (else 401, code 10000)
        self.token: str | None = None
        self._routes = [(m, re.compile(p + r"/?"), op, getattr(self, h)) for m, p, op, h in _ROUTE_TABLE]
        self._fresh_uploads: set[str] = set()
        #: the last operation per worker, and the workers a ``wrangler deploy`` is running for
        self._last_op: dict[str, str] = {}
        self._deploying: set[str] = set()

    def match(self, method: str, path: str) -> tuple[str, Callable[[Ctx], Any], dict[str, str]] | None:
        for route_method, pattern, op, handler in self._routes:
            m = pattern.fullmatch(path)
            if m and route_method == method:
                return op, handler, m.groupdict()
        return None

    def record(self, request: Request, op: str, command: str | None, status: int, code: int | None) -> None:
        path = request.path[len(API_PREFIX):]
        query = request.target.partition("?")[2]
        self.calls.append(ApiCall(self.clock.now(), request.method, path, query, op, command, status, code))
        name = _SCRIPT_NAME.search(path)
        if name:
            self._track(name.group(1), op)
        line = f"{request.method} {path}{'?' + query if query else ''} -> {status}"
        detail = f" [{op}{'/' + command if command else ''}{f', code {code}' if code else ''}]"
        if op == "unknown" and status == 404:
            logger.warning("API %s: not implemented by the simulator", line)
        else:
            logger.info("API %s%s", line, detail)

    # --- helpers -------------------------------------------------------------------------------

    def _worker(self, ctx: Ctx, *, required: bool = True) -> Worker | None:
        if ctx.params.get("account") not in (None, self.account_id):
            raise ApiError(
                404, 7003, f"Could not route to /client/v4{ctx.request.path[len(API_PREFIX):]}, perhaps "
                "your object identifier is invalid?",
            )
        worker = self.state.worker(ctx.params.get("name", ""))
        if worker is None and required:
            raise _not_found_worker(ctx.params.get("name", ""))
        return worker

    def _json_body(self, ctx: Ctx) -> Any:
        try:
            return json.loads(ctx.request.body or b"{}")
        except ValueError as exc:
            raise ApiError(400, 10026, f"could not parse the request body as JSON: {exc}") from exc

    # --- whoami --------------------------------------------------------------------------------

    def verify_token(self, ctx: Ctx) -> Any:
        return {"id": "rollout-sim-token", "status": "active"}

    def user(self, ctx: Ctx) -> Any:
        return {"id": "rollout-sim-user", "email": AUTHOR_EMAIL}

    def accounts(self, ctx: Ctx) -> Any:
        return [{"id": self.account_id, "name": "Rollout Simulator"}]

    def memberships(self, ctx: Ctx) -> Any:
        account = {"id": self.account_id, "name": "Rollout Simulator"}
        return [{"id": "membership-1", "account": account, "roles": ["Administrator"], "status": "accepted"}]

    # --- workers -------------------------------------------------------------------------------

    def service_get(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx, required=False)
        if worker is None:
            raise ApiError(404, 10090, "workers.api.error.service_not_found")
        return service_json(worker)

    def worker_get(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx)
        assert worker is not None
        return worker_json(worker)

    def scripts_list(self, ctx: Ctx) -> Any:
        self._worker(ctx, required=False)
        return [script_json(w) for w in self.state.workers.values()]

    def queues_list(self, ctx: Ctx) -> Any:
        """Queue look-up by name (wrangler checks that a producer's queue exists).  Consumers are
        not simulated: their calls get the 404 of unknown calls."""
        self._worker(ctx, required=False)
        wanted = ctx.request.query.get("name", [None])[0]
        return [
            {"queue_id": qid, "queue_name": name, "created_on": iso(self.state.clock()),
             "modified_on": iso(self.state.clock()), "producers": [], "producers_total_count": 0,
             "consumers": [], "consumers_total_count": 0}
            for name, qid in sorted(self.state.queues.items()) if wanted in (None, name)
        ]

    def account_subdomain(self, ctx: Ctx) -> Any:
        self._worker(ctx, required=False)
        return {"subdomain": "rollout-sim"}

    def settings_get(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx)
        assert worker is not None
        return settings_json(worker)

    def script_settings_patch(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx)
        assert worker is not None
        body = self._json_body(ctx)
        if isinstance(body, dict):
            if isinstance(body.get("tags"), list):
                worker.tags = [str(t) for t in body["tags"]]
            worker.settings.update({k: v for k, v in body.items() if k != "tags"})
            ctx.changed.append(worker)
        return settings_json(worker)

    def secrets_list(self, ctx: Ctx) -> Any:
        self._worker(ctx)
        return []

    def subdomain_get(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx)
        assert worker is not None
        return {"enabled": worker.subdomain_enabled, "previews_enabled": worker.previews_enabled}

    def subdomain_post(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx)
        assert worker is not None
        body = self._json_body(ctx)
        if isinstance(body, dict):
            worker.subdomain_enabled = bool(body.get("enabled", worker.subdomain_enabled))
            worker.previews_enabled = bool(body.get("previews_enabled", worker.previews_enabled))
            ctx.changed.append(worker)
        return {"enabled": worker.subdomain_enabled, "previews_enabled": worker.previews_enabled}

    # --- uploads -------------------------------------------------------------------------------

    def _upload(self, ctx: Ctx, worker: Worker | None, name: str) -> tuple[Worker, Any]:
        try:
            upload = read_upload(ctx.request.headers.get("content-type", ""), ctx.request.body)
            classes = check_upload(self.state, worker, name, upload)
        except UploadError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from exc
        if worker is None:
            worker = self.state.create_worker(name)
        migrations = upload.metadata.get("migrations")
        if migrations:
            worker.migration_tag = migrations.get("new_tag")
        worker.do_classes = classes
        version = self.state.add_version(worker, **upload.version_fields())
        ctx.changed.append(worker)
        return worker, version

    def script_upload(self, ctx: Ctx) -> Any:
        """PUT script: the non-versions deploy path (new workers, DO migrations): version + 100%."""
        name = ctx.params["name"]
        worker = self._worker(ctx, required=False)
        worker, version = self._upload(ctx, worker, name)
        annotations = {"workers/triggered_by": "upload", **version.annotations}
        self.state.deploy(worker, [(version.id, 100.0)], annotations=annotations)
        return {**script_json(worker), "deployment_id": version.id, "startup_time_ms": 5}

    def version_upload(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx)
        assert worker is not None
        ctx.command = "versions-upload" if self._is_versions_upload(ctx) else "deploy"
        worker, version = self._upload(ctx, worker, worker.name)
        if ctx.command == "deploy":
            self._fresh_uploads.add(version.id)
        return version_json(worker, version)

    def _is_versions_upload(self, ctx: Ctx) -> bool:
        """Tell ``versions upload`` from ``deploy``.  Both POST versions with the same metadata (4.164.0
        sends ``keep_bindings`` in both), but only ``deploy`` reads the deployments right after its
        first services GET (and secrets GET); see :meth:`_track`."""
        return ctx.params.get("name", "") not in self._deploying

    def _track(self, name: str, op: str) -> None:
        previous = self._last_op.get(name)
        if op == "service-get" and previous != "deployments-list":
            self._deploying.discard(name)  # a new command starts
        elif op == "deployments-list" and previous in ("service-get", "secrets-list"):
            self._deploying.add(name)
        elif op in ("deployment-create", "tail-create"):
            self._deploying.discard(name)
        self._last_op[name] = op

    def versions_list(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx)
        assert worker is not None
        return {"items": [version_json(worker, v) for v in reversed(worker.versions)]}

    def version_get(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx)
        assert worker is not None
        version = worker.version(ctx.params["id"])
        if version is None:
            raise ApiError(404, 10230, f"Version {ctx.params['id']} of {worker.name} was not found")
        return version_json(worker, version)

    # --- deployments ---------------------------------------------------------------------------

    def deployments_list(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx)
        assert worker is not None
        return {"deployments": [deployment_json(d) for d in reversed(worker.deployments)]}

    def deployment_create(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx)
        assert worker is not None
        body = self._json_body(ctx)
        versions = self._split(worker, body)
        ctx.command = self._deployment_kind(worker, versions)
        raw = body.get("annotations") if isinstance(body, dict) else None
        annotations = {str(k): str(v) for k, v in (raw or {}).items()}
        trigger = {"deploy": "upload", "rollback": "rollback"}.get(ctx.command, "promotion")
        annotations.setdefault("workers/triggered_by", trigger)
        deployment = self.state.deploy(worker, versions, annotations=annotations)
        ctx.changed.append(worker)
        return deployment_json(deployment)

    def _split(self, worker: Worker, body: Any) -> list[tuple[str, float]]:
        raw = body.get("versions") if isinstance(body, dict) else None
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, 10181, "A deployment needs a non-empty versions list")
        if len(raw) > MAX_VERSIONS_PER_DEPLOYMENT:
            raise ApiError(400, 10182, f"A deployment may have at most {MAX_VERSIONS_PER_DEPLOYMENT} versions")
        versions: list[tuple[str, float]] = []
        for item in raw:
            vid, pct = str(item.get("version_id")), item.get("percentage")
            if worker.version(vid) is None:
                raise ApiError(404, 10230, f"Version {vid} of {worker.name} was not found")
            if not isinstance(pct, int | float) or not 0 <= pct <= 100:
                raise ApiError(400, 10183, f"Invalid percentage {pct!r} for version {vid}")
            versions.append((vid, float(pct)))
        if abs(sum(p for _, p in versions) - 100) > 0.001:
            raise ApiError(400, 10184, "Version percentages must sum to 100")
        return versions

    def _deployment_kind(self, worker: Worker, versions: list[tuple[str, float]], *, consume: bool = True) -> str:
        if len(versions) == 1 and versions[0][1] == 100:
            vid = versions[0][0]
            if vid in self._fresh_uploads:
                if consume:
                    self._fresh_uploads.discard(vid)
                return "deploy"
            target = worker.version(vid)
            newest_live = max((v.number for v in worker.versions if v.id in dict(worker.active)), default=0)
            if target is not None and target.number < newest_live:
                return "rollback"
        return "versions-deploy"

    # --- tails ---------------------------------------------------------------------------------

    def tail_create(self, ctx: Ctx) -> Any:
        worker = self._worker(ctx)
        assert worker is not None
        try:
            body = json.loads(ctx.request.body or b"{}")
        except ValueError:
            body = {}
        filters = body.get("filters") if isinstance(body, dict) else None
        filters = [f for f in filters if isinstance(f, dict)] if isinstance(filters, list) else []
        tail = self.state.create_tail(worker.name, filters, self.tail_lifetime)
        return {"id": tail.id, "url": self.tail_url(ctx.request, tail.id), "expires_at": iso(tail.expires_at)}

    def tail_delete(self, ctx: Ctx) -> Any:
        self._worker(ctx)
        tail = self.state.tails.pop(ctx.params["id"], None)
        if tail is None:
            raise ApiError(404, 10041, f"Tail {ctx.params['id']} not found")
        if self.on_tail_delete is not None:
            self.on_tail_delete(tail.id)
        return None

    # --- dispatch ------------------------------------------------------------------------------

    def names(self, op: str, ctx: Ctx) -> set[str]:
        """All names a fault's ``call`` may use for this call, decided before the handler runs."""
        names = {op}
        if op in _COMMANDS:
            names.add(_COMMANDS[op])
        if op == "version-upload":
            names.add("versions-upload" if self._is_versions_upload(ctx) else "deploy")
        worker = self.state.worker(ctx.params.get("name", ""))
        if op == "deployment-create" and worker is not None:
            try:
                body = json.loads(ctx.request.body or b"{}")
                versions = [(str(v["version_id"]), float(v["percentage"])) for v in body["versions"]]
            except (ValueError, KeyError, TypeError):
                return names
            names.add(self._deployment_kind(worker, versions, consume=False))
        return names

    def _authorised(self, request: Request) -> bool:
        return self.token is None or bearer_matches(request.headers.get("authorization"), self.token)

    async def handle(self, request: Request) -> Response:
        path = request.path[len(API_PREFIX):] or "/"
        found = self.match(request.method, path)
        if not self._authorised(request):
            self.record(request, found[0] if found else "unknown", "unauthenticated", 401, 10000)
            return error_response(401, 10000, "Authentication error")
        if found is None:
            self.record(request, "unknown", None, 404, 7003)
            return error_response(
                404, 7003, f"rollout sim: {request.method} {API_PREFIX}{path} is not an API call the simulator "
                "implements (see the README, section 'Supported API calls')",
            )
        op, handler, params = found
        ctx = Ctx(request, params)
        injection = self.faults.check(self.names(op, ctx))
        if injection.delay:
            await anyio.sleep(injection.delay)
        if injection.fault is not None:
            fault = injection.fault
            self.record(request, op, f"fault {fault.call}", fault.status, fault.code)
            return error_response(fault.status, fault.code, fault.message)
        try:
            if ctx.params.get("account") not in (None, self.account_id) and op in _STORAGE_OPS:
                self._worker(ctx, required=False)
            result = handler(ctx)
        except (ApiError, StorageError) as exc:
            self.record(request, op, ctx.command, exc.status, exc.code)
            return error_response(exc.status, exc.code, exc.message)
        if self.on_change is not None:
            for worker in {id(w): w for w in ctx.changed}.values():
                await self.on_change(worker)
        self.record(request, op, ctx.command or _COMMANDS.get(op), 200, None)
        if isinstance(result, Response):  # raw bodies (KV values)
            return result
        return Response(200, envelope(result))
