"""Framing wrangler's multi-line JSON output, and decoding it."""

from __future__ import annotations

import json

import pytest

from rollout.framing import TailDecoder, TailFramer

from .helpers import T0, pretty, trace

ITEMS = [
    trace(t=T0, logs=[["héllo 😀", {"k": "x\n}\n{"}]]),
    trace(t=T0 + 1, outcome="exception", status=None, exceptions=[("Error", "boom")]),
    trace(t=T0 + 2, event={"type": "overload", "message": "sampling"}),
]
SAMPLE = pretty(*ITEMS)


def frame_all(data: bytes, cuts: list[int]) -> tuple[list[bytes], TailFramer]:
    framer = TailFramer()
    out: list[bytes] = []
    last = 0
    for cut in [*cuts, len(data)]:
        out += framer.feed(data[last:cut])
        last = cut
    out += framer.flush()
    return out, framer


def test_pretty_objects_are_framed() -> None:
    """Each 4-space object comes out whole, as its own bytes."""
    out, framer = frame_all(SAMPLE, [])
    assert [json.loads(o) for o in out] == ITEMS
    assert (framer.objects, framer.garbage_lines, framer.truncated_objects, framer.skipped_bytes) == (3, 0, 0, 0)


def test_split_at_every_byte_offset() -> None:
    """A read split anywhere, even inside a UTF-8 character, gives the same objects."""
    whole, _ = frame_all(SAMPLE, [])
    for i in range(len(SAMPLE) + 1):
        assert frame_all(SAMPLE, [i])[0] == whole, i


def test_split_into_single_bytes() -> None:
    """Feeding one byte at a time works too."""
    out, _ = frame_all(SAMPLE, list(range(1, len(SAMPLE))))
    assert [json.loads(o) for o in out] == ITEMS


def test_garbage_lines_between_objects() -> None:
    """Stray lines are skipped and counted."""
    data = b"\xe2\x96\xb2 [WARNING] something\n" + pretty(ITEMS[0]) + b"\n\nnot json\n" + pretty(ITEMS[1])
    for i in range(len(data) + 1):
        out, framer = frame_all(data, [i])
        assert [json.loads(o) for o in out] == ITEMS[:2]
        assert framer.garbage_lines == 2
        assert framer.skipped_bytes == len(b"\xe2\x96\xb2 [WARNING] something\n") + len(b"not json\n")


def test_compact_json_lines() -> None:
    """One object per line (jq -c, recordings) is framed, mixed with pretty objects."""
    compact = b"".join(json.dumps(i).encode() + b"\n" for i in ITEMS)
    data = compact + pretty(ITEMS[0]) + compact
    for i in range(0, len(data) + 1, 7):
        out, framer = frame_all(data, [i])
        assert [json.loads(o) for o in out] == ITEMS + ITEMS[:1] + ITEMS
        assert framer.garbage_lines == 0


def test_compact_last_line_without_newline_is_flushed() -> None:
    """The last object of a file without a final newline comes out at flush."""
    framer = TailFramer()
    assert framer.feed(b'{"outcome": "ok"}') == []
    assert framer.flush() == [b'{"outcome": "ok"}']
    framer = TailFramer()
    assert framer.feed(pretty(ITEMS[0]).rstrip()) == []
    assert [json.loads(o) for o in framer.flush()] == ITEMS[:1]


def test_truncated_object_then_a_new_one() -> None:
    """A cut object (wrangler killed mid-write) followed by a new object: the cut one is dropped."""
    first = pretty(ITEMS[0])
    cut_at_line = first[: first.index(b"\n", 40) + 1]    # cut after a whole line
    cut_mid_line = first[:57]                              # cut in the middle of a line
    for cut in (cut_at_line, cut_mid_line):
        data = cut + pretty(ITEMS[1], ITEMS[2])
        for i in range(len(data) + 1):
            out, framer = frame_all(data, [i])
            assert [json.loads(o) for o in out] == ITEMS[1:], (cut, i)
            assert framer.truncated_objects == 1
            assert framer.skipped_bytes == len(cut)


