"""Alerts: a JSON webhook (Slack-compatible: it has a ``text`` field) on breach, recovery, a long blind
spell and rollback.

The monitors never wait for the network.  ``AlertSink.send_nowait`` puts an :class:`Alert` into a bounded
memory stream and returns; one task (``AlertSink.run``) posts them in order, retrying each with
exponential backoff.  When the stream is full the new alert is dropped and counted; a delivery that
fails every attempt is counted too.  ``alerts_from_event`` turns engine events into alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .bus import Breach, EngineEvent, GuardState, RollbackDone
from .view import breach_words

__all__ = ["Alert", "AlertKind", "AlertSink", "AlertStats", "AlertTracker"]

logger = logging.getLogger("rollout.alerts")

AlertKind = Literal["breach", "recovery", "blind", "rollback"]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert; ``payload()`` is the webhook body."""

    kind: AlertKind
    worker: str
    text: str
    at: float
    guard: str | None = None
    action: str | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    fields: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        data = asdict(self)
        data["source"] = "rollout"
        return data


@dataclass(slots=True)
class AlertStats:
    """Delivery counts (owned by the sink's task; read by the summary)."""

    queued: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    attempts: int = 0
    last_error: str = ""


class AlertTracker:
    """Turns engine events into alerts: a breach, a guard back to ok after a breach, a rollback.

    Args:
        clock: the time an alert carries.
        defer: breaches for which ``from_event`` returns no alert (the caller sends one later with
            :meth:`breach_alert`, e.g. once it knows the command that rolls back by hand); a deferred
            breach still counts for its recovery alert.
    """

    def __init__(self, clock: Callable[[], float], defer: Callable[[Breach], bool] | None = None) -> None:
        self.clock = clock
        self.defer = defer
        self._breached: set[tuple[str, str]] = set()

    def breach_alert(self, breach: Breach, *, note: str | None = None, hint: str = "") -> Alert:
        """The alert of a breach; the text says what rollout does, in the view's words (:func:`breach_words`:
        "rolling back", "alert — not rolled back", "alert"), or ``note`` when given ("alert — not rolled back
        (why)"); ``hint`` follows the evidence (the exact command to roll back by hand)."""
        severity: Literal["info", "warning", "critical"] = "critical" if breach.action == "rollback" else "warning"
        doing = note or breach_words(breach)
        fields: dict[str, Any] = {"value": breach.value, "threshold": breach.threshold, "doing": doing}
        if note:
            fields["note"] = note
        if hint:
            fields["hint"] = hint
        text = (f":rotating_light: {breach.guard} breached on {breach.worker} ({doing}): "
                f"{breach.detail}" + (f"; {hint}" if hint else ""))
        return Alert("breach", breach.worker, text, self.clock(), guard=breach.guard, action=breach.action,
                     severity=severity, fields=fields)

    def from_event(self, event: EngineEvent) -> Alert | None:
        if isinstance(event, Breach):
            self._breached.add((event.worker, event.guard))
            if self.defer is not None and self.defer(event):
                return None
            return self.breach_alert(event)
        if isinstance(event, GuardState) and event.state == "ok" and (event.worker, event.guard) in self._breached:
            self._breached.discard((event.worker, event.guard))
            return Alert("recovery", event.worker, f":white_check_mark: {event.guard} on {event.worker} recovered: "
                         f"{event.detail}", self.clock(), guard=event.guard, action=event.action, severity="info",
                         fields={"value": event.value, "threshold": event.threshold})
        if isinstance(event, RollbackDone):
            verdict = "verified" if event.verified else "NOT VERIFIED"
            return Alert("rollback", event.worker, f":leftwards_arrow_with_hook: rolled {event.worker} back to "
                         f"{event.to_version}: {verdict} ({event.detail})", self.clock(),
                         severity="warning" if event.verified else "critical",
                         fields={"to_version": event.to_version, "verified": event.verified})
        return None


class AlertSink:
    """Posts alerts to a webhook from its own task; never blocks the caller.

    Args:
        url: the webhook (Slack incoming webhooks accept the body as is).
        http: a client to post with (tests pass one with a mock transport); default: a new one.
        buffer: alerts waiting at most; beyond it new alerts are dropped (counted).
        attempts: tries per alert; waits ``backoff_s * 2**n`` between them.
        on_result: called with ``(kind, "sent" | "failed" | "dropped")`` (the metrics count them).
    """

    def __init__(
        self, url: str | None, *, http: httpx.AsyncClient | None = None, buffer: int = 100, attempts: int = 4,
        backoff_s: float = 0.5, timeout_s: float = 5.0, on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        self.url = url
        self._http = http
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.on_result = on_result
        self.stats = AlertStats()
        self.history: list[Alert] = []
        self._send: MemoryObjectSendStream[Alert]
        self._receive: MemoryObjectReceiveStream[Alert]
        self._send, self._receive = anyio.create_memory_object_stream[Alert](buffer)

    def send_nowait(self, alert: Alert) -> None:
        """Queue an alert; drop it (and count) when the queue is full or closed."""
        if len(self.history) < 1000:
            self.history.append(alert)
        if self.url is None:
            return
        try:
            self._send.send_nowait(alert)
            self.stats.queued += 1
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.stats.dropped += 1
            self._count(alert.kind, "dropped")

    def close(self) -> None:
        """No more alerts: ``run`` returns once the queue is drained."""
        self._send.close()

    async def run(self) -> None:
        """Deliver queued alerts until ``close`` (cancel it to stop at once)."""
        http = self._http or httpx.AsyncClient(timeout=self.timeout_s, trust_env=False)
        try:
            async with self._receive:
                async for alert in self._receive:
                    await self._deliver(http, alert)
        finally:
            if self._http is None:
                with anyio.CancelScope(shield=True):
                    await http.aclose()

    async def _deliver(self, http: httpx.AsyncClient, alert: Alert) -> None:
        assert self.url is not None
        for attempt in range(self.attempts):
            if attempt:
                await anyio.sleep(self.backoff_s * 2 ** (attempt - 1))
            self.stats.attempts += 1
            try:
                response = await http.post(self.url, json=alert.payload(), timeout=self.timeout_s)
            except httpx.HTTPError as exc:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:200]
                continue
            if response.is_success:
                self.stats.sent += 1
                self._count(alert.kind, "sent")
                return
            self.stats.last_error = f"HTTP {response.status_code}"
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                break  # the receiver refuses this body: retrying will not help
        self.stats.failed += 1
        self._count(alert.kind, "failed")
        logger.warning("alert %s for %s not delivered: %s", alert.kind, alert.worker, self.stats.last_error)

    def _count(self, kind: str, result: str) -> None:
        if self.on_result is not None:
            self.on_result(kind, result)
