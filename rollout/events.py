"""Tail events: the typed value a trace item from ``wrangler tail --format json`` becomes.

A trace item (WRANGLER.md §4) carries far more than a monitor needs: request headers, the ``cf`` object,
diagnostics channels.  :func:`parse_event` decodes only the fields rollout reads, with msgspec structs that
skip everything else without building Python objects for it, and returns a frozen :class:`TailEvent`.

What counts as a failure (WRANGLER.md §4, "For a monitor"):

* ``outcome`` in :data:`NON_FAILURE_OUTCOMES` (``ok``, and the client disconnects ``canceled`` and
  ``responseStreamDisconnected``) is not a failure by itself;
* every other outcome is a failure: the ones listed in :data:`FAILURE_OUTCOMES` and any string the runtime
  may add later (an outcome we do not know is not evidence of health);
* an HTTP status >= 500 is a failure whatever the outcome, because a 5xx response arrives with
  ``outcome: "ok"``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from rollout.errors import RolloutError

__all__ = [
    "FAILURE_OUTCOMES",
    "KINDS",
    "NON_FAILURE_OUTCOMES",
    "EventParseError",
    "TailEvent",
    "event_from_wire",
    "parse_event",
]

#: Outcomes the runtime reports for an invocation that failed (workerd ``outcome.capnp``; ``kilSwitch`` is
#: how the streaming-tail code spells ``killSwitch``).  Informational: :attr:`TailEvent.is_error` treats
#: every outcome outside :data:`NON_FAILURE_OUTCOMES` as a failure, so an unknown new outcome counts too.
FAILURE_OUTCOMES: Final = frozenset({
    "exception", "exceededCpu", "exceededMemory", "scriptNotFound", "killSwitch", "kilSwitch",
    "daemonDown", "loadShed", "unknown",
})

#: Outcomes that are not failures: success, and the two that are usually the client going away.
NON_FAILURE_OUTCOMES: Final = frozenset({"ok", "canceled", "responseStreamDisconnected"})

#: Every value :attr:`TailEvent.kind` can take.
KINDS: Final = ("fetch", "scheduled", "alarm", "queue", "email", "rpc", "tail", "overload", "overload-stop",
                "other")


class EventParseError(RolloutError):
    """A tail line could not be read as a trace item (not JSON, not an object, or a field of the wrong type).

    Attributes:
        raw: the first 200 characters of the offending input.
    """

    def __init__(self, message: str, raw: str = "") -> None:
        super().__init__(message)
        self.raw = raw


class TailEvent(msgspec.Struct, frozen=True, gc=False):
    """One trace item, reduced to what the monitor reads.

    Attributes:
        timestamp_ms: ``eventTimestamp`` in ms since the epoch; 0 when the runtime sent null.
        worker: ``scriptName`` (null for sampling notices).
        version: ``scriptVersion.id``, or None when absent.
        outcome: the runtime's outcome string (``ok``, ``exception``, ...).
        status: ``event.response.status`` for fetch events that produced a response.
        kind: the trigger type (one of :data:`KINDS`), told apart as wrangler does, by the keys of ``event``.
        logs: one string per ``console.*`` call: string arguments joined by spaces, other values as JSON.
        exceptions: ``(name, message)`` pairs.
        method: the HTTP method of a fetch event.
        path: the URL path of a fetch event, without scheme, host, query or fragment.
        wall_time_ms: ``wallTime`` in ms, when present.
        truncated: the runtime cut logs or exceptions because the trace passed its size cap.
    """

    timestamp_ms: int
    worker: str | None
    version: str | None
    outcome: str
    status: int | None = None
    kind: str = "fetch"
    logs: tuple[str, ...] = ()
    exceptions: tuple[tuple[str, str], ...] = ()
    method: str | None = None
    path: str | None = None
    wall_time_ms: int | None = None
    truncated: bool = False

    @property
    def is_error(self) -> bool:
        """True when the outcome is a failure or the response status is 5xx (see the module docstring)."""
        status = self.status
        return self.outcome not in NON_FAILURE_OUTCOMES or (status is not None and status >= 500)


# --- wire shapes: only the fields we read; msgspec skips the rest (headers, cf, diagnostics, ...) --------

_UNSET: Any = msgspec.UNSET


class _Version(msgspec.Struct, gc=False):
    id: str | None = None


class _Request(msgspec.Struct, gc=False):
    url: str = ""
    method: str | None = None


class _Response(msgspec.Struct, gc=False):
    status: int | None = None


class _Event(msgspec.Struct, gc=False):
    request: _Request | None = None
    response: _Response | None = None
    # Presence tests only (wrangler tells the trigger type apart by which keys exist).
    cron: Any = _UNSET
    scheduledTime: Any = _UNSET
    mailFrom: Any = _UNSET
    queue: Any = _UNSET
    rpcMethod: Any = _UNSET
    consumedEvents: Any = _UNSET
    type: Any = _UNSET
    message: Any = _UNSET


class _Log(msgspec.Struct, gc=False):
    message: Any = ()


class _Exception(msgspec.Struct, gc=False):
    name: str = ""
    message: str = ""


class _Wire(msgspec.Struct, gc=False):
    outcome: str
    eventTimestamp: int | float | None = None
    scriptName: str | None = None
    scriptVersion: _Version | None = None
    event: _Event | None = None
    logs: list[_Log] = []
    exceptions: list[_Exception] = []
    wallTime: int | float | None = None
    truncated: bool | None = False


_wire_decoder: Final = msgspec.json.Decoder(_Wire)
_encode: Final = msgspec.json.encode


def _render_log(message: Any) -> str:
    """``console.log("a", {"b": 1})`` arrives as ``["a", {"b": 1}]`` and renders as ``a {"b":1}``."""
    if type(message) is list:
        if len(message) == 1:
            message = message[0]
        else:
            return " ".join([v if type(v) is str else _encode(v).decode() for v in message])
    return message if type(message) is str else _encode(message).decode()


def _url_path(url: str) -> str:
    """The path of an absolute or relative URL, without query or fragment (``/`` when empty)."""
    if url.startswith("https://"):
        cut = url.find("/", 8)
    elif url.startswith("http://"):
        cut = url.find("/", 7)
    elif "://" in url:
        cut = url.find("/", url.find("://") + 3)
    else:
        cut = 0
    if cut < 0:
        return "/"
    path = url[cut:].partition("?")[0]
    if "#" in path:
        path = path.partition("#")[0]
    return path or "/"


def _kind(ev: _Event) -> str:
    # The order is wrangler's (cli.js:245313-245336).
    if ev.request is not None:
        return "fetch"
    if ev.cron is not _UNSET:
        return "scheduled"
    if ev.scheduledTime is not _UNSET:
        return "alarm"
    if ev.mailFrom is not _UNSET:
        return "email"
    if ev.queue is not _UNSET:
        return "queue"
    if ev.rpcMethod is not _UNSET:
        return "rpc"
    if ev.consumedEvents is not _UNSET:
        return "tail"
    if ev.message is not _UNSET and ev.type in ("overload", "overload-stop"):
        return str(ev.type)
    return "other"


def event_from_wire(w: _Wire) -> TailEvent:
    """Reduce a decoded wire struct to a :class:`TailEvent` (internal).

    The plain version of what :func:`events_from_wires` does per struct (the tests hold the two equal).
    """
    ev = w.event
    status = method = path = None
    if ev is None:
        kind = "other"
    elif (req := ev.request) is not None:
        kind = "fetch"
        method = req.method
        path = _url_path(req.url)
        if (resp := ev.response) is not None:
            status = resp.status
    else:
        kind = _kind(ev)
    sv = w.scriptVersion
    ts = w.eventTimestamp
    wall = w.wallTime
    logs = w.logs
    excs = w.exceptions
    return TailEvent(
        0 if ts is None else int(ts),
        w.scriptName,
        None if sv is None else sv.id,
        w.outcome,
        status,
        kind,
        tuple([_render_log(x.message) for x in logs]) if logs else (),
        tuple([(x.name, x.message) for x in excs]) if excs else (),
        method,
        path,
        None if wall is None else int(wall),
        bool(w.truncated),
    )


def events_from_wires(wires: list[_Wire]) -> list[TailEvent]:
    """Reduce decoded wire structs to :class:`TailEvent` values, in order (internal; the decoder's hot path).

    One loop over a whole chunk's worth of structs, with the common cases inlined (an ``https://`` URL, a
    log line that is one string, integer times): the same values as :func:`_url_path`, :func:`_render_log`
    and ``int()`` give, for a fraction of the calls.
    """
    out: list[TailEvent] = []
    append = out.append
    new = TailEvent
    render = _render_log
    for w in wires:
        ev = w.event
        status = method = path = None
        if ev is None:
            kind = "other"
        elif (req := ev.request) is not None:
            kind = "fetch"
            method = req.method
            url = req.url
            if url.startswith("https://") and (cut := url.find("/", 8)) >= 0:
                query = url.find("?", cut)
                path = url[cut:query] if query >= 0 else url[cut:]
                if "#" in path:
                    path = path.partition("#")[0]
            else:
                path = _url_path(url)
            if (resp := ev.response) is not None:
                status = resp.status
        else:
            kind = _kind(ev)
        logs: tuple[str, ...] = ()
        if wlogs := w.logs:
            lines = []
            for x in wlogs:
                m = x.message
                if type(m) is list and len(m) == 1 and type(m0 := m[0]) is str:
                    lines.append(m0)
                else:
                    lines.append(render(m))
            logs = tuple(lines)
        excs = w.exceptions
        sv = w.scriptVersion
        ts = w.eventTimestamp
        wall = w.wallTime
        append(new(
            ts if type(ts) is int else 0 if ts is None else int(ts),
            w.scriptName,
            None if sv is None else sv.id,
            w.outcome,
            status,
            kind,
            logs,
            tuple([(x.name, x.message) for x in excs]) if excs else (),
            method,
            path,
            wall if type(wall) is int else None if wall is None else int(wall),
            w.truncated is True,
        ))
    return out


def _error(exc: Exception, raw: bytes | str) -> EventParseError:
    text = raw if isinstance(raw, str) else raw[:400].decode("utf-8", "replace")
    return EventParseError(f"not a tail event: {exc}", text[:200])


def parse_event(raw: bytes | str) -> TailEvent:
    """Decode one trace item (pretty-printed or compact JSON).

    Tolerates ``event: null``, ``eventTimestamp: null``, a missing ``scriptVersion`` and unknown fields.

    Raises:
        EventParseError: the input is not JSON, not an object, lacks ``outcome``, or has a field of the
            wrong type.
    """
    try:
        return event_from_wire(_wire_decoder.decode(raw))
    except (msgspec.DecodeError, ValueError, OverflowError) as exc:
        raise _error(exc, raw) from None

