"""Scenarios: what the simulated workers do, and which faults the simulated Cloudflare injects.

A scenario is a TOML file: a shipped one by name (``rollout/sim/scenarios/<name>.toml``) or a path.
``base = "<name or path>"`` loads another scenario first and deep-merges this one over it.  The
format is documented in the README (section "The local Cloudflare simulator").
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from rollout.errors import ScenarioError
from rollout.sim._fields import Table

#: The workers the shipped scenarios pre-seed (version 1 deployed at 100%).
EXAMPLE_WORKERS = ("cf-ssai", "cf-ssai-decision", "cf-ssai-beacon", "cf-ssai-vast-parser")

LOG_LEVELS = ("debug", "info", "log", "warn", "error")


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


def _read(ref: str, trail: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    path = Path(ref)
    if ref.endswith(".toml") or path.exists() or "/" in ref:
        source = str(path)
        if not path.is_file():
            raise ScenarioError(f"{ref}: no such scenario file")
        text = path.read_text(encoding="utf-8")
        base_dir = path.parent
    else:
        res = resources.files("rollout.sim") / "scenarios" / f"{ref}.toml"
        if not res.is_file():
            raise ScenarioError(
                f"{ref}: no such shipped scenario; shipped: {', '.join(shipped_scenarios())} (or give a path)"
            )
        source, text, base_dir = f"{ref} (shipped)", res.read_text(encoding="utf-8"), None
    if source in trail:
        raise ScenarioError(f"{source}: field base: scenarios include each other ({' -> '.join(trail)})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from exc
    base = data.pop("base", None)
    if base is None:
        return data, source
    if not isinstance(base, str):
        raise ScenarioError(f"{source}: field base: expected a scenario name or path, got {base!r}")
    if base_dir is not None and (base.endswith(".toml") or "/" in base):
        base = str(base_dir / base)
    parent, _ = _read(base, (*trail, source))
    return _merge(parent, data), source


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
    data, source = _read(str(ref), ())
    return _parse(Table(data, source), default_name=Path(str(ref)).stem)


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
        traffic_rate=traffic.number("rate", 20.0, low=0),
        workers=workers,
        api_faults=tuple(_api_fault(t) for t in faults.tables("api")),
        api_delay=faults.number("api_delay", 0.0, low=0),
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
        if not key.isdigit() or int(key) < 1:
            raise versions_table.fail(key, "version keys are ordinals: 1 for the first uploaded, 2, ...")
        versions[int(key)] = _behaviour(versions_table.table(key), behaviour)
    bindings = table._get("bindings", (list,), "an array of binding tables", [])
    spec = WorkerSpec(
        name=name,
        preseed=table.flag("preseed", True),
        routes=routes,
        behaviour=behaviour,
        versions=versions,
        traffic_rate=table.number("traffic_rate", None, low=0),
        bindings=tuple(b for b in bindings if isinstance(b, dict)),
        migration_tag=table.text("migration_tag", None),
        durable_objects=_durable_objects(table.table("durable_objects")) if "durable_objects" in table.data else None,
    )
    versions_table.finish()
    table.finish()
    return spec


def _durable_objects(t: Table) -> DurableObjects:
    instances = t.integer("instances")
    if instances < 0:
        raise t.fail("instances", f"must be >= 0, got {instances}")
    wave_s = t.number("wave_s", 30.0, low=0)
    if wave_s <= 0:
        raise t.fail("wave_s", "must be > 0 seconds")
    reset_logs = _logs(t, "reset_logs")
    for i, line in enumerate(reset_logs):
        if line.per_hour is not None:
            raise t.fail(f"reset_logs[{i}].per_hour", "a reset log is written once per restarted instance "
                         "(use probability to write it for only some of them)")
    spec = DurableObjects(instances=instances, wave_s=wave_s, reset_logs=reset_logs or DEFAULT_RESET_LOGS)
    t.finish()
    return spec


def _route(t: Table) -> Route:
    path = t.text("path")
    if not path.startswith("/"):
        raise t.fail("path", f"must start with /, got {path!r}")
    route = Route(
        path=path, method=t.text("method", "GET").upper(), status=t.integer("status", 200),
        body=t.text("body", ""), content_type=t.text("content_type", "text/plain; charset=utf-8"),
        headers=t.text_map("headers"), weight=t.number("weight", 0.0, low=0), example=t.text("example", ""),
    )
    t.finish()
    return route


def _logs(t: Table, key: str) -> tuple[LogLine, ...]:
    out = []
    for line in t.tables(key):
        out.append(LogLine(
            message=line.text("message"), level=line.choice("level", LOG_LEVELS, "log"),
            per_hour=line.number("per_hour", None, low=0),
            probability=line.number("probability", None, low=0, high=1),
        ))
        line.finish()
    return tuple(out)


def _behaviour(t: Table, base: Behaviour) -> Behaviour:
    given = {k for k in t.data if k in _BEHAVIOUR_KEYS}
    b = replace(
        base,
        error_rate=t.number("error_rate", base.error_rate, low=0, high=1),
        error_status=t.integer("error_status", base.error_status),
        error_body=t.text("error_body", base.error_body),
        error_log=t.text("error_log", base.error_log),
        exception_rate=t.number("exception_rate", base.exception_rate, low=0, high=1),
        exception_name=t.text("exception_name", base.exception_name),
        exception_message=t.text("exception_message", base.exception_message),
        onset_after=t.number("onset_after", base.onset_after, low=0),
        latency_ms=t.number("latency_ms", base.latency_ms, low=0),
        cpu_ms=t.number("cpu_ms", base.cpu_ms, low=0),
        logs=base.logs + _logs(t, "logs"),
        fault_logs=_logs(t, "fault_logs") or base.fault_logs,
    )
    derived = b.error_rate > 0 or b.exception_rate > 0 or bool(b.fault_logs)
    b = replace(b, fault=t.flag("fault", derived if given else base.fault))
    t.finish()
    return b


def _api_fault(t: Table) -> ApiFault:
    fail = t.flag("fail", "status" in t.data or "code" in t.data or "delay" not in t.data)
    fault = ApiFault(
        call=t.text("call"), status=t.integer("status", 500), code=t.integer("code", 10013),
        message=t.text("message", "An unknown error has occurred"), skip=t.integer("skip", 0),
        times=t.integer("times", 1), delay=t.number("delay", 0.0, low=0), fail=fail,
    )
    t.finish()
    return fault


def _tail_faults(t: Table) -> TailFaults:
    faults = TailFaults(
        drop_every=t.number("drop_every", None, low=0.1),
        drop_mode=t.choice("drop_mode", ("close", "tcp"), "close"),
        close_code=t.integer("close_code", 1011),
        expire_after=t.number("expire_after", 3600.0, low=0),
        sampling_after=t.number("sampling_after", None, low=0),
        sampling_for=t.number("sampling_for", 10.0, low=0),
        sampling_keep=t.number("sampling_keep", 0.1, low=0, high=1),
    )
    t.finish()
    return faults


def _named(t: Table, key: str, name_key: str) -> tuple[tuple[str, str | None], ...]:
    out = []
    for item in t.tables(key):
        out.append((item.text(name_key), item.text("id", None)))
        item.finish()
    return tuple(out)


def _strings(t: Table, key: str) -> tuple[str, ...]:
    value = t._get(key, (list,), "an array of strings", [])
    if not all(isinstance(v, str) for v in value):
        raise t.fail(key, f"expected an array of strings, got {value!r}")
    return tuple(value)


def _resources(t: Table) -> Resources:
    resources = Resources(
        d1=_named(t, "d1", "name"), r2=_strings(t, "r2"), kv=_named(t, "kv", "title"),
        queues=_strings(t, "queues"), missing=_strings(t, "missing"),
    )
    t.finish()
    return resources
