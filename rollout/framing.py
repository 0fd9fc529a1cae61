"""Split the output of ``wrangler tail --format json`` into JSON objects, and decode them.

wrangler prints each trace item with ``JSON.stringify(event, null, 4)`` (WRANGLER.md §0 item 2): an object
starts with a line that is exactly ``{`` and ends with a line that is exactly ``}``; every line in between is
indented.  JSON strings cannot hold a raw newline, so ``"\\n}"`` can only be the closing line of a top-level
object and a line ``{`` can only open one.  The framer therefore finds boundaries with ``bytes.find`` over
the buffer instead of looking at every line in Python.

It also accepts, in the same stream:

* compact objects, one per line (``jq -c``, the simulator's recordings);
* any indentation (``jq .`` prints two spaces) and CRLF line ends;
* garbage lines between objects (a stray warning), counted in ``garbage_lines``;
* an object cut short because wrangler was killed mid-write, followed by a new one: the cut object is
  dropped and counted in ``truncated_objects``;
* an object (or line) longer than ``max_object_bytes``: dropped and counted in ``oversized_objects`` (a
  parse error for :class:`TailDecoder`), and the rest of it skipped up to the next line that starts with
  ``{``, so neither memory nor the counts grow with it.

Both classes are sans-IO: feed them bytes as they come, split anywhere (even inside a UTF-8 character),
and call ``flush()`` at end of input.

:class:`TailDecoder` has a fast path for wrangler's own layout: the complete objects of a read are decoded
by one msgspec call, with no boundary search in Python (see :meth:`TailDecoder._decode_run`).  It is taken
only when its result is provably the exact path's; any other input (garbage, cut objects, CRLF, compact
lines) goes through the framer as before, with the same events and counts.
"""

from __future__ import annotations

from typing import Final

from rollout.events import (
    DECODE_ERRORS,
    EventParseError,
    TailEvent,
    _wire_decoder,
    decode_event_as_json,
    event_from_wire,
    events_from_wires,
)

__all__ = ["TailDecoder", "TailFramer"]

_OPEN_LF: Final = b"\n{\n"          # a line "{" (LF ends)
_OPEN_CRLF: Final = b"\n{\r\n"      # a line "{" (CRLF ends)
_OPEN_4: Final = b'{\n    "'        # how a 4-space object opens, even glued to the tail of a cut object
_CLOSE: Final = b"\n}"              # the start of a line "}"
_CLOSE_OPEN: Final = b"\n}\n{"      # a line "}" and the next object's first byte: the usual boundary
_BOUNDARY: Final = b"\n}\n{\n"      # a line "}" then a line "{": how two of wrangler's objects meet
_PRETTY_OPEN: Final = b"{\n"
_FAST_HELD_MAX: Final = 1 << 20     # the fast path is not tried when more than this was held back
_FEED_MAX: Final = 1 << 20          # a longer chunk is decoded in pieces of this size
_NL: Final = 10
_CR: Final = 13


