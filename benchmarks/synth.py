"""Synthetic tail output, exactly as ``wrangler tail --format json`` prints it.

wrangler writes each trace item with ``JSON.stringify(item, null, 4)`` followed by a newline.  The items here
carry what a real fetch trace item carries (request headers, the ``cf`` object, logs, exceptions, the script
version), about 1.9 KB each.  Rendering JSON is slow, so a few thousand distinct items are rendered once as
templates with a timestamp placeholder, and the stream substitutes real timestamps: generating is then much
cheaper than ingesting, and streams of any length are produced lazily.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any, Final

WORKER: Final = "cf-ssai"
VERSIONS: Final = ("11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222")
T0_MS: Final = 1_795_353_860_000
_PLACEHOLDER: Final = 9_999_999_999_999  # 13 digits, like a real eventTimestamp
_PH: Final = str(_PLACEHOLDER).encode()


def trace_item(rnd: random.Random, i: int, error: bool, *, churn: float = 0.00001) -> dict[str, Any]:
    """One fetch trace item with realistic headers, cf, logs and (when ``error``) an exception."""
    t = _PLACEHOLDER
    channel = f"sports{i % 7}"
    logs: list[dict[str, Any]] = [{"message": [f"GET /v1/manifest/{channel}.m3u8 channel={channel}"],
                                   "level": "log", "timestamp": t}]
    if rnd.random() < 0.3:
        logs.append({"message": ["ad decision", {"channel": channel, "pod": i % 5, "ms": 12}],
                     "level": "info", "timestamp": t})
    if rnd.random() < 0.2:
        logs.append({"message": ["💾 Persisted ad state to durable storage: version=1"], "level": "log",
                     "timestamp": t})
    if rnd.random() < churn:
        logs.append({"message": [f"⚠️  DO Instance Churn: id=abc{i}, age=3s"], "level": "warn", "timestamp": t})
    event: dict[str, Any] = {"request": {
        "url": f"https://cf-ssai.example.workers.dev/v1/manifest/{channel}.m3u8?token=t{i}&ad=1",
        "method": "GET",
        "headers": {"accept": "*/*", "accept-encoding": "gzip, br", "cf-connecting-ip": "203.0.113.9",
                    "cf-ipcountry": "NL", "host": "cf-ssai.example.workers.dev", "user-agent": "AppleCoreMedia/1.0",
                    "x-forwarded-proto": "https", "authorization": "REDACTED"},
        "cf": {"colo": "AMS", "country": "NL", "city": "Amsterdam", "asn": 64500, "httpProtocol": "HTTP/2",
               "tlsVersion": "TLSv1.3", "tlsCipher": "AEAD-AES128-GCM-SHA256", "asOrganization": "Example",
               "clientTcpRtt": 12, "timezone": "Europe/Amsterdam", "latitude": "52.37", "longitude": "4.89"}}}
    if not error:
        event["response"] = {"status": 200}
    return {
        "wallTime": 14, "cpuTime": 3, "truncated": False, "executionModel": "stateless",
        "outcome": "exception" if error else "ok", "scriptName": WORKER, "entrypoint": "default",
        "scriptTags": [], "scriptVersion": {"id": VERSIONS[i % 10 == 0], "tag": "v42", "message": "canary"},
        "diagnosticsChannelEvents": [],
        "exceptions": [{"name": "Error", "message": "upstream timeout", "timestamp": t,
                        "stack": "Error: upstream timeout\n    at fetch (index.js:3:11)"}] if error else [],
        "logs": logs, "eventTimestamp": t, "event": event,
    }


class Templates:
    """Rendered trace items, each split at its timestamps; ``render(k, ts)`` gives the bytes of item ``k``."""

    def __init__(self, count: int = 2000, error_rate: float = 0.02, seed: int = 1, churn: float = 0.00001) -> None:
        rnd = random.Random(seed)
        self.errors: list[bool] = []
        self.parts: list[list[bytes]] = []
        for i in range(count):
            error = rnd.random() < error_rate
            text = json.dumps(trace_item(rnd, i, error, churn=churn), indent=4, ensure_ascii=False) + "\n"
            self.errors.append(error)
            self.parts.append(text.encode().split(_PH))

    def __len__(self) -> int:
        return len(self.parts)

    def render(self, k: int, ts_ms: int) -> bytes:
        return str(ts_ms).encode().join(self.parts[k % len(self.parts)])


def stream(templates: Templates, events: int, rate: float, *, batch: int = 32,
           t0_ms: int = T0_MS) -> Iterator[bytes]:
    """``events`` items, ``rate`` per second of event time, as chunks of ``batch`` items (lazily)."""
    step = 1000.0 / rate
    n = len(templates)
    parts = templates.parts
    for start in range(0, events, batch):
        stop = min(events, start + batch)
        yield b"".join(str(t0_ms + int(i * step)).encode().join(parts[i % n]) for i in range(start, stop))


def generate(events: int, *, rate: float = 5000.0, error_rate: float = 0.02, seed: int = 1) -> bytes:
    """The whole stream as one bytes object (for the ingest comparison, which needs it on disk)."""
    return b"".join(stream(Templates(error_rate=error_rate, seed=seed), events, rate))
