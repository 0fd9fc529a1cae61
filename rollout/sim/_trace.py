"""Trace items as the tail WebSocket delivers them (WRANGLER.md §4), and the tail filters."""

from __future__ import annotations

import random
from typing import Any

from rollout.sim._behaviour import Outcome

_OVERLOAD = (
    "Tail is currently in sampling mode due to the high volume of messages. "
    "To prevent messages from being dropped consider adding filters."
)
_OVERLOAD_STOP = "Tail has exited sampling mode and is no longer dropping messages."
_REDACT = ("cookie", "auth", "key", "token", "secret", "jwt")
_CF = {
    "colo": "SJC", "country": "US", "asn": 64500, "httpProtocol": "HTTP/2", "tlsVersion": "TLSv1.3",
    "tlsCipher": "AEAD-AES128-GCM-SHA256", "asOrganization": "Rollout Simulator",
}


def _headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: ("REDACTED" if any(w in k.lower() for w in _REDACT) else v) for k, v in headers.items()}


def trace_item(
    *, worker: str, version_id: str, tag: str | None, message: str | None, outcome: Outcome,
    url: str, method: str, headers: dict[str, str], timestamp: float,
) -> dict[str, Any]:
    """One fetch trace item; key order follows workerd's serialisation."""
    version: dict[str, Any] = {"id": version_id}
    if tag:
        version["tag"] = tag
    if message:
        version["message"] = message
    event: dict[str, Any] = {"request": {"url": url, "method": method, "headers": _headers(headers), "cf": _CF}}
    if outcome.outcome != "exception":
        event["response"] = {"status": outcome.status}
    return {
        "wallTime": outcome.wall_ms, "cpuTime": outcome.cpu_ms, "truncated": False,
        "executionModel": "stateless", "outcome": outcome.outcome, "scriptName": worker,
        "entrypoint": "default", "scriptTags": [], "scriptVersion": version,
        "diagnosticsChannelEvents": [], "exceptions": outcome.exceptions, "logs": outcome.logs,
        "eventTimestamp": int(timestamp * 1000), "event": event,
    }


def overload_notice(start: bool, timestamp: float) -> dict[str, Any]:
    """The in-band notice a tail sends when it starts (or stops) sampling."""
    return {
        "wallTime": 0, "cpuTime": 0, "truncated": False, "executionModel": "stateless", "outcome": "ok",
        "scriptName": None, "diagnosticsChannelEvents": [], "exceptions": [], "logs": [],
        "eventTimestamp": int(timestamp * 1000),
        "event": {"type": "overload" if start else "overload-stop",
                  "message": _OVERLOAD if start else _OVERLOAD_STOP},
    }


def passes(filters: list[dict[str, Any]], item: dict[str, Any], rng: random.Random) -> bool:
    """Whether a trace item passes a tail's filters (the simple ones; the others let all through)."""
    request = (item.get("event") or {}).get("request") or {}
    for f in filters:
        if "sampling_rate" in f and rng.random() >= float(f["sampling_rate"]):
            return False
        if "outcome" in f and item.get("outcome") not in f["outcome"]:
            return False
        if "scriptVersion" in f and (item.get("scriptVersion") or {}).get("id") != f["scriptVersion"]:
            return False
        if "method" in f and request.get("method") not in f["method"]:
            return False
        if "query" in f and str(f["query"]) not in str(item.get("logs")) + str(item.get("exceptions")):
            return False
    return True