class TailFramer:
    """Cut a byte stream into complete top-level JSON objects.

    Args:
        max_object_bytes: an object or line longer than this is dropped (and counted), finished or not, so a
            stream that never closes its object cannot grow the buffer without bound.

    Attributes:
        objects: objects returned so far.
        garbage_lines: non-empty lines outside any object.
        truncated_objects: objects that were cut short and dropped.
        oversized_objects: objects longer than ``max_object_bytes``, dropped.
        skipped_bytes: bytes dropped, in garbage lines, truncated and oversized objects.
    """

    def __init__(self, max_object_bytes: int = 8 << 20) -> None:
        self.max_object_bytes = max_object_bytes
        self.objects = 0
        self.garbage_lines = 0
        self.truncated_objects = 0
        self.oversized_objects = 0
        self.skipped_bytes = 0
        self._buf = b""
        #: after an oversized object or line: 0 (not skipping), 1 (skipping lines until one that starts
        #: with "{"), 2 (skipping to the end of the current line first)
        self._skip = 0
        #: the held object (a pretty one, at the start of the buffer) has no closing line before this offset
        self._open_scanned = 0

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of an object or line."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add ``chunk`` and return the objects it completed, oldest first."""
        out: list[bytes] = []
        self._split(chunk, out, True)
        return out

    def flush(self) -> list[bytes]:
        """End of input: return what can still be completed and drop (and count) the rest."""
        out: list[bytes] = []
        self._split(b"\n", out, True)
        self._drop_rest()
        return out

    def reset(self) -> None:
        """Drop any partial object, e.g. when the process writing the stream was restarted."""
        self._drop_rest()

    def _drop_rest(self) -> None:
        rest = self._buf
        self._buf = b""
        self._skip = 0
        self._open_scanned = 0
        if rest.strip():
            self.skipped_bytes += len(rest)
            if rest[:1] == b"{":
                self.truncated_objects += 1
            else:
                self.garbage_lines += 1

    def _split(self, chunk: bytes, out: list[bytes], check: bool) -> None:
        """Append every complete object of buffer + ``chunk`` to ``out``; keep the unfinished tail.

        With ``check`` false (the decoder's fast path), boundaries are searched as ``"\n}\n{"``, which
        is faster to find than ``"\n}"``, and nothing is checked: a candidate may then hold a cut-off
        object, or two objects with garbage between them.  Such a candidate does not decode, and
        :class:`TailDecoder` re-frames it with ``check`` true, which is exact.
        """
        if self._skip:
            chunk = self._skip_rest(chunk)
        buf = self._buf + chunk if self._buf else chunk
        n = len(buf)
        limit = self.max_object_bytes
        pos = 0  # always at the start of a line
        find = buf.find
        append = out.append
        emitted = len(out)
        scanned = 0
        while pos < n:
            if buf[pos] == 123 and buf[pos + 1: pos + 2] == b"\n":  # a line "{": a pretty object opens
                start = pos + 1
            else:
                eol = find(b"\n", pos)
                if eol < 0:
                    break
                line = buf[pos:eol].strip()
                if line[:1] != b"{":
                    if line:
                        self.garbage_lines += 1
                        self.skipped_bytes += eol + 1 - pos
                    pos = eol + 1
                    continue
                if line[-1:] == b"}":  # a compact object
                    if check and len(line) > limit:
                        self.oversized_objects += 1
                        self.skipped_bytes += eol + 1 - pos
                    else:
                        append(line)
                    pos = eol + 1
                    continue
                if line != b"{" or buf[pos] != 123:  # a compact object cut short
                    if eol - pos > limit:
                        self.oversized_objects += 1
                    else:
                        self.truncated_objects += 1
                    self.skipped_bytes += eol + 1 - pos
                    pos = eol + 1
                    continue
                start = eol  # "{" followed by CR or blanks
            if pos == 0 and self._open_scanned:  # the held object was searched this far already
                start = max(start, self._open_scanned - 3)
            end = -1 if check else find(_CLOSE_OPEN, start)
            if end < 0:
                end = find(_CLOSE, start)
                if end < 0:
                    scanned = n - pos  # so a long object is not searched again for each read
                    break
            nxt = end + 2
            if nxt >= n:
                break
            if buf[nxt] == _NL:
                nxt += 1
            else:
                eol = find(b"\n", nxt)
                if eol < 0:
                    break
                if buf[nxt:eol].strip():  # "}" with something glued after it: keep the object
                    self.garbage_lines += 1
                    self.skipped_bytes += eol - nxt
                nxt = eol + 1
            if check:
                cut = _last_open(buf, pos, end)
                if cut > pos:
                    if cut - pos > limit:  # as if it had been held back past the bound
                        self.oversized_objects += 1
                    else:
                        self.truncated_objects += 1
                    self.skipped_bytes += cut - pos
                    pos = cut
                    continue
                if end + 2 - pos > limit:
                    self.oversized_objects += 1
                    self.skipped_bytes += nxt - pos
                    pos = nxt
                    continue
            append(buf[pos: end + 2])
            pos = nxt
        self.objects += len(out) - emitted
        self._open_scanned = scanned
        self._buf = buf[pos:] if pos < n else b""
        if len(self._buf) > limit:
            rest = self._buf
            self._buf = b""
            self._open_scanned = 0
            self.skipped_bytes += len(rest)
            if rest[:1] == b"{":
                self.oversized_objects += 1
            else:
                self.garbage_lines += 1
            self._skip = 1 if rest[-1:] == b"\n" else 2

    def _skip_rest(self, chunk: bytes) -> bytes:
        """Skipping the rest of an oversized object: the part of ``chunk`` from the first line that starts
        with ``{`` (and skipping ends), or nothing (and it goes on).  Skipped bytes are counted."""
        pos = 0
        n = len(chunk)
        if self._skip == 2:  # inside the line that was cut
            eol = chunk.find(b"\n")
            if eol < 0:
                self.skipped_bytes += n
                return b""
            pos = eol + 1
            self._skip = 1
        find = chunk.find
        while pos < n:
            if chunk[pos] == 123:
                self._skip = 0
                self.skipped_bytes += pos
                return chunk[pos:]
            eol = find(b"\n", pos)
            if eol < 0:
                self._skip = 2
                break
            pos = eol + 1
        self.skipped_bytes += n
        return b""


