"""HTTP probes: status, body contains/regex, header, JSON field, latency bound, POST with a body."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from rollout.context import PhaseContext
from rollout.probe import Probe, ProbeResult

_MISSING = object()


@dataclass(frozen=True, kw_only=True)
class HttpProbe(Probe):
    """Request ``path`` on the worker and judge the response.  Subclasses override :meth:`judge`."""

    path: str = "/"
    method: str = "GET"
    json_body: Any = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect_status: int | None = 200
    timeout_s: float = 10.0

    def default_name(self) -> str:
        return f"{type(self).__name__} {self.method} {self.path}"

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
        if self.expect_status is not None and response.status_code != self.expect_status:
            excerpt = response.text[:120].replace("\n", " ")
            return ProbeResult(False, f"{saw}, expected {self.expect_status}; body: {excerpt!r}", seconds, url)
        ok, detail = self.judge(response, seconds)
        return ProbeResult(ok, f"{saw}; {detail}" if detail else saw, seconds, url)


@dataclass(frozen=True, kw_only=True, init=False)
class Status(HttpProbe):
    """The response status is ``status`` (default 200)."""

    def __init__(self, path: str, status: int = 200, *, method: str = "GET", headers: dict[str, str] | None = None,
                 name: str = "") -> None:
        _init(self, name=name, path=path, method=method, expect_status=status, headers=headers or {})


@dataclass(frozen=True, kw_only=True, init=False)
class BodyContains(HttpProbe):
    """The body contains ``text``."""

    text: str = ""

    def __init__(self, path: str, text: str, *, status: int | None = 200, name: str = "") -> None:
        _init(self, name=name, path=path, expect_status=status, text=text)

    def judge(self, response: httpx.Response, seconds: float) -> tuple[bool, str]:
        found = self.text in response.text
        return found, f"body {'contains' if found else 'lacks'} {self.text!r} ({len(response.text)} chars)"


@dataclass(frozen=True, kw_only=True, init=False)
class BodyMatches(HttpProbe):
    """The body matches the regular expression ``pattern``."""

    pattern: str = ""

    def __init__(self, path: str, pattern: str, *, status: int | None = 200, name: str = "") -> None:
        re.compile(pattern)
        _init(self, name=name, path=path, expect_status=status, pattern=pattern)

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
                 status: int | None = 200, name: str = "") -> None:
        _init(self, name=name, path=path, expect_status=status, header=header, equals=equals, contains=contains)

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
                 json: Any = None, status: int | None = 200, name: str = "") -> None:
        _init(self, name=name, path=path, method=method, json_body=json, expect_status=status, field_path=field_path,
              equals=equals)

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

    def __init__(self, path: str, max_ms: float, *, status: int | None = 200, name: str = "") -> None:
        _init(self, name=name, path=path, expect_status=status, max_ms=max_ms)

    def judge(self, response: httpx.Response, seconds: float) -> tuple[bool, str]:
        ms = seconds * 1000
        return ms <= self.max_ms, f"{ms:.0f} ms (bound {self.max_ms:.0f} ms)"


@dataclass(frozen=True, kw_only=True, init=False)
class Post(HttpProbe):
    """POST a JSON (or text) body and expect ``expect`` (default 200); optionally a text in the reply."""

    expect_text: str | None = None

    def __init__(self, path: str, json: Any = None, *, body: str | None = None, expect: int = 200,
                 expect_text: str | None = None, headers: dict[str, str] | None = None, name: str = "") -> None:
        _init(self, name=name, path=path, method="POST", json_body=json, body=body, expect_status=expect,
              expect_text=expect_text, headers=headers or {})

    def judge(self, response: httpx.Response, seconds: float) -> tuple[bool, str]:
        if self.expect_text is None:
            return True, f"{len(response.content)} bytes"
        found = self.expect_text in response.text
        return found, f"reply {'contains' if found else 'lacks'} {self.expect_text!r}"


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
