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

Reading is lenient, so that one odd field never hides a request from the guards.  The fast path decodes
into typed structs; an object they refuse is decoded again as plain JSON by :func:`decode_event`, and every
field is read as far as it can be: a field of an unexpected type keeps the event and is reported as a
*warning* (``exceptions[0].message`` that is an object becomes its JSON text, a status ``"500"`` is read as
500, a ``scriptVersion`` that is not an object gives no version, an ``outcome`` that is missing or not a str
is ``exception`` when the event has exceptions, ``ok`` when it has a response status and ``unknown``, a
failure, otherwise).  Only input that is not a trace item at all is an error: not JSON, not an object, an
object with none of ``outcome`` (a str), ``eventTimestamp`` and ``event``, or nested deeper than the decoder's
recursion allows.  Ids and exception names are cut at :data:`MAX_ID_CHARS` characters (a warning too).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

import msgspec

from rollout.errors import RolloutError

__all__ = [
    "FAILURE_OUTCOMES",
    "KINDS",
    "NON_FAILURE_OUTCOMES",
    "MAX_ID_CHARS",
    "EventParseError",
    "TailEvent",
    "decode_event",
    "decode_event_as_json",
    "event_from_json",
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

#: The longest ``scriptVersion.id``, ``scriptName`` or exception name kept; longer ones are cut (a warning).
MAX_ID_CHARS: Final = 256

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
_Id = Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]


class _Version(msgspec.Struct, gc=False):
    id: _Id | None = None


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
    name: _Id = ""
    message: str = ""


class _Wire(msgspec.Struct, gc=False):
    outcome: str
    eventTimestamp: int | float | None = None
    scriptName: _Id | None = None
    scriptVersion: _Version | None = None
    event: _Event | None = None
    logs: list[_Log] = []
    exceptions: list[_Exception] = []
    wallTime: int | float | None = None
    truncated: bool | None = False


_wire_decoder: Final = msgspec.json.Decoder(_Wire)
_any_decoder: Final = msgspec.json.Decoder()
_encode: Final = msgspec.json.encode

#: What the decoders raise for input they cannot read (RecursionError: nested deeper than they recurse).
DECODE_ERRORS: Final = (msgspec.DecodeError, ValueError, OverflowError, RecursionError)
#: The text a value too deeply nested to be written back as JSON is rendered as.
TOO_DEEP: Final = "<value nested too deeply>"


def _render_log(message: Any) -> str:
    """``console.log("a", {"b": 1})`` arrives as ``["a", {"b": 1}]`` and renders as ``a {"b":1}``."""
    if type(message) is list:
        if len(message) == 1:
            message = message[0]
        else:
            return " ".join([v if type(v) is str else _encode(v).decode() for v in message])
    return message if type(message) is str else _encode(message).decode()


def _json_text(value: Any) -> str:
    """``value`` as JSON text (a str as itself), :data:`TOO_DEEP` when it cannot be written back."""
    if type(value) is str:
        return value
    try:
        return _encode(value).decode()
    except (RecursionError, TypeError, ValueError, OverflowError):
        return TOO_DEEP


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


