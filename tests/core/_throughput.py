"""Ingest throughput check, run by hand (not a test): ``python tests/core/_throughput.py [EVENTS]``.

Generates tail output exactly as ``wrangler tail --format json`` prints it (4-space-indented objects one
after another), then measures events/s through TailDecoder + WorkerSignals.add (+ the default guards judged
every 20 ms, as the engine does), on one core, and the same bytes through ``jq -c 'select(.outcome != "ok")' | wc -l``
and ``grep -c`` when they are installed.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time

from rollout.framing import TailDecoder
from rollout.guards import default_guards
from rollout.signals import WorkerSignals

VERSIONS = ("11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222")


def make_event(rnd: random.Random, i: int, t: int, error_rate: float = 0.02) -> dict[str, object]:
    err = rnd.random() < error_rate
    logs: list[dict[str, object]] = [{"message": [f"GET /v1/manifest/sports{i % 7}.m3u8 channel=sports{i % 7}"],
                                      "level": "log", "timestamp": t}]
    if rnd.random() < 0.3:
        logs.append({"message": ["ad decision", {"channel": f"sports{i % 7}", "pod": i % 5, "ms": 12}],
                     "level": "info", "timestamp": t})
    if rnd.random() < 0.2:
        logs.append({"message": ["💾 Persisted ad state to durable storage: version=1"], "level": "log",
                     "timestamp": t})
    if rnd.random() < 0.002:
        logs.append({"message": [f"⚠️  DO Instance Churn: id=abc{i}, age=3s"], "level": "warn", "timestamp": t})
    status = 503 if (not err and rnd.random() < 0.005) else 200
    event: dict[str, object] = {"request": {
        "url": f"https://cf-ssai.example.workers.dev/v1/manifest/sports{i % 7}.m3u8?token=t{i}&ad=1",
        "method": "GET",
        "headers": {"accept": "*/*", "accept-encoding": "gzip, br", "cf-connecting-ip": "203.0.113.9",
                    "cf-ipcountry": "NL", "host": "cf-ssai.example.workers.dev", "user-agent": "AppleCoreMedia/1.0",
                    "x-forwarded-proto": "https", "authorization": "REDACTED"},
        "cf": {"colo": "AMS", "country": "NL", "city": "Amsterdam", "asn": 64500, "httpProtocol": "HTTP/2",
               "tlsVersion": "TLSv1.3", "tlsCipher": "AEAD-AES128-GCM-SHA256", "asOrganization": "Example",
               "clientTcpRtt": 12, "timezone": "Europe/Amsterdam", "latitude": "52.37", "longitude": "4.89"}}}
    if not err:
        event["response"] = {"status": status}
    return {
        "wallTime": 14, "cpuTime": 3, "truncated": False, "executionModel": "stateless",
        "outcome": "exception" if err else "ok", "scriptName": "cf-ssai", "entrypoint": "default",
        "scriptTags": [], "scriptVersion": {"id": VERSIONS[i % 10 == 0], "tag": "v42", "message": "canary"},
        "diagnosticsChannelEvents": [],
        "exceptions": [{"name": "Error", "message": "upstream timeout", "timestamp": t,
                        "stack": "Error: upstream timeout\n    at fetch (index.js:3:11)"}] if err else [],
        "logs": logs, "eventTimestamp": t, "event": event,
    }


def generate(n: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    t0 = 1_795_353_860_000
    parts = [json.dumps(make_event(rnd, i, t0 + i), indent=4, ensure_ascii=False) + "\n" for i in range(n)]
    return "".join(parts).encode()


def ingest(data: bytes, chunk: int = 65536) -> tuple[float, int, int]:
    decoder = TailDecoder()
    signals = WorkerSignals("cf-ssai")
    guards = default_guards()
    add = signals.add
    clock = time.perf_counter
    start = last_eval = clock()
    for i in range(0, len(data), chunk):
        events = decoder.feed(data[i:i + chunk])
        for ev in events:
            add(ev)
        # as the engine does: judge the guards at most every 20 ms (EngineOptions.eval_interval_s)
        if events and clock() - last_eval >= 0.02:
            last_eval = clock()
            for guard in guards:
                guard.evaluate(signals, None, signals.latest_ms)
    decoder.flush()
    elapsed = time.perf_counter() - start
    errors = signals.window(0, signals.latest_ms + 1).errors
    return elapsed, decoder.events, errors


def timed(cmd: str, path: str) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, shell=True, stdin=open(path, "rb"), capture_output=True, check=True).stdout
    return time.perf_counter() - start, out.decode().strip()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    data = generate(n)
    print(f"{n} events, {len(data) / 1e6:.1f} MB ({len(data) / n:.0f} B/event)")
    best = min(ingest(data) for _ in range(3))
    elapsed, events, errors = best
    ours = events / elapsed
    print(f"rollout ingest: {ours:,.0f} events/s ({elapsed:.2f} s, {events} events, {errors} errors)")
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(data)
        f.flush()
        if shutil.which("jq"):
            jq_s, jq_out = timed("jq -c 'select(.outcome != \"ok\")' | wc -l", f.name)
            print(f"jq: {n / jq_s:,.0f} events/s ({jq_s:.2f} s, {jq_out} non-ok) -> rollout/jq = {jq_s / elapsed:.1f}x")
        if shutil.which("grep"):
            g_s, g_out = timed("grep -c '\"outcome\": \"exception\"'", f.name)
            print(f"grep -c: {n / g_s:,.0f} events/s ({g_s:.2f} s, {g_out}) -> rollout/grep = {g_s / elapsed:.2f}x")


if __name__ == "__main__":
    main()
