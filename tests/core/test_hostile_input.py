"""Input that cannot crash the judge: nesting depth and object size are bounded (over a bound is a counted
parse error, and the stream goes on), and a field of an unexpected type keeps its event (a parse warning)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rollout.board import GuardBoard
from rollout.bus import EventBus
from rollout.events import MAX_ID_CHARS, TailEvent, _wire_decoder, decode_event, event_from_json, event_from_wire
from rollout.framing import TailDecoder
from rollout.guards import ErrorRate, LogRate, NewExceptions
from rollout.monitor import Monitor
from rollout.replay import describe, replay_bytes
from rollout.sources import SourceStatus

from .helpers import NEW, OLD, T0, pretty, trace


def feed_all(data: bytes, size: int, decoder: TailDecoder | None = None) -> tuple[list[TailEvent], TailDecoder]:
    decoder = decoder or TailDecoder()
    events: list[TailEvent] = []
    for i in range(0, len(data), size):
        events += decoder.feed(data[i:i + size])
    events += decoder.flush()
    return events, decoder


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_pretty(depth: int, indent: int) -> str:
    """A value ``depth`` arrays deep as JSON.stringify(v, null, 4) prints it inside an object at ``indent``."""
    opens = "".join("[\n" + " " * (indent + 4 * (k + 1)) for k in range(depth - 1)) + "[]"
    closes = "".join("\n" + " " * (indent + 4 * k) + "]" for k in range(depth - 2, -1, -1))
    return opens + closes


def hostile(value: str, *, pretty_layout: bool = True) -> bytes:
    """A trace item (an error) whose first log message is the raw JSON ``value``."""
    if pretty_layout:
        return (f'{{\n    "outcome": "exception",\n    "scriptName": "my-worker",\n    "eventTimestamp": {T0 + 1},\n'
                f'    "logs": [\n        {{\n            "message": {value}\n        }}\n    ]\n}}\n').encode()
    return (f'{{"outcome": "exception", "scriptName": "my-worker", "eventTimestamp": {T0 + 1}, '
            f'"logs": [{{"message": {value}}}]}}\n').encode()


BEFORE = pretty(trace(t=T0, logs=[["before"]]))
AFTER = pretty(trace(t=T0 + 2, outcome="exception", status=None, logs=[["after"]], exceptions=[("Error", "x")]))
SIZES = [1 << 30, 1 << 16, 4096, 997]


# -- depth -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("layout", ["pretty", "compact"])
def test_deep_nesting_is_a_parse_error_and_the_next_event_counts(depth: int, layout: str) -> None:
    """A log value nested 1,000 or 100,000 deep used to raise RecursionError out of the decoder (and crash
    replay and watch); it is one parse error, and the events before and after it come through."""
    data = BEFORE + hostile(nested(depth), pretty_layout=layout == "pretty") + AFTER
    for size in SIZES:
        events, decoder = feed_all(data, size)
        assert [e.logs for e in events] == [("before",), ("after",)], size
        assert events[1].exceptions == (("Error", "x"),) and events[1].is_error
        assert (decoder.parse_errors, decoder.malformed, decoder.parse_warnings) == (1, 1, 0)
        assert decoder.last_error is not None and "nested" in decoder.last_error


def test_deep_nesting_as_wrangler_prints_it() -> None:
    """1,000 levels pretty-printed with 4-space indentation (4 MB, what wrangler would print) are one parse
    error too, on the fast path's input."""
    data = BEFORE + hostile(nested_pretty(1_000, 12)) + AFTER
    assert 3_000_000 < len(data) < 8 << 20
    json.loads(hostile(nested_pretty(5, 12)))  # the builder makes valid JSON
    for size in (1 << 30, 1 << 16):
        events, decoder = feed_all(data, size)
        assert [e.logs for e in events] == [("before",), ("after",)]
        assert decoder.parse_errors == 1


