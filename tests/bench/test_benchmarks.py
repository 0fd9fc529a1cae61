"""The benchmarks still run, at a tiny size (no timing is asserted: benchmarks are not tests)."""

from __future__ import annotations

import shutil

import pytest

from benchmarks import __main__ as bench
from benchmarks import ingest, latency, memory
from benchmarks.synth import Templates, generate, stream
from rollout.framing import TailDecoder


def test_synthetic_input_is_wrangler_output() -> None:
    """The generator prints 4-space-indented objects one after another, which decode with the right errors."""
    data = generate(500, error_rate=0.1)
    assert data.startswith(b'{\n    "wallTime": ')
    decoder = TailDecoder()
    events = decoder.feed(data) + decoder.flush()
    assert len(events) == 500 and decoder.malformed == 0
    assert sum(e.is_error for e in events) == sum(Templates(error_rate=0.1).errors[:500])
    assert events[-1].timestamp_ms - events[0].timestamp_ms == int(499 * 1000 / 5000)
    assert b"".join(stream(Templates(), 100, 5000.0)) == generate(100)


def test_ingest_measures_every_path() -> None:
    """Pipe, replay, the command, and jq/grep when installed, all see the same events."""
    timings = ingest.run(generate(300), 300, repeats=1)
    names = [t.name for t in timings]
    assert names[:3] == ["rollout, pipe", "rollout replay (in-process)", "rollout replay (command)"]
    assert all(t.events == 300 and t.seconds > 0 for t in timings)
    if shutil.which("jq"):
        assert any(n.startswith("jq") for n in names)


def test_latency_trial() -> None:
    """A detection trial finds the tripping event and measures a latency."""
    result = latency.run(1)
    assert len(result.latencies_ms) == 1
    assert result.p50 == result.p99


def test_memory_run_samples_rss() -> None:
    """The memory run replays lazily and samples RSS."""
    result = memory.run(0.002)
    assert result.events == int(0.002 * 3600 * 1000)
    assert len(result.samples) >= 2 and result.peak_mb > 0


def test_main_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """The command prints each figure it was asked for."""
    assert bench.main(["--quick", "--events", "300", "--trials", "1", "--hours", "0.002", "--skip", "e2e"]) == 0
    out = capsys.readouterr().out
    for needle in ("== ingest", "events/s", "== detection latency", "p99", "== memory", "slope"):
        assert needle in out