def _what(value: Any) -> str:
    """How a JSON value is named in a warning: ``an object``, ``the str '200'``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the bool {'true' if value else 'false'}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return f"the {type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _cut(value: str, field: str, bad: list[str]) -> str:
    if len(value) > MAX_ID_CHARS:
        bad.append(f"{field} longer than {MAX_ID_CHARS} characters, cut")
        return value[:MAX_ID_CHARS]
    return value


def _opt_str(item: dict[str, Any], key: str, field: str, bad: list[str], *, cut: bool = False) -> str | None:
    value = item.get(key)
    if value is None or type(value) is str:
        return _cut(value, field, bad) if cut and value is not None else value
    bad.append(f"{field} is {_what(value)}, not a str")
    return None


def _number(value: Any) -> int | None:
    """An int from a JSON number (None for anything else, or a number no int can hold)."""
    if type(value) is int:
        return value
    if type(value) is float:
        try:
            return int(value)
        except (OverflowError, ValueError):
            return None
    return None


def _status(value: Any, bad: list[str]) -> int | None:
    if value is None or type(value) is int:
        return value
    number = _number(value) if type(value) is float and value.is_integer() else None
    if number is None and type(value) is str and value.strip().isdigit() and len(value) <= 6:
        number = int(value)
    bad.append(f"event.response.status is {_what(value)}" + (f", read as {number}" if number is not None else ""))
    return number


def _loose_kind(ev: dict[str, Any]) -> str:
    # _kind, on a plain dict: the order is wrangler's (cli.js:245313-245336).
    if ev.get("request") is not None:
        return "fetch"
    for key, kind in (("cron", "scheduled"), ("scheduledTime", "alarm"), ("mailFrom", "email"),
                      ("queue", "queue"), ("rpcMethod", "rpc"), ("consumedEvents", "tail")):
        if key in ev:
            return kind
    notice = ev.get("type")
    if "message" in ev and notice in ("overload", "overload-stop"):
        return str(notice)
    return "other"


def _loose_logs(value: Any, bad: list[str]) -> tuple[str, ...]:
    if value is None or value == []:
        if value is None:
            bad.append("logs is null, not an array")
        return ()
    if type(value) is not list:
        bad.append(f"logs is {_what(value)}, not an array")
        return ()
    lines = []
    for i, item in enumerate(value):
        if type(item) is dict:
            message = item.get("message", ())
            try:
                lines.append(_render_log(message))
            except (RecursionError, TypeError, ValueError, OverflowError):
                bad.append(f"logs[{i}].message nested too deeply to be written back")
                lines.append(TOO_DEEP)
        else:
            bad.append(f"logs[{i}] is {_what(item)}, not an object: read as the message")
            lines.append(_json_text(item))
    return tuple(lines)


def _loose_exceptions(value: Any, bad: list[str]) -> tuple[tuple[str, str], ...]:
    if value is None or value == []:
        if value is None:
            bad.append("exceptions is null, not an array")
        return ()
    if type(value) is not list:
        bad.append(f"exceptions is {_what(value)}, not an array")
        return ()
    out = []
    for i, item in enumerate(value):
        if type(item) is not dict:
            bad.append(f"exceptions[{i}] is {_what(item)}, not an object: read as the message")
            out.append(("", _json_text(item)))
            continue
        name = item.get("name", "")
        if type(name) is not str:
            bad.append(f"exceptions[{i}].name is {_what(name)}, not a str: read as JSON")
            name = "" if name is None else _json_text(name)
        message = item.get("message", "")
        if type(message) is not str:
            bad.append(f"exceptions[{i}].message is {_what(message)}, not a str: read as JSON")
            message = "" if message is None else _json_text(message)
        out.append((_cut(name, f"exceptions[{i}].name", bad), message))
    return tuple(out)


def _loose_fetch(req: Any, resp: Any, bad: list[str]) -> tuple[str | None, str | None, int | None]:
    """Method, path and status of a fetch event."""
    method = path = status = None
    if type(req) is dict:
        method = _opt_str(req, "method", "event.request.method", bad)
        url = req.get("url", "")
        if type(url) is str:
            path = _url_path(url)
        else:
            bad.append(f"event.request.url is {_what(url)}, not a str")
    else:
        bad.append(f"event.request is {_what(req)}, not an object")
    if type(resp) is dict:
        status = _status(resp.get("status"), bad)
    elif resp is not None:
        bad.append(f"event.response is {_what(resp)}, not an object")
    return method, path, status


def event_from_json(obj: Any) -> tuple[TailEvent, tuple[str, ...]]:
    """A trace item decoded as plain JSON, read field by field: the event, and what was odd in it.

    For an object the typed decoder accepts, the event is the one it gives (and nothing is odd).

    Raises:
        ValueError: ``obj`` is not a trace item (not an object, or none of a str ``outcome``,
            ``eventTimestamp`` and ``event``).
    """
    if type(obj) is not dict:
        raise ValueError(f"expected a JSON object, got {_what(obj)}")
    outcome = obj.get("outcome")
    if type(outcome) is not str and "eventTimestamp" not in obj and "event" not in obj:
        raise ValueError("an object with no outcome (a str), eventTimestamp or event" if outcome is None else
                         f"outcome is {_what(outcome)}, and there is no eventTimestamp or event")
    bad: list[str] = []
    kind, method, path, status = "other", None, None, None
    ev = obj.get("event")
    if type(ev) is dict:
        kind = _loose_kind(ev)
        if kind == "fetch":
            method, path, status = _loose_fetch(ev.get("request"), ev.get("response"), bad)
        elif type(resp := ev.get("response")) is dict:  # not read without a request, but still reported
            _status(resp.get("status"), bad)
    elif ev is not None:
        bad.append(f"event is {_what(ev)}, not an object")
    exceptions = _loose_exceptions(obj.get("exceptions", []), bad)
    if type(outcome) is not str:
        guess = "exception" if exceptions else "ok" if status is not None else "unknown"
        bad.append(f"outcome is {'missing' if 'outcome' not in obj else _what(outcome)}: read as {guess!r}")
        outcome = guess
    ts = obj.get("eventTimestamp")
    timestamp = 0 if ts is None else _number(ts)
    if timestamp is None:
        bad.append(f"eventTimestamp is {_what(ts)}, not a time in ms: read as null")
        timestamp = 0
    wall = obj.get("wallTime")
    wall_ms = None if wall is None else _number(wall)
    if wall is not None and wall_ms is None:
        bad.append(f"wallTime is {_what(wall)}, not a number")
    version: str | None = None
    sv = obj.get("scriptVersion")
    if type(sv) is dict:
        version = _opt_str(sv, "id", "scriptVersion.id", bad, cut=True)
    elif sv is not None:
        bad.append(f"scriptVersion is {_what(sv)}, not an object: no version")
    truncated = obj.get("truncated", False)
    if truncated is not None and type(truncated) is not bool:
        bad.append(f"truncated is {_what(truncated)}, not a bool")
    event = TailEvent(
        timestamp, _opt_str(obj, "scriptName", "scriptName", bad, cut=True), version, outcome, status, kind,
        _loose_logs(obj.get("logs", []), bad), exceptions, method, path, wall_ms, truncated is True,
    )
    return event, tuple(bad)


def decode_event(raw: bytes | str | memoryview) -> tuple[TailEvent, tuple[str, ...]]:
    """Decode one trace item, leniently: the event and what was odd in it (empty for a well-formed item).

    The typed fast decoder first; when it refuses the object, the object as plain JSON, field by field
    (:func:`event_from_json`).

    Raises:
        EventParseError: the input is not a trace item: not JSON, not an object, none of a str ``outcome``,
            ``eventTimestamp`` and ``event``, or nested deeper than the decoder recurses.
    """
    try:
        return event_from_wire(_wire_decoder.decode(raw)), ()
    except DECODE_ERRORS:
        return decode_event_as_json(raw)


def decode_event_as_json(raw: bytes | str | memoryview) -> tuple[TailEvent, tuple[str, ...]]:
    """The lenient half of :func:`decode_event`: the object as plain JSON, read field by field.

    Raises:
        EventParseError: as :func:`decode_event`.
    """
    try:
        try:
            obj = _any_decoder.decode(raw)
        except msgspec.ValidationError:  # a number out of range (1e400): the standard library reads it
            obj = json.loads(bytes(raw) if isinstance(raw, memoryview) else raw)
        return event_from_json(obj)
    except RecursionError:
        raise _error(ValueError("nested deeper than the decoder recurses"), raw) from None
    except (msgspec.DecodeError, ValueError, OverflowError) as exc:
        raise _error(exc, raw) from None


def _error(exc: Exception, raw: bytes | str | memoryview) -> EventParseError:
    text = raw if isinstance(raw, str) else bytes(raw[:400]).decode("utf-8", "replace")
    return EventParseError(f"not a tail event: {exc}", text[:200])


def parse_event(raw: bytes | str) -> TailEvent:
    """Decode one trace item (pretty-printed or compact JSON), leniently (:func:`decode_event`).

    Tolerates ``event: null``, ``eventTimestamp: null``, a missing ``scriptVersion``, unknown fields, and
    fields of unexpected types (read as far as they can be).

    Raises:
        EventParseError: the input is not a trace item (not JSON, not an object, none of a str ``outcome``,
            ``eventTimestamp`` and ``event``, or nested too deeply).
    """
    return decode_event(raw)[0]

