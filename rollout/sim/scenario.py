"""Scenarios: what the simulated workers do, and which faults the simulated Cloudflare injects.

A scenario is a TOML file: a shipped one by name (``rollout/sim/scenarios/<name>.toml``) or a path.
``base = "<name or path>"`` loads another scenario first and deep-merges this one over it.  The
format is documented in the README (section "The local Cloudflare simulator").
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from rollout.errors import ScenarioError
from rollout.sim._faults import unknown_call
from rollout.sim._fields import Table
from rollout.sim._upload import SUPPORTED_BINDINGS

#: The workers the shipped scenarios pre-seed (version 1 deployed at 100%).
EXAMPLE_WORKERS = ("cf-ssai", "cf-ssai-decision", "cf-ssai-beacon", "cf-ssai-vast-parser")

LOG_LEVELS = ("debug", "info", "log", "warn", "error")

#: Bounds of scenario fields (README, "Scenarios").  Rates: four workers at the maximum are half of what one
#: core serves (~80,000 requests/s without tails).  Delays of an answer (API calls, latency): an hour, past
#: which a wait is a hang.  Simulated timers and onsets: a week, longer than any rollout.
MAX_TRAFFIC_RATE = 10_000.0
MAX_DELAY_S = 3600.0
MAX_SIM_SECONDS = 7 * 86400.0
MAX_LOGS_PER_HOUR = 3_600_000.0
MAX_WEIGHT = 1_000_000.0
MAX_DO_INSTANCES = 100_000
MAX_FILE_BYTES = 4 * 2**20
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*")
_RATE_UNIT = " requests/s per worker"
_SIM_UNIT = " simulated seconds"
_NO_BODY = (204, 304)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?")


@dataclass(frozen=True, slots=True)
class LogLine:
    """A log line a version writes.

    Rate: ``per_hour`` (by simulated time, spread over the version's requests), else ``probability``
    per request, else on every request.
    """

    message: str
    level: str = "log"
    per_hour: float | None = None
    probability: float | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """An HTTP route of a worker on the edge.  ``path`` is a glob (``/demo/*/master.m3u8``)."""

    path: str
    method: str = "GET"
    status: int = 200
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    #: share of generated traffic (0: only served when asked for)
    weight: float = 0.0
    #: the concrete path generated traffic requests (default: the glob with ``*`` -> ``sports1``)
    example: str = ""

    @property
    def sample_path(self) -> str:
        return self.example or self.path.replace("*", "sports1")


#: What a Durable Object that restarts because traffic moved to another version logs, once per instance.
DEFAULT_RESET_LOGS: tuple[LogLine, ...] = (
    LogLine("⚠️  DO Instance Churn: id={id}, name={colo}:demo:{channel}, reason=version change", "warn"),
    LogLine("🆕 DO Instance Created: id={id}, name={colo}:demo:{channel}"),
)


@dataclass(frozen=True, slots=True)
class DurableObjects:
    """The Durable Object instances a worker runs, and the reset wave a deploy causes.

    When a deployment moves a share ``f`` of the worker's traffic to versions that did not serve it before,
    ``instances * f`` objects restart, spread evenly over ``wave_s`` simulated seconds; each logs
    ``reset_logs`` on the next request served by a version that gained the traffic.  The first deployment
    of a worker (and the pre-seeded one) causes no wave.
    """

    instances: int
    wave_s: float = 30.0
    reset_logs: tuple[LogLine, ...] = DEFAULT_RESET_LOGS


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What a version does with the requests it serves."""

    error_rate: float = 0.0
    error_status: int = 500
    error_body: str = "internal error"
    error_log: str = ""
    exception_rate: float = 0.0
    exception_name: str = "Error"
    exception_message: str = "Worker threw an exception"
    #: seconds after the version first takes traffic before the errors/exceptions/fault logs start
    onset_after: float = 0.0
    latency_ms: float = 12.0
    cpu_ms: float = 2.0
    logs: tuple[LogLine, ...] = ()
    fault_logs: tuple[LogLine, ...] = ()
    #: counts as a fault for first_fault_onset(); default: it has errors, exceptions or fault_logs
    fault: bool = False


_BEHAVIOUR_KEYS = (
    "error_rate", "error_status", "error_body", "error_log", "exception_rate", "exception_name",
    "exception_message", "onset_after", "latency_ms", "cpu_ms", "logs", "fault_logs", "fault",
)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    name: str
    preseed: bool = False
    routes: tuple[Route, ...] = ()
    behaviour: Behaviour = Behaviour()
    versions: dict[int, Behaviour] = field(default_factory=dict)
    traffic_rate: float | None = None
    bindings: tuple[dict[str, Any], ...] = ()
    migration_tag: str | None = None
    durable_objects: DurableObjects | None = None

    def behaviour_for(self, number: int) -> Behaviour:
        """The behaviour of the ``number``-th version uploaded (1-based)."""
        return self.versions.get(number, self.behaviour)


@dataclass(frozen=True, slots=True)
class ApiFault:
    """Fail (or slow down) matching API calls.  ``call`` is an operation or a command name."""

    call: str
    status: int = 500
    code: int = 10013
    message: str = "An unknown error has occurred"
    skip: int = 0
    times: int = 1
    delay: float = 0.0
    fail: bool = True


@dataclass(frozen=True, slots=True)
class TailFaults:
    drop_every: float | None = None
    drop_mode: str = "close"
    close_code: int = 1011
    #: tail lifetime in simulated seconds; after it events stop, the socket stays open
    expire_after: float = 3600.0
    sampling_after: float | None = None
    sampling_for: float = 10.0
    sampling_keep: float = 0.1


@dataclass(frozen=True, slots=True)
class Resources:
    """Storage that exists in the account before the rollout (``[resources]``).

    ``missing`` names resources to leave out even though a base scenario or a worker's bindings would
    create them: ``"r2:NAME"``, ``"d1:NAME"``, ``"kv:TITLE_OR_ID"``, ``"queue:NAME"``, ``"worker:NAME"``.
    """

    d1: tuple[tuple[str, str | None], ...] = ()
    r2: tuple[str, ...] = ()
    kv: tuple[tuple[str, str | None], ...] = ()
    queues: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    def is_missing(self, kind: str, *names: str | None) -> bool:
        return any(f"{kind}:{n}" in self.missing for n in names if n)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    source: str
    description: str = ""
    seed: int = 1
    traffic_rate: float = 20.0
    workers: dict[str, WorkerSpec] = field(default_factory=dict)
    api_faults: tuple[ApiFault, ...] = ()
    api_delay: float = 0.0
    tail: TailFaults = TailFaults()
    resources: Resources = Resources()

    def worker(self, name: str) -> WorkerSpec:
        """The spec of a worker; one the scenario does not name gets healthy defaults."""
        spec = self.workers.get(name)
        return spec if spec is not None else WorkerSpec(name=name, routes=DEFAULT_ROUTES)


DEFAULT_ROUTES = (
    Route(path="/health", body="ok", weight=1.0),
    Route(path="/", body="hello from {worker} version {number}\n", weight=3.0),
)


def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped with rollout."""
    folder = resources.files("rollout.sim") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read(ref: str, trail: tuple[str, ...]) -> tuple[dict[str, Any], str, dict[str, str]]:
    """The merged data of a scenario and its bases, its source, and which file set each field."""
    path = Path(ref)
    if ref.endswith(".toml") or path.exists() or "/" in ref:
        source = str(path)
        if not path.is_file():
            raise ScenarioError(f"scenario {ref}: no such scenario file")
        try:
            with path.open("rb") as stream:
                raw = stream.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ScenarioError(f"scenario {source}: cannot be read: {exc.strerror or exc}") from None
        base_dir: Path | None = path.parent
    else:
        res = resources.files("rollout.sim") / "scenarios" / f"{ref}.toml"
        if not res.is_file():
            raise ScenarioError(
                f"scenario {ref}: no such shipped scenario; shipped: {', '.join(shipped_scenarios())} "
                "(or give a path)"
            )
        source, raw, base_dir = f"{ref} (shipped)", res.read_bytes(), None
    if source in trail:
        raise ScenarioError(f"scenario {source}: field base: scenarios include each other ({' -> '.join(trail)})")
    data = _parse_toml(raw, source)
    base = data.pop("base", None)
    if base is None:
        return data, source, _origins(data, source, "", {})
    if not isinstance(base, str):
        raise ScenarioError(f"scenario {source}: field base: expected a scenario name or path, got {base!r}")
    if base_dir is not None and (base.endswith(".toml") or "/" in base):
        base = str(base_dir / base)
    parent, _, origins = _read(base, (*trail, source))
    return _merge(parent, data), source, _origins(data, source, "", origins)


def _parse_toml(raw: bytes, source: str) -> dict[str, Any]:
    """A file's TOML, or one line that says why it is not TOML (where, for syntax errors)."""
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(f"scenario {source}: larger than {MAX_FILE_BYTES // 2**20} MiB; a scenario is a "
                            "small TOML file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ScenarioError(
            f"scenario {source}: not a text file: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 "
            "(a scenario is a UTF-8 TOML file)"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = re.fullmatch(r"(?s)(.*) \(at line (\d+), column (\d+)\)", message)
        if at is not None:
            where, message = f", line {at[2]}, column {at[3]}", at[1]
        elif message.endswith(" (at end of document)"):
            where, message = ", at the end of the file", message.removesuffix(" (at end of document)")
        else:
            where = ""
        raise ScenarioError(f"scenario {source}{where}: not valid TOML: {message}") from None


def _origins(data: dict[str, Any], source: str, prefix: str, out: dict[str, str]) -> dict[str, str]:
    """Record ``source`` as the file that set every field of ``data`` (merged over what ``out`` holds)."""
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if not isinstance(value, dict):  # replaces whatever was there, arrays wholesale
            for stale in [f for f in out if f.startswith((dotted + ".", dotted + "["))]:
                del out[stale]
        out[dotted] = source
        if isinstance(value, dict):
            _origins(value, source, dotted, out)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_scenario(ref: str | Path) -> Scenario:
    """Load a scenario by shipped name or by path.

    Raises:
        ScenarioError: the file is missing or wrong; the message names the file and the field.
    """
    data, source, origins = _read(str(ref), ())
    return _parse(Table(data, source, origins=origins), default_name=Path(str(ref)).stem)


def _parse(top: Table, default_name: str) -> Scenario:
    traffic = top.table("traffic")
    faults = top.table("faults")
    workers_table = top.table("workers")
    workers = {name: _worker(workers_table.table(name), name) for name in workers_table.data}
    scenario = Scenario(
        name=top.text("name", default_name),
        source=top.source,
        description=top.text("description", ""),
        seed=top.integer("seed", 1),
        traffic_rate=traffic.number("rate", 20.0, low=0, high=MAX_TRAFFIC_RATE, unit=_RATE_UNIT),
        workers=workers,
        api_faults=tuple(_api_fault(t) for t in faults.tables("api")),
        api_delay=faults.number("api_delay", 0.0, low=0, high=MAX_DELAY_S, unit=" seconds"),
        tail=_tail_faults(faults.table("tail")),
        resources=_resources(top.table("resources")),
    )
    for table in (traffic, faults, workers_table, top):
        table.finish()
    return scenario


def _worker(table: Table, name: str) -> WorkerSpec:
    routes = tuple(_route(t) for t in table.tables("routes")) or DEFAULT_ROUTES
    behaviour = _behaviour(table.table("behaviour"), Behaviour())
    versions_table = table.table("versions")
    versions: dict[int, Behaviour] = {}
    for key in versions_table.data:
        if not (key.isascii() and key.isdigit()) or int(key) < 1 or str(int(key)) != key:
            raise versions_table.fail(key, "version keys are ordinals: 1 for the first uploaded, 2, ...")
        versions[int(key)] = _behaviour(versions_table.table(key), behaviour)
    spec = WorkerSpec(
        name=name,
        preseed=table.flag("preseed", True),
        routes=routes,
        behaviour=behaviour,
        versions=versions,
        traffic_rate=table.number("traffic_rate", None, low=0, high=MAX_TRAFFIC_RATE, unit=_RATE_UNIT),
        bindings=_bindings(table),
        migration_tag=table.text("migration_tag", None),
        durable_objects=_durable_objects(table.table("durable_objects")) if "durable_objects" in table.data else None,
    )
    versions_table.finish()
    table.finish()
    return spec


#: binding fields the simulator reads (when present they are strings); the rest is passed through as given
_BINDING_TEXT = ("name", "type", "class_name", "script_name", "queue_name", "namespace_id", "service",
                 "bucket_name", "id")


def _bindings(table: Table) -> tuple[dict[str, Any], ...]:
    """Version 1's bindings, in Cloudflare's metadata format (other fields are kept as they are)."""
    out = []
    for t in table.tables("bindings"):
        kind = t.choice("type", SUPPORTED_BINDINGS)
        t.text("name")
        if kind == "durable_object_namespace":
            t.text("class_name")
        for key in _BINDING_TEXT:
            t.text(key, None)
        out.append(dict(t.data))
    return tuple(out)


def _durable_objects(t: Table) -> DurableObjects:
    instances = t.integer("instances", low=0, high=MAX_DO_INSTANCES)
    wave_s = t.number("wave_s", 30.0, above=0, high=MAX_SIM_SECONDS, unit=_SIM_UNIT)
    reset_logs = _logs(t, "reset_logs")
    for i, line in enumerate(reset_logs):
        if line.per_hour is not None:
            raise t.fail(f"reset_logs[{i}].per_hour", "a reset log is written once per restarted instance "
                         "(use probability to write it for only some of them)")
    spec = DurableObjects(instances=instances, wave_s=wave_s, reset_logs=reset_logs or DEFAULT_RESET_LOGS)
    t.finish()
    return spec


def _status(t: Table, key: str, default: int) -> int:
    status: int = t.integer(key, default, low=200, high=599, unit=" (an HTTP status; 1xx are not final responses)")
    return status


def _empty_body(t: Table, status: int, body: str, status_key: str, body_key: str) -> None:
    """A 204 or 304 response has no body (the HTTP server would drop the connection)."""
    if status in _NO_BODY and body:
        key = body_key if body_key in t.data or status_key not in t.data else status_key
        raise t.fail(key, f"a {status} response has no body: give {body_key} = \"\" or another status")


def _route(t: Table) -> Route:
    path = t.text("path")
    if not path.startswith("/"):
        raise t.fail("path", f"must start with /, got {path!r}")
    method = t.text("method", "GET").upper()
    if method not in HTTP_METHODS:
        raise t.fail("method", f"must be one of {', '.join(HTTP_METHODS)}, got {method!r}")
    example = t.text("example", "")
    if example and not example.startswith("/"):
        raise t.fail("example", f"must start with /, got {example!r}")
    route = Route(
        path=path, method=method, status=_status(t, "status", 200),
        body=t.text("body", ""), content_type=_header_value(t, "content_type", "text/plain; charset=utf-8"),
        headers=_headers(t.table("headers")),
        weight=t.number("weight", 0.0, low=0, high=MAX_WEIGHT), example=example,
    )
    _empty_body(t, route.status, route.body, "status", "body")
    t.finish()
    return route


def _header_value(t: Table, key: str, default: str) -> str:
    value: str = t.text(key, default)
    if not _HEADER_VALUE.fullmatch(value):
        raise t.fail(key, f"not a valid HTTP header value (printable ASCII, no leading or trailing space), "
                          f"got {value!r}")
    return value


def _headers(t: Table) -> dict[str, str]:
    out = {}
    for name in t.data:
        if not _HEADER_NAME.fullmatch(name):
            raise t.fail(name, "not a valid HTTP header name")
        if name.lower() in ("content-length", "transfer-encoding"):
            raise t.fail(name, "the simulator sets this header itself")
        if name.lower() == "content-type":
            raise t.fail(name, "give the route's content_type instead")
        out[name] = _header_value(t, name, "")
    t.finish()
    return out


def _logs(t: Table, key: str) -> tuple[LogLine, ...]:
    out = []
    for line in t.tables(key):
        out.append(LogLine(
            message=line.text("message"), level=line.choice("level", LOG_LEVELS, "log"),
            per_hour=line.number("per_hour", None, low=0, high=MAX_LOGS_PER_HOUR, unit=" lines per hour"),
            probability=line.number("probability", None, low=0, high=1),
        ))
        if "per_hour" in line.data and "probability" in line.data:
            raise line.fail("probability", "give per_hour (a rate in simulated time) or probability (per "
                                           "request), not both")
        line.finish()
    return tuple(out)


def _behaviour(t: Table, base: Behaviour) -> Behaviour:
    given = {k for k in t.data if k in _BEHAVIOUR_KEYS}
    b = replace(
        base,
        error_rate=t.number("error_rate", base.error_rate, low=0, high=1),
        error_status=_status(t, "error_status", base.error_status),
        error_body=t.text("error_body", base.error_body),
        error_log=t.text("error_log", base.error_log),
        exception_rate=t.number("exception_rate", base.exception_rate, low=0, high=1),
        exception_name=t.text("exception_name", base.exception_name),
        exception_message=t.text("exception_message", base.exception_message),
        onset_after=t.number("onset_after", base.onset_after, low=0, high=MAX_SIM_SECONDS, unit=_SIM_UNIT),
        latency_ms=t.number("latency_ms", base.latency_ms, low=0, high=MAX_DELAY_S * 1000, unit=" ms"),
        cpu_ms=t.number("cpu_ms", base.cpu_ms, low=0, high=MAX_DELAY_S * 1000, unit=" ms"),
        logs=base.logs + _logs(t, "logs"),
        fault_logs=_logs(t, "fault_logs") or base.fault_logs,
    )
    _empty_body(t, b.error_status, b.error_body, "error_status", "error_body")
    derived = b.error_rate > 0 or b.exception_rate > 0 or bool(b.fault_logs)
    b = replace(b, fault=t.flag("fault", derived if given else base.fault))
    t.finish()
    return b


def _api_fault(t: Table) -> ApiFault:
    fail = t.flag("fail", "status" in t.data or "code" in t.data or "delay" not in t.data)
    call = t.text("call")
    problem = unknown_call(call)
    if problem is not None:
        raise t.fail("call", problem)
    status = _status(t, "status", 500)
    if status in _NO_BODY:
        raise t.fail("status", f"a failed call answers with an error body, which a {status} response cannot have")
    fault = ApiFault(
        call=call, status=status, code=t.integer("code", 10013, low=1, high=2**31 - 1),
        message=t.text("message", "An unknown error has occurred"), skip=t.integer("skip", 0, low=0),
        times=t.integer("times", 1, low=0, unit=" (0: every matching call from then on)"),
        delay=t.number("delay", 0.0, low=0, high=MAX_DELAY_S, unit=" seconds"), fail=fail,
    )
    t.finish()
    return fault


def _tail_faults(t: Table) -> TailFaults:
    close_code = t.integer("close_code", 1011)
    if not _sendable_close_code(close_code):
        raise t.fail("close_code", "must be a WebSocket close code that can be sent: 1000-1003, 1007-1014 or "
                                   f"3000-4999 (1004-1006 and 1015 are reserved), got {close_code}")
    faults = TailFaults(
        drop_every=t.number("drop_every", None, low=0.1, high=MAX_SIM_SECONDS, unit=_SIM_UNIT),
        drop_mode=t.choice("drop_mode", ("close", "tcp"), "close"),
        close_code=close_code,
        expire_after=t.number("expire_after", 3600.0, low=0, high=MAX_SIM_SECONDS, unit=_SIM_UNIT),
        sampling_after=t.number("sampling_after", None, low=0, high=MAX_SIM_SECONDS, unit=_SIM_UNIT),
        sampling_for=t.number("sampling_for", 10.0, low=0, high=MAX_SIM_SECONDS, unit=_SIM_UNIT),
        sampling_keep=t.number("sampling_keep", 0.1, low=0, high=1),
    )
    t.finish()
    return faults


def _sendable_close_code(code: int) -> bool:
    """RFC 6455 section 7.4: what a server may put in a close frame, and what wrangler's ``ws`` accepts."""
    return (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999


def _named(t: Table, key: str, name_key: str) -> tuple[tuple[str, str | None], ...]:
    out = []
    for item in t.tables(key):
        out.append((item.text(name_key), item.text("id", None)))
        item.finish()
    return tuple(out)


_RESOURCE_KINDS = ("r2", "d1", "kv", "queue", "worker")


def _resources(t: Table) -> Resources:
    missing = t.strings("missing")
    for i, item in enumerate(missing):
        kind, colon, name = item.partition(":")
        if not colon or kind not in _RESOURCE_KINDS or not name:
            raise t.fail(f"missing[{i}]", f"must be KIND:NAME with KIND one of {', '.join(_RESOURCE_KINDS)}, "
                                          f"got {item!r}")
    resources = Resources(
        d1=_named(t, "d1", "name"), r2=t.strings("r2"), kv=_named(t, "kv", "title"),
        queues=t.strings("queues"), missing=missing,
    )
    t.finish()
    return resources
