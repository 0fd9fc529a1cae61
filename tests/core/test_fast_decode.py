"""The decoder's fast path (a run of wrangler's objects decoded in one call) against the exact path.

The exact path is :class:`TailDecoder` with its fast path turned off: the framer cuts each object, and each
is decoded alone.  On the same bytes, split the same way, both must give the same events, the same counts
and the same buffered tail, whatever the input holds.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from rollout.events import TailEvent, _wire_decoder, event_from_wire, events_from_wires
from rollout.framing import TailDecoder

from .helpers import NEW, T0, pretty, trace


class ExactDecoder(TailDecoder):
    """The decoder as it is without its fast path."""

    def _decode_run(self, buf: bytes) -> list[TailEvent] | None:
        return None


class CountingDecoder(TailDecoder):
    """The decoder, counting how many events its fast path produced."""

    fast = 0

    def _decode_run(self, buf: bytes) -> list[TailEvent] | None:
        before = self.events
        out = super()._decode_run(buf)
        if out is not None:
            self.fast += self.events - before
        return out


def state(d: TailDecoder) -> tuple[Any, ...]:
    return (d.events, d.parse_errors, d.malformed, d.garbage_lines, d.truncated_objects, d.skipped_bytes,
            d.last_error, d.framer.objects, d.framer._buf)


def run(decoder: TailDecoder, data: bytes, cuts: list[int]) -> tuple[list[TailEvent], list[tuple[Any, ...]]]:
    """Feed ``data`` cut at ``cuts``; the events, and the decoder's state after every feed and the flush."""
    events: list[TailEvent] = []
    states = []
    last = 0
    for cut in [*cuts, len(data)]:
        events += decoder.feed(data[last:cut])
        states.append(state(decoder))
        last = cut
    events += decoder.flush()
    states.append(state(decoder))
    return events, states


def same(data: bytes, cuts: list[int]) -> CountingDecoder:
    fast = CountingDecoder()
    assert run(fast, data, cuts) == run(ExactDecoder(), data, cuts), cuts
    return fast


ITEMS = [
    trace(t=T0, logs=[["héllo 😀", {"k": "x\n}\n{"}], ["one line"]]),
    trace(t=T0 + 1, outcome="exception", status=None, exceptions=[("Error", "boom\n}\n{")]),
    trace(t=T0 + 2, event={"type": "overload", "message": "sampling"}),
    trace(t=T0 + 3, status=503, version=NEW, url="https://w.example/a#frag?b", logs=[["x", 1, None]]),
    trace(t=None, version=None, event={"cron": "* * * * *"}, url="/relative"),
]
CLEAN = pretty(*ITEMS)

GARBAGE_CASES = {
    "garbage lines": b"\xe2\x96\xb2 [WARNING] something\n" + pretty(ITEMS[0]) + b"\n\nnot json\n" + pretty(ITEMS[1]),
    "truncated then new": pretty(ITEMS[0])[:150] + pretty(ITEMS[1], ITEMS[2]),
    "cut glued to a 4-space key": pretty(ITEMS[0])[:-40] + pretty(ITEMS[1], ITEMS[2]),
    "not a trace item": pretty(ITEMS[0]) + b'{\n    "outcome": 3\n}\n' + pretty(ITEMS[1]),
    "float and huge times": pretty(ITEMS[0]) + pretty({**ITEMS[1], "eventTimestamp": 1.5e12, "wallTime": 2.5})
    + b'{\n    "outcome": "ok",\n    "eventTimestamp": 1e400\n}\n' + pretty(ITEMS[2]),
    "compact lines": b"".join(json.dumps(i).encode() + b"\n" for i in ITEMS[:2]) + pretty(ITEMS[2]),
    "two compact on one line": pretty(ITEMS[0]) + json.dumps(ITEMS[1]).encode() + json.dumps(ITEMS[2]).encode()
    + b"\n" + pretty(ITEMS[3]),
    "close and open on one line": pretty(ITEMS[0])[:-1] + b" " + pretty(ITEMS[1]) + pretty(ITEMS[2]),
    "open with a compact first line": pretty(ITEMS[0]) + b'{"outcome": "ok",\n    "scriptName": "w"\n}\n'
    + pretty(ITEMS[1]),
    "boundary not followed by a newline": pretty(ITEMS[0]) + b'{"outcome": "ok"}\n' + pretty(ITEMS[1]),
    "unindented nesting": pretty(ITEMS[0]) + b'{\n"outcome": "ok",\n"event": {\n"request": null\n},\n"logs": []\n}\n'
    + pretty(ITEMS[1]),
    "unindented array of objects": pretty(ITEMS[0])
    + b'{\n"outcome": "ok",\n"logs": [{"message": ["a"]}\n,\n{"message": ["b"]}\n]\n}\n' + pretty(ITEMS[1]),
    "comma made valid by the boundary": pretty(ITEMS[0])
    + b'{\n"outcome": "ok",\n"logs": [{\n"message": ["a"]\n}\n{\n"message": ["b"]\n}]\n}\n' + pretty(ITEMS[1]),
    "empty objects": pretty(ITEMS[0]) + b"{\n}\n{\n}\n" + pretty(ITEMS[1]),
    "crlf": pretty(ITEMS[0]).replace(b"\n", b"\r\n") + pretty(ITEMS[1]),
    "two-space indent": json.dumps(ITEMS[0], indent=2).encode() + b"\n" + pretty(ITEMS[1]),
    "blank lines between": pretty(ITEMS[0]) + b"\n\n   \n" + pretty(ITEMS[1]),
    "garbage after the close": pretty(ITEMS[0])[:-1] + b"junk\n" + pretty(ITEMS[1]),
    "a stray close line": pretty(ITEMS[0]) + b"}\n" + pretty(ITEMS[1]),
    "cut at the end": pretty(ITEMS[0], ITEMS[1]) + pretty(ITEMS[2])[:-30],
    "an exception message that is an object": pretty(ITEMS[0])
    + pretty({**ITEMS[1], "exceptions": [{"name": "Error", "message": {"complex": "error"}}]}) + pretty(ITEMS[2]),
    "a status that is a str": pretty(ITEMS[0], {**ITEMS[3], "event": {"request": {"url": "/x"},
                                                                       "response": {"status": "503"}}}, ITEMS[1]),
    "nested too deeply": pretty(ITEMS[0]) + b'{\n    "outcome": "ok",\n    "logs": [{"message": '
    + b"[" * 1500 + b"]" * 1500 + b"}]\n}\n" + pretty(ITEMS[1]),
}


