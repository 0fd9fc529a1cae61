"""Parsing trace items into TailEvent values."""

from __future__ import annotations

import json

import pytest

from rollout.errors import RolloutError
from rollout.events import FAILURE_OUTCOMES, NON_FAILURE_OUTCOMES, EventParseError, TailEvent, parse_event

from .helpers import NEW, T0, ev, pretty, trace

SAMPLE = """{"wallTime":14,"cpuTime":3,"truncated":false,"executionModel":"stateless","outcome":"exception",
 "scriptName":"my-worker","entrypoint":"default","scriptTags":[],
 "scriptVersion":{"id":"22222222-2222-4222-8222-222222222222","tag":"v42","message":"canary"},
 "diagnosticsChannelEvents":[],
 "exceptions":[{"name":"Error","message":"boom","timestamp":1795353860452,"stack":"Error: boom"}],
 "logs":[{"message":["about to fail",{"id":7}],"level":"error","timestamp":1795353860451}],
 "eventTimestamp":1795353860450,
 "event":{"request":{"url":"https://my-worker.example.workers.dev/api/items?id=7","method":"GET",
   "headers":{"accept":"*/*","authorization":"REDACTED"},
   "cf":{"colo":"AMS","country":"NL","asn":64500}}}}"""


def test_sample_event_from_wrangler_md() -> None:
    """The sample event of WRANGLER.md §4 parses into every field."""
    e = parse_event(SAMPLE)
    assert e == TailEvent(
        timestamp_ms=1795353860450, worker="my-worker", version=NEW, outcome="exception", status=None,
        kind="fetch", logs=('about to fail {"id":7}',), exceptions=(("Error", "boom"),), method="GET",
        path="/api/items", wall_time_ms=14, truncated=False)
    assert e.is_error


def test_pretty_and_bytes_input() -> None:
    """Pretty-printed bytes parse the same as compact text."""
    item = trace(logs=[["hello", "world"], [1, True, None, {"a": [1]}]])
    assert parse_event(pretty(item).strip()) == parse_event(json.dumps(item))
    assert parse_event(json.dumps(item)).logs == ("hello world", '1 true null {"a":[1]}')


def test_5xx_with_outcome_ok_is_an_error() -> None:
    """A 503 arrives with outcome ok; the status makes it an error."""
    e = ev(outcome="ok", status=503)
    assert (e.outcome, e.status, e.is_error) == ("ok", 503, True)
    assert not ev(outcome="ok", status=404).is_error


@pytest.mark.parametrize("outcome", sorted(FAILURE_OUTCOMES) + ["somethingNew"])
def test_failure_outcomes(outcome: str) -> None:
    """Every failure outcome, and an unknown one, is an error."""
    assert ev(outcome=outcome, status=None).is_error


@pytest.mark.parametrize("outcome", sorted(NON_FAILURE_OUTCOMES))
def test_non_failure_outcomes(outcome: str) -> None:
    """ok and the client disconnects are not errors by themselves."""
    assert not ev(outcome=outcome, status=None).is_error


@pytest.mark.parametrize(("event", "kind"), [
    ({"cron": "*/5 * * * *", "scheduledTime": T0}, "scheduled"),
    ({"scheduledTime": "2026-11-22T13:32:02.000Z"}, "alarm"),
    ({"mailFrom": "a@b", "rcptTo": "c@d", "rawSize": 10}, "email"),
    ({"queue": "q", "batchSize": 7}, "queue"),
    ({"rpcMethod": "doThing"}, "rpc"),
    ({"consumedEvents": [{"scriptName": "x"}]}, "tail"),
    ({"type": "overload", "message": "Tail is currently in sampling mode"}, "overload"),
    ({"type": "overload-stop", "message": "Tail has exited sampling mode"}, "overload-stop"),
    ({"type": "weird", "message": "?"}, "other"),
    ({"somethingElse": 1}, "other"),
    (None, "other"),
])
def test_event_kinds(event: dict[str, object] | None, kind: str) -> None:
    """The trigger type is told apart by the keys of ``event``, as wrangler does."""
    e = ev(event=event)
    assert e.kind == kind
    assert e.status is None
    assert e.method is None
    assert e.path is None


def test_nulls_and_missing_fields_are_tolerated() -> None:
    """event null, eventTimestamp null, no scriptVersion, scriptName null, extra fields."""
    item = trace(t=None, version=None, worker=None, event=None)
    item["somethingNew"] = {"deep": [1, 2, 3]}
    e = parse_event(json.dumps(item))
    assert (e.timestamp_ms, e.version, e.worker, e.kind) == (0, None, None, "other")
    minimal = parse_event('{"outcome": "ok"}')
    assert minimal.logs == ()
    assert minimal.exceptions == ()
    assert minimal.wall_time_ms is None


@pytest.mark.parametrize(("url", "path"), [
    ("https://h.example/a/b?x=1#f", "/a/b"), ("http://h.example", "/"), ("https://h.example/", "/"),
    ("/rel/path?q", "/rel/path"), ("wss://h/x#y", "/x"),
])
def test_url_path(url: str, path: str) -> None:
    """Only the path of the URL is kept."""
    assert ev(url=url).path == path


@pytest.mark.parametrize("raw", [
    "not json", "[1, 2]", "42", '{"outcome": 5}', '{"no": "outcome"}', b"\xff\xfe", "", "{}",
    "[" * 1000 + "]" * 1000, '{"outcome": "ok", "logs": [{"message": ' + "[" * 5000 + "]" * 5000 + "}]}",
])
def test_malformed_input_raises_event_parse_error(raw: str | bytes) -> None:
    """Input that is not a trace item (or is nested too deeply) raises EventParseError, a RolloutError;
    a trace item with fields of unexpected types does not (tests/core/test_hostile_input.py)."""
    with pytest.raises(EventParseError) as info:
        parse_event(raw)
    assert isinstance(info.value, RolloutError)


def test_truncated_flag_and_values_are_frozen() -> None:
    """truncated is read; TailEvent is immutable and hashable."""
    item = trace()
    item["truncated"] = True
    e = parse_event(json.dumps(item))
    assert e.truncated
    with pytest.raises(AttributeError):
        e.outcome = "x"  # type: ignore[misc]
    assert hash(e) == hash(parse_event(json.dumps(item)))