@pytest.mark.parametrize("where", ["headers", "unknown field", "exception message", "event"])
def test_deep_nesting_anywhere_in_the_object(where: str) -> None:
    """Nesting in a field rollout skips (headers, an unknown field) is bounded the same way."""
    item = trace(t=T0 + 1)
    marker = "\"__deep__\""
    if where == "headers":
        item["event"]["request"]["headers"] = "__deep__"
    elif where == "unknown field":
        item["somethingNew"] = "__deep__"
    elif where == "exception message":
        item["exceptions"] = [{"name": "Error", "message": "__deep__"}]
    else:
        item["event"] = "__deep__"
    data = BEFORE + json.dumps(item, indent=4).replace(marker, nested(100_000)).encode() + b"\n" + AFTER
    for size in (1 << 30, 4096):
        events, decoder = feed_all(data, size)
        assert [e.logs for e in events] == [("before",), ("after",)]
        assert decoder.parse_errors == 1


def test_moderate_nesting_is_kept() -> None:
    """A log value 100 deep is an ordinary value: kept, rendered as JSON."""
    events, decoder = feed_all(BEFORE + hostile(nested(100)) + AFTER, 1 << 16)
    assert len(events) == 3 and decoder.malformed == 0
    assert events[1].logs == (nested(99),)  # the message is the list of console.log arguments


# -- size ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["pretty", "compact"])
def test_a_10_mb_string_is_a_parse_error_and_the_next_event_counts(layout: str) -> None:
    """An object over the 8 MiB bound (a 10 MB log line) is one parse error however it is read; its bytes are
    skipped, not counted as garbage, and the next event counts."""
    big = trace(t=T0 + 1, logs=[["x" * (10 << 20)]])
    raw = pretty(big) if layout == "pretty" else json.dumps(big).encode() + b"\n"
    data = BEFORE + raw + AFTER
    for size in (1 << 30, 1 << 16, 1 << 20):
        events, decoder = feed_all(data, size)
        assert [e.logs for e in events] == [("before",), ("after",)], size
        assert (decoder.parse_errors, decoder.garbage_lines, decoder.truncated_objects) == (1, 0, 0), size
        assert decoder.framer.oversized_objects == 1
        assert decoder.skipped_bytes >= 10 << 20
        assert decoder.framer.buffered == 0
        assert decoder.last_error == f"not a tail event: an object longer than {8 << 20} bytes"


def test_a_10_mb_string_with_a_small_bound_and_a_cut_object() -> None:
    """With a 1 MiB bound, the 10 MB object, an unfinished oversized object cut by a new one, and a 2 MB
    garbage line without objects are each counted once; every good object comes through."""
    cut = pretty(trace(t=T0 + 3, logs=[["y" * (3 << 20)]]))[: 2 << 20]
    data = (BEFORE + pretty(trace(t=T0 + 1, logs=[["x" * (10 << 20)]])) + AFTER + cut + b"\n" + AFTER
            + b"z" * (2 << 20) + b"\n" + BEFORE)
    for size in (1 << 30, 1 << 16):
        events, decoder = feed_all(data, size, TailDecoder(max_object_bytes=1 << 20))
        assert [e.logs for e in events] == [("before",), ("after",), ("after",), ("before",)], size
        assert (decoder.parse_errors, decoder.garbage_lines, decoder.truncated_objects) == (2, 1, 0), size


def test_a_long_object_under_the_bound_is_read_in_linear_time() -> None:
    """A 7 MB object read 64 KiB at a time: the framer does not search it again on every read."""
    import time

    data = BEFORE + pretty(trace(t=T0 + 1, logs=[["x" * (7 << 20)]])) + AFTER
    started = time.perf_counter()
    events, decoder = feed_all(data, 1 << 16)
    assert len(events) == 3 and decoder.malformed == 0
    assert time.perf_counter() - started < 1.0


# -- wrong types: the event is kept -------------------------------------------------------------------------


def _item(**changes: Any) -> dict[str, Any]:
    item = trace(t=T0 + 1, outcome="exception", status=None, logs=[["about to fail", {"id": 7}]],
                 exceptions=[("Error", "boom")], version=NEW)
    for path, value in changes.items():
        target = item
        *parents, last = path.split("__")
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if value is _DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return item


_DELETE = object()

CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    # name: (changes to the item, fields the event must have, a part of the warning)
    "exception message is an object (wrangler's fixture)": (
        {"exceptions__0__message": {"complex": "error"}},
        {"outcome": "exception", "exceptions": (("Error", '{"complex":"error"}'),),
         "logs": ('about to fail {"id":7}',), "version": NEW},
        "exceptions[0].message is an object"),
    "exception message is a number": ({"exceptions__0__message": 42}, {"exceptions": (("Error", "42"),)},
                                      "exceptions[0].message is the int 42"),
    "exception message is null": ({"exceptions__0__message": None}, {"exceptions": (("Error", ""),)},
                                  "exceptions[0].message is null"),
    "exception name is an object": ({"exceptions__0__name": {"n": 1}}, {"exceptions": (('{"n":1}', "boom"),)},
                                    "exceptions[0].name is an object"),
    "exception is a str": ({"exceptions__0": "boom"}, {"exceptions": (("", "boom"),)}, "exceptions[0] is the str"),
    "exceptions is an object": ({"exceptions": {"a": 1}}, {"exceptions": (), "outcome": "exception"},
                                "exceptions is an object"),
    "exception name too long": ({"exceptions__0__name": "E" * 10_000},
                                {"exceptions": (("E" * MAX_ID_CHARS, "boom"),)}, "exceptions[0].name longer than"),
    "log item is a str": ({"logs__0": "plain"}, {"logs": ("plain",)}, "logs[0] is the str 'plain'"),
    "log item is a number": ({"logs__0": 3}, {"logs": ("3",)}, "logs[0] is the int 3"),
    "logs is a str": ({"logs": "plain"}, {"logs": ()}, "logs is the str"),
    "logs is null": ({"logs": None}, {"logs": ()}, "logs is null"),
    "scriptVersion is a str": ({"scriptVersion": NEW}, {"version": None, "outcome": "exception"},
                               "scriptVersion is the str"),
    "scriptVersion id is a number": ({"scriptVersion__id": 7}, {"version": None}, "scriptVersion.id is the int 7"),
    "scriptVersion id too long": ({"scriptVersion__id": "v" * 1000}, {"version": "v" * MAX_ID_CHARS},
                                  "scriptVersion.id longer than 256"),
    "scriptName is a number": ({"scriptName": 5}, {"worker": None}, "scriptName is the int 5"),
    "outcome missing, with exceptions": ({"outcome": _DELETE}, {"outcome": "exception"},
                                         "outcome is missing: read as 'exception'"),
    "outcome is a number": ({"outcome": 3}, {"outcome": "exception"}, "outcome is the int 3"),
    "eventTimestamp is a str": ({"eventTimestamp": "soon"}, {"timestamp_ms": 0}, "eventTimestamp is the str"),
    "eventTimestamp is infinite": ({"eventTimestamp": "__inf__"}, {"timestamp_ms": 0}, "eventTimestamp is the float"),
    "wallTime is a str": ({"wallTime": "14ms"}, {"wall_time_ms": None}, "wallTime is the str"),
    "truncated is a str": ({"truncated": "yes"}, {"truncated": False}, "truncated is the str"),
    "event is a str": ({"event": "fetch"}, {"kind": "other", "path": None}, "event is the str"),
}


def _raw(item: dict[str, Any]) -> bytes:
    return json.dumps(item, indent=4).replace('"__inf__"', "1e400").encode() + b"\n"


@pytest.mark.parametrize("name", list(CASES))
def test_a_field_of_an_unexpected_type_keeps_the_event(name: str) -> None:
    """The typed decoder refuses the object; it is read field by field, kept, and counted as a warning."""
    changes, expected, warning = CASES[name]
    raw = _raw(_item(**changes))
    with pytest.raises((ValueError, OverflowError)):
        event_from_wire(_wire_decoder.decode(raw))
    event, odd = decode_event(raw)
    assert {k: getattr(event, k) for k in expected} == expected
    assert any(warning in line for line in odd), odd
    for size in SIZES:
        events, decoder = feed_all(BEFORE + raw + AFTER, size)
        assert [e.logs[:1] for e in events][::2] == [("before",), ("after",)]
        assert events[1] == event
        assert (decoder.parse_errors, decoder.parse_warnings) == (0, 1)
        assert decoder.last_warning is not None and warning in decoder.last_warning