def test_clean_input_takes_the_fast_path_and_matches() -> None:
    fast = same(CLEAN, [])
    assert fast.events == len(ITEMS) and fast.fast == len(ITEMS)
    assert fast.malformed == 0


def test_clean_input_split_at_every_byte_matches() -> None:
    for i in range(len(CLEAN) + 1):
        same(CLEAN, [i])


def test_clean_input_one_byte_at_a_time_matches() -> None:
    same(CLEAN, list(range(1, len(CLEAN))))


@pytest.mark.parametrize("name", sorted(GARBAGE_CASES))
def test_malformed_input_split_at_every_byte_matches(name: str) -> None:
    data = GARBAGE_CASES[name]
    for i in range(len(data) + 1):
        same(data, [i])


def test_everything_mixed_in_random_chunks_matches() -> None:
    rnd = random.Random(7)
    parts = [pretty(i) for i in ITEMS] * 4 + list(GARBAGE_CASES.values())
    for _ in range(30):
        rnd.shuffle(parts)
        data = b"".join(parts)
        cuts = sorted(rnd.sample(range(1, len(data)), rnd.randint(1, 40)))
        same(data, cuts)


def test_a_long_clean_stream_is_decoded_by_the_fast_path() -> None:
    """In big reads of wrangler's output, every event but those of the last partial object come fast."""
    items = [trace(t=T0 + i, outcome="exception" if i % 7 == 0 else "ok", logs=[[f"line {i}"]]) for i in range(500)]
    data = pretty(*items)
    cuts = list(range(65536, len(data), 65536))
    fast = same(data, cuts)
    assert fast.events == 500
    assert fast.fast >= 500 - len(cuts) - 1


def test_one_huge_read_is_decoded_by_the_fast_path_in_pieces() -> None:
    """A read longer than the 8 MiB object bound (replay_bytes([whole_file])) is decoded in 1 MiB pieces, so
    the fast path's runs stay under the bound: nearly every event comes fast, the same as the exact path."""
    items = [trace(t=T0 + i, logs=[[f"line {i}", "x" * 2000]]) for i in range(4000)]
    data = pretty(*items)
    assert len(data) > 8 << 20
    fast = same(data, [])
    assert fast.events == 4000
    assert fast.fast >= 4000 - len(data) // (1 << 20) - 2


def test_batch_conversion_equals_one_at_a_time() -> None:
    data = pretty(*ITEMS, {**ITEMS[1], "eventTimestamp": 1.5e12, "wallTime": 2.5, "truncated": None})
    wires = _wire_decoder.decode_lines(data)
    assert events_from_wires(wires) == [event_from_wire(w) for w in wires]
    assert [e.path for e in events_from_wires(wires)] == ["/api", "/api", None, "/a", None, "/api"]