def test_truncated_object_at_end_of_stream() -> None:
    """An object still open at EOF is dropped and counted."""
    out, framer = frame_all(pretty(ITEMS[0]) + pretty(ITEMS[1])[:80], [])
    assert [json.loads(o) for o in out] == ITEMS[:1]
    assert framer.truncated_objects == 1


def test_reset_drops_the_partial_object() -> None:
    """reset() (the tail process restarted) forgets a partial object."""
    framer = TailFramer()
    framer.feed(pretty(ITEMS[0])[:100])
    framer.reset()
    assert framer.buffered == 0
    assert framer.truncated_objects == 1
    assert [json.loads(o) for o in framer.feed(pretty(ITEMS[1]))] == ITEMS[1:2]


@pytest.mark.parametrize("indent", [2, "\t"])
def test_other_indentations_and_crlf(indent: int | str) -> None:
    """jq's 2-space output, tabs and CRLF line ends are framed too."""
    text = "".join(json.dumps(i, indent=indent) + "\n" for i in ITEMS)
    for data in (text.encode(), text.replace("\n", "\r\n").encode()):
        out, framer = frame_all(data, [len(data) // 2])
        assert [json.loads(o) for o in out] == ITEMS
        assert framer.garbage_lines == 0


def test_oversized_unfinished_object_is_dropped() -> None:
    """An object that never closes cannot grow the buffer without bound."""
    framer = TailFramer(max_object_bytes=1000)
    framer.feed(b"{\n" + b'    "x": 1,\n' * 200)
    assert framer.buffered == 0
    assert (framer.oversized_objects, framer.truncated_objects, framer.garbage_lines) == (1, 0, 0)
    # the rest of it is skipped, not counted line by line; the next object comes through
    out = framer.feed(b'    "x": 1,\n' * 50 + b"}\n" + b'{\n    "outcome": "ok"\n}\n')
    assert out == [b'{\n    "outcome": "ok"\n}']
    assert (framer.oversized_objects, framer.truncated_objects, framer.garbage_lines) == (1, 0, 0)


def test_decoder_counts_malformed_objects_and_never_raises() -> None:
    """Objects that frame but do not parse are counted; good ones around them come through."""
    bad = b'{\n    "outcome": 5\n}\n' + b'{"not": "an event"}\n' + b"{ broken json }\n"
    data = pretty(ITEMS[0]) + bad + b"garbage\n" + pretty(ITEMS[1])
    for i in range(len(data) + 1):
        dec = TailDecoder()
        events = dec.feed(data[:i]) + dec.feed(data[i:]) + dec.flush()
        assert [e.timestamp_ms for e in events] == [T0, T0 + 1]
        assert (dec.events, dec.parse_errors, dec.garbage_lines) == (2, 3, 1)
        assert dec.malformed == 4
        assert dec.last_error is not None


def test_decoder_recovers_objects_glued_to_a_cut_one() -> None:
    """The decoder's fast path re-frames exactly when a candidate does not decode."""
    first = pretty(ITEMS[0])
    data = first[:57] + pretty(ITEMS[1]) + b"warning line\n" + pretty(ITEMS[2]) + first[:120] + b"\n" + first
    for i in range(0, len(data) + 1, 3):
        dec = TailDecoder()
        events = dec.feed(data[:i]) + dec.feed(data[i:]) + dec.flush()
        assert [e.timestamp_ms for e in events] == [T0 + 1, T0 + 2, T0], i
        assert (dec.parse_errors, dec.truncated_objects, dec.garbage_lines) == (0, 2, 1), i


def test_decoder_on_compact_lines() -> None:
    """The decoder reads compact recordings too."""
    dec = TailDecoder()
    events = dec.feed(b"".join(json.dumps(i).encode() + b"\n" for i in ITEMS))
    assert [e.kind for e in events] == ["fetch", "fetch", "overload"]