def test_case_10_the_object_message_keeps_outcome_logs_and_exception() -> None:
    """Issue 14 case 10: wrangler's own fixture, an exception whose message is ``{"complex": "error"}``, made
    the whole event a parse error: its outcome, logs and exception were lost.  Now the error counts."""
    item = trace(t=T0 + 1, outcome="exception", status=None, logs=[["DO Instance Churn: id=3"]],
                 exceptions=[("Error", "x")])
    item["exceptions"][0]["message"] = {"complex": "error"}
    data = pretty(trace(t=T0)) + pretty(item) + pretty(trace(t=T0 + 2))
    result = replay_bytes([data], [ErrorRate(min_samples=1), LogRate(pattern="do_churn"), NewExceptions()],
                          baseline_ms=0)
    assert (result.events, result.parse_errors, result.parse_warnings) == (3, 0, 1)
    assert result.to_json()["parse_warnings"] == 1
    assert "1 event(s) kept with a field of an unexpected type" in describe(result, 0)[1]
    events, _ = feed_all(data, 1 << 16)
    assert events[1].outcome == "exception" and events[1].is_error
    assert events[1].logs == ("DO Instance Churn: id=3",)
    assert events[1].exceptions == (("Error", '{"complex":"error"}'),)


def test_status_that_is_not_an_int_still_counts_a_5xx() -> None:
    """``status: "500"`` (a str) or 500.0 is read as 500: the 5xx still counts as an error."""
    for status in ("500", 500.0):
        item = trace(t=T0 + 1, status=200)
        item["event"]["response"]["status"] = status
        event, odd = decode_event(json.dumps(item))
        assert event.status == 500 and event.is_error, status
        assert any("read as 500" in line for line in odd)
    item = trace(t=T0 + 1)
    item["event"]["response"]["status"] = "teapot"
    event, odd = decode_event(json.dumps(item))
    assert event.status is None and event.kind == "fetch" and event.path == "/api"


@pytest.mark.parametrize(("changes", "outcome"), [
    ({"outcome": _DELETE, "exceptions": []}, "ok"),  # a response status: read as ok (a 5xx still counts)
    ({"outcome": _DELETE, "exceptions": [], "event": None}, "unknown"),  # nothing to go by: a failure
])
def test_a_missing_outcome(changes: dict[str, Any], outcome: str) -> None:
    item = _item(**changes)
    if item["event"] is not None:
        item["event"]["response"] = {"status": 204}
    event, odd = decode_event(json.dumps(item))
    assert event.outcome == outcome
    assert event.is_error == (outcome == "unknown")
    assert any("outcome is missing" in line for line in odd)


@pytest.mark.parametrize("message", [
    [{"a": 1}], [3], [None], [True, "x"], {"a": [1, {"b": None}]}, 7, None, "plain", [], ["a", "b", {"c": "d"}],
])
def test_log_messages_of_any_json_type_are_rendered_without_a_warning(message: Any) -> None:
    """``logs[].message`` holds console.log's arguments: objects, numbers, null are rendered as JSON text by
    the fast path itself, with no warning."""
    item = trace(t=T0 + 1)
    item["logs"] = [{"message": message, "level": "log", "timestamp": T0}]
    events, decoder = feed_all(BEFORE + pretty(item) + AFTER, 1 << 16)
    assert len(events) == 3 and (decoder.malformed, decoder.parse_warnings) == (0, 0)
    event, odd = decode_event(json.dumps(item))
    assert odd == () and events[1] == event
    strings = message if isinstance(message, list) else [message]
    expected = " ".join(s if isinstance(s, str) else json.dumps(s, separators=(",", ":")) for s in strings)
    assert event.logs == (expected,)