def _last_open(buf: bytes, pos: int, end: int) -> int:
    """Start of the last object opening in ``buf[pos:end]`` after the one at ``pos`` (``pos`` if none).

    An opening is a line ``{``, or ``{`` + newline + a 4-space-indented key glued to the end of a line cut
    short (a nested object's first key is indented deeper, so this only matches a top-level opening; it is
    only looked for when the object at ``pos`` itself is indented with 4 spaces, as wrangler prints).
    """
    cut = max(buf.rfind(_OPEN_LF, pos, end + 1), buf.rfind(_OPEN_CRLF, pos, end + 1)) + 1
    if buf.startswith(_OPEN_4, pos):
        cut = max(cut, buf.rfind(_OPEN_4, pos + 1, end))
    return cut if cut > pos else pos


class TailDecoder:
    """Bytes in, :class:`~rollout.events.TailEvent` values out.

    Malformed objects are counted in :attr:`parse_errors` (with the last message in :attr:`last_error`),
    never raised.  An object glued to the cut-off start of another is recovered and the cut part counted
    as truncated.  An object the typed decoder refuses is read leniently
    (:func:`rollout.events.decode_event_as_json`): kept when it is a trace item at all, and counted in
    :attr:`parse_warnings` when a field had an unexpected type.

    Bounds: an object longer than ``max_object_bytes`` (8 MiB) is a parse error, and so is one nested
    deeper than the decoder recurses (about 900 levels at Python's default recursion limit); the stream goes
    on with the next object either way.

    Attributes:
        events: events decoded so far.
        parse_warnings: events kept although a field had an unexpected type (with the last list of what was
            odd in :attr:`last_warning`).
        last_error: the message of the latest parse error.
    """

    def __init__(self, max_object_bytes: int = 8 << 20) -> None:
        self.framer = TailFramer(max_object_bytes)
        self.events = 0
        self.parse_warnings = 0
        self.last_warning: str | None = None
        self._errors = 0
        self._oversized = 0  # framer.oversized_objects already reported in last_error
        self._last_error: str | None = None

    @property
    def parse_errors(self) -> int:
        """Objects that were framed but are not trace items, or are over a bound (size, nesting)."""
        return self._errors + self.framer.oversized_objects

    @property
    def last_error(self) -> str | None:
        self._note_oversized()
        return self._last_error

    def _note_oversized(self) -> None:
        """The framer dropped an oversized object since the last look: that is the latest error."""
        oversized = self.framer.oversized_objects
        if oversized != self._oversized:
            self._oversized = oversized
            self._last_error = f"not a tail event: an object longer than {self.framer.max_object_bytes} bytes"

    @property
    def garbage_lines(self) -> int:
        return self.framer.garbage_lines

    @property
    def truncated_objects(self) -> int:
        return self.framer.truncated_objects

    @property
    def skipped_bytes(self) -> int:
        return self.framer.skipped_bytes

    @property
    def malformed(self) -> int:
        """Everything that was not a valid event: parse errors, garbage lines and truncated objects."""
        return self.parse_errors + self.framer.garbage_lines + self.framer.truncated_objects

    def feed(self, chunk: bytes) -> list[TailEvent]:
        """Add ``chunk`` and return the events it completed, oldest first."""
        if len(chunk) > _FEED_MAX:  # in pieces, so that the fast path's runs stay under the size bound
            out: list[TailEvent] = []
            for i in range(0, len(chunk), _FEED_MAX):
                out += self._feed(chunk[i:i + _FEED_MAX])
            return out
        return self._feed(chunk)

    def _feed(self, chunk: bytes) -> list[TailEvent]:
        framer = self.framer
        held = framer._buf
        buf = held + chunk if held else chunk
        framer._buf = b""
        # (a long held object is left to the framer, which remembers how far it searched it)
        if buf.startswith(_PRETTY_OPEN) and not framer._skip and len(held) < _FAST_HELD_MAX:
            out = self._decode_run(buf)
            if out is not None:
                return out
        objs: list[bytes] = []
        framer._split(buf, objs, False)
        return self._decode(objs)

    def _decode_run(self, buf: bytes) -> list[TailEvent] | None:
        """The fast path: decode the run of complete objects at the start of ``buf`` in one call.

        ``buf`` starts with a line ``{``.  Its complete part ends at the last ``"\n}\n{"`` or, when the
        object after that is already closed by a line ``}``, at that line.  msgspec's ``decode_lines`` reads
        the whitespace-separated objects of that part in one call, without looking for boundaries in Python.
        The result is used only when it is provably what the exact path (:meth:`TailFramer._split`, then one
        decode per object) gives for the same bytes:

        * in valid JSON a ``}`` at the start of a line is outside any string (a string cannot hold a raw
          newline), and a ``{`` can follow it across whitespace only where one top-level value ends and the
          next begins; so every ``"\n}\n{"`` is a boundary between two of the decoded objects;
        * hence when the part holds exactly ``len(objects) - 1`` occurrences of ``"\n}\n{\n"``, every
          boundary has that form, and the exact framer, which cuts at each ``"\n}\n{"``, cuts the same
          objects, each of which decodes alone to the same struct.  (Overlapping occurrences would need an
          object ``{\n}``, which lacks ``outcome`` and fails to decode.)
        * the part is at most ``max_object_bytes`` long, so none of its objects is over that bound.

        Returns None, with nothing counted, when any of it fails (malformed input, garbage between objects,
        a field the typed structs refuse, other layouts); the caller then runs the exact path on the same
        buffer.  Whatever follows the complete part is handed to the exact path, as it would be at that
        position.
        """
        n = len(buf)
        last = buf.rfind(_CLOSE_OPEN)
        close = buf.find(_CLOSE, last + 4 if last >= 0 else 1)
        if 0 <= close and close + 2 < n and buf[close + 2] == _NL:
            end = close + 2
        elif last >= 0:
            end = last + 2
        else:
            return None
        if end > self.framer.max_object_bytes:
            return None
        try:
            wires = _wire_decoder.decode_lines(memoryview(buf)[:end])
            if len(wires) != buf.count(_BOUNDARY, 0, end) + 1:
                return None
            out = events_from_wires(wires)
        except DECODE_ERRORS:
            return None
        self.framer.objects += len(out)
        self.framer._open_scanned = 0  # what the framer searched of the held part is decoded now
        self.events += len(out)
        if end + 1 < n:
            objs: list[bytes] = []
            self.framer._split(buf[end + 1:], objs, False)
            if objs:
                out += self._decode(objs)
        return out

    def flush(self) -> list[TailEvent]:
        """End of input: decode what can still be completed."""
        objs: list[bytes] = []
        self.framer._split(b"\n", objs, False)
        self.framer._drop_rest()
        return self._decode(objs)

    def reset(self) -> None:
        """Drop any partial object (call it when the writing process restarts)."""
        self.framer.reset()

    def _decode(self, objs: list[bytes]) -> list[TailEvent]:
        out: list[TailEvent] = []
        append = out.append
        decode = _wire_decoder.decode
        convert = event_from_wire
        limit = self.framer.max_object_bytes
        for raw in objs:
            if len(raw) > limit:  # maybe one oversized object, maybe several: the exact framer tells
                self._recover(raw, out)
                continue
            try:
                append(convert(decode(raw)))
            except DECODE_ERRORS:
                self._recover(raw, out)
        self.events += len(out)
        return out

    def _recover(self, raw: bytes, out: list[TailEvent]) -> None:
        """Re-frame a candidate that did not decode, exactly, and decode what it holds (leniently)."""
        exact = TailFramer(self.framer.max_object_bytes)
        parts = exact.feed(raw + b"\n")
        parts += exact.flush()
        framer = self.framer
        framer.garbage_lines += exact.garbage_lines
        framer.truncated_objects += exact.truncated_objects
        framer.oversized_objects += exact.oversized_objects
        framer.skipped_bytes += exact.skipped_bytes
        if parts == [raw]:
            self._lenient(raw, out)
            return
        for part in parts:
            try:
                out.append(event_from_wire(_wire_decoder.decode(part)))
            except DECODE_ERRORS:
                self._lenient(part, out)

    def _lenient(self, raw: bytes, out: list[TailEvent]) -> None:
        """One object the typed decoder refused: keep it when it is a trace item, else count an error."""
        try:
            event, odd = decode_event_as_json(raw)
        except EventParseError as exc:
            self._errors += 1
            self._note_oversized()
            self._last_error = str(exc)
            return
        out.append(event)
        if odd:
            self.parse_warnings += 1
            text = "; ".join(odd)
            self.last_warning = text if len(text) <= 300 else text[:297] + "..."
