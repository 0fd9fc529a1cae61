"""HTTP probes: status, body contains/regex, header, JSON field, latency bound, POST with a body."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from rollout import _check
from rollout.context import PhaseContext
from rollout.phase import caller_location
from rollout.probe import Probe, ProbeResult

_MISSING = object()
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True, kw_only=True)
class HttpProbe(Probe):
    """Request ``path`` on the worker and judge the response.  Subclasses override :meth:`judge`."""

    path: str = "/"
    method: str = "GET"
    json_body: Any = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: the status (or one of the statuses) the response must have; None: any
    expect_status: int | tuple[int, ...] | None = 200
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.defined_at is None:
            object.__setattr__(self, "defined_at", caller_location(3))
        kind, where = type(self).__name__, self.defined_at
        _check.expect_str(self.path, f"{kind}(path=...)", nonempty=True,
                          expected="a path on the worker such as '/health'", where=where)
        if "://" in self.path:
            _check.fail(f"{kind}(path=...) must be a path on the worker such as '/health', got the URL "
                        f"{self.path!r}; probe URLs are written against the worker name, the target resolves them",
                        where)
        method = _check.expect_str(self.method, f"{kind}(method=...)", nonempty=True, where=where).upper()
        _check.expect_choice(method, _METHODS, f"{kind}(method=...)", where)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "headers", _check.expect_str_mapping(self.headers, f"{kind}(headers=...)",
                                                                      where=where))
        _check.expect_str(self.body, f"{kind}(body=...)", optional=True, where=where)
        if self.body is not None and self.json_body is not None:
            _check.fail(f"{kind}(...) takes json=... or body=..., not both", where)
        _check.expect_json(self.json_body, f"{kind}(json=...)", where)
        _check.expect_number(self.timeout_s, f"{kind}(timeout_s=...)", low=0, low_open=True,
                             expected="a number of seconds > 0", where=where)
        _check.expect_str(self.name, f"{kind}(name=...)", where=where)
        super().__post_init__()

    def default_name(self) -> str:
        return f"{type(self).__name__} {self.method} {self.path}"

    def expected_statuses(self) -> tuple[int, ...]:
        """The statuses that pass (empty: any)."""
        if self.expect_status is None:
            return ()
        return self.expect_status if isinstance(self.expect_status, tuple) else (self.expect_status,)

    def judge(self, response: httpx.Response, seconds: float) -> tuple[bool, str]:
        return True, ""

    async def check(self, ctx: PhaseContext, worker: str) -> ProbeResult:
        url = ctx.url(worker, self.path)
        started = anyio.current_time()
        try:
            response = await ctx.http.request(
                self.method, url, headers=self.headers, timeout=self.timeout_s,
                content=self.body.encode() if self.body is not None else None,
                json=self.json_body if self.body is None else None,
            )
        except httpx.HTTPError as exc:
            return ProbeResult(False, f"{type(exc).__name__}: {exc}", anyio.current_time() - started, url)
        seconds = anyio.current_time() - started
        saw = f"HTTP {response.status_code}"
        allowed = self.expected_statuses()
        if allowed and response.status_code not in allowed:
            excerpt = response.text[:120].replace("\n", " ")
            wanted = str(allowed[0]) if len(allowed) == 1 else "one of " + ", ".join(str(c) for c in allowed)
            return ProbeResult(False, f"{saw}, expected {wanted}; body: {excerpt!r}", seconds, url)
        ok, detail = self.judge(response, seconds)
        return ProbeResult(ok, f"{saw}; {detail}" if detail else saw, seconds, url)


@dataclass(frozen=True, kw_only=True, init=False)
class Status(HttpProbe):
    """The response status is ``status`` (default 200), or one of them: ``Status("/", (200, 204))``."""

    def __init__(self, path: str, status: int | Collection[int] = 200, *, method: str = "GET",
                 headers: dict[str, str] | None = None, name: str = "") -> None:
        _init(self, name=name, path=path, method=method, headers=headers,
              expect_status=_check.expect_http_status(status, "Status(status=...)"))


@dataclass(frozen=True, kw_only=True, init=False)
class BodyContains(HttpProbe):
    """The body contains ``text``."""

    text: str = ""

    def __init__(self, path: str, text: str, *, status: int | Collection[int] | None = 200, name: str = "") -> None:
        _check.expect_str(text, "BodyContains(text=...)", nonempty=True)
        _init(self, name=name, path=path, expect_status=_status("BodyContains", status), text=text)

    def judge(self, response: httpx.Response, seconds: float) -> tuple[bool, str]:
        found = self.text in response.text
        return found, f"body {'contains' if found else 'lacks'} {self.text!r} ({len(response.text)} chars)"


@dataclass(frozen=True, kw_only=True, init=False)
class BodyMatches(HttpProbe):
    """The body matches the regular expression ``pattern``."""

    pattern: str = ""

    def __init__(self, path: str, pattern: str, *, status: int | Collection[int] | None = 200, name: str = "") -> None:
        _check.expect_str(pattern, "BodyMatches(pattern=...)", nonempty=True,
                          expected="a regular expression (a non-empty str)")
        try:
            re.compile(pattern)
        except re.error as exc:
            problem = str(exc)
        else:
            problem = ""
        if problem:
            _check.fail(f"BodyMatches(pattern=...) must be a regular expression, got {pattern!r}: {problem}")
        _init(self, name=name, path=path, expect_status=_status("BodyMatches", status), pattern=pattern)

    def judge(self, response: httpx.Response, seconds: float) -> tuple[bool, str]:
        match = re.search(self.pattern, response.text)
        return (match is not None,
                f"matched {match.group(0)[:60]!r}" if match else f"no match for /{self.pattern}/")


@dataclass(frozen=True, kw_only=True, init=False)
class Header(HttpProbe):
    """Header ``header`` is present (and equals ``equals`` / contains ``contains`` when given)."""

    header: str = ""
    equals: str | None = None
    contains: str | None = None

    def __init__(self, path: str, header: str, *, equals: str | None = None, contains: str | None = None,
                 status: int | Collection[int] | None = 200, name: str = "") -> None:
        _check.expect_str(header, "Header(header=...)", nonempty=True, expected="a header name such as 'cache-control'")
        _check.expect_str(equals, "Header(equals=...)", optional=True)
        _check.expect_str(contains, "Header(contains=...)", optional=True)
        _init(self, name=name, path=path, expect_status=_status("Header", status), header=header, equals=equals,
              contains=contains)

    def judge(self, response: httpx.Response, seconds: float) -> tuple[bool, str]:
        value = response.headers.get(self.header)
        if value is None:
            return False, f"no {self.header} header"
        ok = (self.equals is None or value == self.equals) and (self.contains is None or self.contains in value)
        return ok, f"{self.header}: {value[:80]}"


@dataclass(frozen=True, kw_only=True, init=False)
class JsonField(HttpProbe):
    """A field of the JSON body (dotted path, list indexes allowed: ``"items.0.id"``) equals ``equals``."""

    field_path: str = ""
    equals: Any = _MISSING

    def __init__(self, path: str, field_path: str, equals: Any = _MISSING, *, method: str = "GET",
                 json: Any = None, status: int | Collection[int] | None = 200, name: str = "") -> None:
        _check.expect_str(field_path, "JsonField(field_path=...)", nonempty=True,
                          expected="a dotted field path such as 'items.0.id'")
        _init(self, name=name, path=path, method=method, json_body=json, expect_status=_status("JsonField", status),
              field_path=field_path, equals=equals)

    def judge(self, response: httpx.Response, seconds: float) -> tuple[bool, str]:
        try:
            value: Any = response.json()
        except json.JSONDecodeError:
            return False, f"body is not JSON: {response.text[:80]!r}"
        for part in self.field_path.split("."):
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            elif isinstance(value, dict) and part in value:
                value = value[part]
            else:
                return False, f"no field {self.field_path!r}"
        if self.equals is _MISSING:
            return True, f"{self.field_path}={value!r}"
        return value == self.equals, f"{self.field_path}={value!r} (want {self.equals!r})"


@dataclass(frozen=True, kw_only=True, init=False)
class Latency(HttpProbe):
    """The response arrives within ``max_ms``."""

    max_ms: float = 1000.0

    def __init__(self, path: str, max_ms: float, *, status: int | Collection[int] | None = 200, name: str = "") -> None:
        _check.expect_number(max_ms, "Latency(max_ms=...)", low=0, low_open=True,
                             expected="a number of milliseconds > 0")
        _init(self, name=name, path=path, expect_status=_status("Latency", status), max_ms=max_ms)

    def judge(self, response: httpx.Response, seconds: float) -> tuple[bool, str]:
        ms = seconds * 1000
        return ms <= self.max_ms, f"{ms:.0f} ms (bound {self.max_ms:.0f} ms)"


@dataclass(frozen=True, kw_only=True, init=False)
class Post(HttpProbe):
    """POST a JSON (or text) body and expect ``expect`` (default 200); optionally a text in the reply."""

    expect_text: str | None = None

    def __init__(self, path: str, json: Any = None, *, body: str | None = None, expect: int | Collection[int] = 200,
                 expect_text: str | None = None, headers: dict[str, str] | None = None, name: str = "") -> None:
        _check.expect_str(expect_text, "Post(expect_text=...)", optional=True)
        _init(self, name=name, path=path, method="POST", json_body=json, body=body,
              expect_status=_check.expect_http_status(expect, "Post(expect=...)"), expect_text=expect_text,
              headers=headers)

    def judge(self, response: httpx.Response, seconds: float) -> tuple[bool, str]:
        if self.expect_text is None:
            return True, f"{len(response.content)} bytes"
        found = self.expect_text in response.text
        return found, f"reply {'contains' if found else 'lacks'} {self.expect_text!r}"


def _status(kind: str, status: object) -> int | tuple[int, ...] | None:
    return _check.expect_http_status(status, f"{kind}(status=...)", optional=True)


def _init(probe: HttpProbe, **values: Any) -> None:
    """Set fields on a frozen probe (defaults first), then run the base post-init."""
    from dataclasses import MISSING, fields

    for f in fields(probe):
        if f.name in values:
            continue
        if f.default is not MISSING:
            object.__setattr__(probe, f.name, f.default)
        elif f.default_factory is not MISSING:
            object.__setattr__(probe, f.name, f.default_factory())
    for key, value in values.items():
        object.__setattr__(probe, key, value)
    object.__setattr__(probe, "defined_at", None)
    probe.__post_init__()