def test_the_lenient_reading_equals_the_typed_one_on_good_items() -> None:
    """For every item the typed decoder accepts, reading it field by field gives the same event, no warning."""
    items = [
        trace(), trace(t=None, version=None, worker=None, event=None), trace(outcome="exception", status=None,
                                                                             exceptions=[("E", "m\nn")]),
        trace(event={"type": "overload", "message": "sampling"}), trace(event={"cron": "* * * * *"}),
        trace(event={"scheduledTime": "2026-01-01"}), trace(event={"queue": "q", "batchSize": 1}),
        trace(event={"rpcMethod": "x"}), trace(event={"consumedEvents": []}), trace(event={"mailFrom": "a"}),
        trace(url="/relative?x"), trace(url="wss://h/x#y"), trace(status=503, logs=[["x", 1, None], [{"k": "v"}]]),
        {"outcome": "ok"}, {**trace(), "eventTimestamp": 1.5e12, "wallTime": 2.5, "truncated": None},
        {**trace(), "logs": [{"level": "log"}]}, {**trace(), "scriptVersion": None},
        {**trace(), "event": {"request": {"method": "GET"}}},
    ]
    for item in items:
        raw = json.dumps(item)
        strict = event_from_wire(_wire_decoder.decode(raw))
        assert event_from_json(json.loads(raw)) == (strict, ()), item


@pytest.mark.parametrize("raw", [b'{"outcome": 5}', b'{"not": "an event"}', b"{}", b'{"outcome": null}'])
def test_objects_that_are_not_trace_items_are_parse_errors(raw: bytes) -> None:
    events, decoder = feed_all(BEFORE + raw + b"\n" + AFTER, 1 << 16)
    assert len(events) == 2 and (decoder.parse_errors, decoder.parse_warnings) == (1, 0)


# -- through the monitor and replay --------------------------------------------------------------------------


class _NoSource:
    status = SourceStatus(connected=True)

    async def run(self, on_chunk: object) -> None:  # pragma: no cover - never run
        return None


def test_a_live_monitor_survives_everything_and_reports_it() -> None:
    """A monitor judging guards is fed all of it in 64 KiB reads: nothing raises; the snapshot counts the
    parse errors and warnings, and every good event counts as a request."""
    board = GuardBoard([ErrorRate(min_samples=1), LogRate(pattern="greet failed"), NewExceptions()], EventBus())
    board.arm("my-worker", 0)
    monitor = Monitor("my-worker", _NoSource(), board=board, clock=lambda: 0.0)
    odd = _item(**{"exceptions__0__message": {"complex": "error"}})
    data = (BEFORE + hostile(nested(1_000)) + hostile(nested(100_000), pretty_layout=False)
            + pretty(trace(t=T0 + 1, logs=[["x" * (10 << 20)]])) + _raw(odd) + AFTER)
    for i in range(0, len(data), 1 << 16):
        monitor.feed(data[i:i + (1 << 16)])
    snap = monitor.snapshot()
    assert (snap.events, snap.parse_errors, snap.parse_warnings) == (3, 3, 1)
    assert monitor.signals.window(0, T0 + 10).requests == 3


def test_replay_of_hostile_input_is_the_same_whatever_the_chunking() -> None:
    """Replay never raises on it, counts the same and reports the same breach at the same event however the
    file is read."""
    items = [trace(t=T0 + i * 50, version=OLD) for i in range(200)]
    bad = [trace(t=T0 + 10_000 + i * 50, version=NEW, status=500 if i % 2 else 200) for i in range(200)]
    odd = _raw(_item(**{"exceptions__0__message": {"complex": "error"}}))
    data = (pretty(*items[:100]) + hostile(nested(100_000), pretty_layout=False) + pretty(*items[100:])
            + pretty(trace(t=T0 + 9_999, logs=[["x" * (9 << 20)]])) + odd + pretty(*bad)
            + hostile(nested(1_000)))
    results = [replay_bytes([data[i:i + size] for i in range(0, len(data), size)], [ErrorRate()], baseline_ms=5_000)
               for size in (len(data), 1 << 16, 4093)]
    first = results[0]
    assert (first.events, first.parse_errors, first.parse_warnings) == (401, 3, 1)
    assert [b.guard for b in first.breaches] == ["error_rate"]
    for other in results[1:]:
        assert (other.events, other.parse_errors, other.parse_warnings) == (401, 3, 1)
        assert [(b.guard, b.event_index) for b in other.breaches] == [(b.guard, b.event_index) for b in first.breaches]
