"""Builders of trace items as the runtime sends them (WRANGLER.md §4), for the core tests."""

from __future__ import annotations

import json
from typing import Any

from rollout.events import TailEvent, parse_event

T0 = 1_795_353_860_000
OLD = "11111111-1111-4111-8111-111111111111"
NEW = "22222222-2222-4222-8222-222222222222"


def trace(
    *, outcome: str = "ok", status: int | None = 200, t: int | None = T0, version: str | None = OLD,
    logs: list[list[Any]] | None = None, exceptions: list[tuple[str, str]] | None = None,
    event: dict[str, Any] | None | str = "fetch", worker: str | None = "my-worker", url: str = "https://w.example/api?x=1",
) -> dict[str, Any]:
    """One trace item as a dict; ``event="fetch"`` builds a request (and a response when ``status``)."""
    ev: dict[str, Any] | None
    if event == "fetch":
        fetch: dict[str, Any] = {"request": {"url": url, "method": "GET",
                                             "headers": {"accept": "*/*"}, "cf": {"colo": "AMS"}}}
        if status is not None:
            fetch["response"] = {"status": status}
        ev = fetch
    else:
        ev = event if isinstance(event, dict) else None
    item: dict[str, Any] = {
        "wallTime": 14, "cpuTime": 3, "truncated": False, "executionModel": "stateless", "outcome": outcome,
        "scriptName": worker, "entrypoint": "default", "scriptTags": [], "diagnosticsChannelEvents": [],
        "exceptions": [{"name": n, "message": m, "timestamp": t, "stack": f"{n}: {m}\n    at x"}
                       for n, m in (exceptions or [])],
        "logs": [{"message": m, "level": "log", "timestamp": t} for m in (logs or [])],
        "eventTimestamp": t, "event": ev,
    }
    if version is not None:
        item["scriptVersion"] = {"id": version, "tag": "v1", "message": "m"}
    return item


def pretty(*items: dict[str, Any]) -> bytes:
    """What ``wrangler tail --format json`` prints for these items."""
    return b"".join(json.dumps(i, indent=4, ensure_ascii=False).encode() + b"\n" for i in items)


def ev(**kw: Any) -> TailEvent:
    return parse_event(json.dumps(trace(**kw)))
