"""The one view that owns the terminal.

Everything the engine does arrives here as events on the bus.  ``LiveView`` draws a rich ``Live``
screen (refreshed by one task, never by rich's own thread); ``PlainView`` writes one line per event
for CI logs.  A prompt (a ``Gate``) stops the screen first, and lines that arrive while a person is
typing are held back until the answer is in, so nothing ever lands inside a prompt.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ._stdin import stdin_lines
from .bus import (
    BaselineMeasured,
    Breach,
    Diagnosis,
    EngineEvent,
    GuardState,
    Message,
    MonitorState,
    PhaseFinished,
    PhaseStarted,
    ProbeChecked,
    RollbackAttempt,
    RollbackDone,
    RolloutFinished,
    RolloutStarted,
    WorkerChanged,
    WorkerStats,
)
from .durations import format_duration

_STATE_STYLE = {"ok": "green", "breach": "bold red", "no_data": "yellow", "inconclusive": "cyan"}
_PHASE_MARK = {"pending": "·", "running": "▶", "succeeded": "✔", "failed": "✘", "cancelled": "■", "skipped": "–"}


@dataclass
class _Phase:
    name: str
    status: str = "pending"
    started: float | None = None
    seconds: float | None = None
    detail: str = ""


@dataclass
class ViewModel:
    """What the screen shows, updated from events (owned by the view task only)."""

    title: str = "rollout"
    target: str = ""
    phases: list[_Phase] = field(default_factory=list)
    stats: dict[str, WorkerStats] = field(default_factory=dict)
    guards: dict[tuple[str, str], GuardState] = field(default_factory=dict)
    monitors: dict[str, MonitorState] = field(default_factory=dict)
    last_breach: Breach | None = None
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    outcome: RolloutFinished | None = None

    def apply(self, event: EngineEvent) -> None:
        if isinstance(event, RolloutStarted):
            self.title = event.plan
            self.target = event.target
            self.phases = [_Phase(name) for name in event.phases]
        elif isinstance(event, PhaseStarted) and event.index < len(self.phases):
            phase = self.phases[event.index]
            phase.status, phase.started = "running", event.at
        elif isinstance(event, PhaseFinished) and event.index < len(self.phases):
            phase = self.phases[event.index]
            phase.status, phase.seconds, phase.detail = event.status, event.seconds, event.detail
        elif isinstance(event, WorkerStats):
            self.stats[event.worker] = event
        elif isinstance(event, GuardState):
            self.guards[(event.guard, event.worker)] = event
        elif isinstance(event, MonitorState):
            self.monitors[event.worker] = event
        elif isinstance(event, Breach):
            self.last_breach = event
        elif isinstance(event, RolloutFinished):
            self.outcome = event
        line = describe(event)
        if line:
            self.lines.append(line)

    def __rich__(self) -> RenderableType:
        return Group(self._phases_table(), self._workers_table(), self._breach_text(),
                     Text("\n".join(self.lines), style="dim"))

    def _phases_table(self) -> Table:
        table = Table(title=f"{self.title}  [{self.target}]", title_justify="left", expand=True, box=None)
        table.add_column("", width=2)
        table.add_column("phase")
        table.add_column("state")
        table.add_column("time", justify="right")
        now = time.time()
        for phase in self.phases:
            seconds = phase.seconds if phase.seconds is not None else (
                now - phase.started if phase.started is not None else None)
            table.add_row(_PHASE_MARK.get(phase.status, "?"), phase.name, phase.status,
                          format_duration(seconds) if seconds is not None else "")
        return table

    def _workers_table(self) -> Table:
        table = Table(expand=True, box=None)
        for column in ("worker", "req/s", "errors", "baseline", "churn/h", "young/h", "tail", "guards"):
            table.add_column(column)
        for worker, stats in sorted(self.stats.items()):
            guards = Text()
            for (guard, gworker), state in sorted(self.guards.items()):
                if gworker == worker:
                    guards.append(f"{guard}:{state.state} ", style=_STATE_STYLE.get(state.state, ""))
            monitor = self.monitors.get(worker)
            tail = "live" if monitor is None or monitor.connected else "BLIND"
            if monitor is not None and monitor.reconnects:
                tail += f" ↻{monitor.reconnects}"
            table.add_row(
                worker, f"{stats.rps:.1f}", _pct(stats.error_rate), _pct(stats.baseline_error_rate),
                f"{stats.pattern_per_hour.get('do_churn', 0.0):.0f}",
                f"{stats.pattern_per_hour.get('do_young', 0.0):.0f}", tail, guards or Text("not armed", style="dim"),
            )
        return table

    def _breach_text(self) -> Text:
        breach = self.last_breach
        if breach is None:
            return Text("")
        return Text(
            f"last breach: {breach.guard} on {breach.worker} ({breach_words(breach)}): {breach.detail} "
            f"(samples {breach.samples}, window {breach.window_s:.0f}s)", style="bold red")


#: What rollout does about a rollback guard's breach that it does not roll back (the webhook says the same).
NOT_ROLLED_BACK = "alert — not rolled back"


def breach_words(breach: Breach) -> str:
    """What rollout does about a breach, in the words the view and the webhook both use: "rolling back"
    (a rollout, or a watch with --rollback-on-breach), "alert — not rolled back" (a watch that only alerts),
    or the guard's own action ("alert", "warn")."""
    if breach.action != "rollback":
        return breach.action
    return NOT_ROLLED_BACK if breach.will_roll_back is False else "rolling back"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def describe(event: EngineEvent) -> str:
    """One plain line for an event, or "" for events that are not worth a line."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
    text = _describe(event)
    return f"{stamp} {text}" if text else ""


def _describe(event: EngineEvent) -> str:
    if isinstance(event, RolloutStarted):
        return f"rollout {event.rollout_id}: plan {event.plan!r} against {event.target}"
    if isinstance(event, PhaseStarted):
        return f"phase {event.index + 1}: {event.phase} started"
    if isinstance(event, PhaseFinished):
        tail = f": {event.detail}" if event.detail else ""
        return f"phase {event.index + 1}: {event.phase} {event.status} ({format_duration(event.seconds)}){tail}"
    if isinstance(event, Message):
        prefix = {"info": "", "warn": "WARNING ", "error": "ERROR "}[event.level]
        return f"{prefix}{event.text}"
    if isinstance(event, WorkerChanged):
        return f"{event.worker}: {event.before or '(new)'} → {event.after}"
    if isinstance(event, BaselineMeasured):
        rate = f"{event.errors / event.requests * 100:.2f}%" if event.requests else "no traffic"
        return f"baseline {event.worker}: {event.requests} requests, error rate {rate}"
    if isinstance(event, GuardState):
        return f"guard {event.guard} on {event.worker}: {event.state} — {event.detail}"
    if isinstance(event, Breach):
        return f"BREACH {event.guard} on {event.worker} ({breach_words(event)}): {event.detail}"
    if isinstance(event, ProbeChecked):
        return f"probe {event.worker} {event.probe}: {'ok' if event.ok else 'FAILED'} — {event.saw}"
    if isinstance(event, RollbackAttempt):
        return (f"rollback {event.worker} → {event.to_version} attempt {event.attempt}: "
                f"{'ok' if event.ok else 'failed'} {event.detail if not event.ok else ''}").rstrip()
    if isinstance(event, RollbackDone):
        state = "verified" if event.verified else "NOT VERIFIED"
        return f"rollback {event.worker} → {event.to_version}: {state} ({event.detail})"
    if isinstance(event, MonitorState):
        return (f"tail {event.worker}: {'connected' if event.connected else 'disconnected'}"
                f" (reconnects {event.reconnects}, blind {event.blind_s:.1f}s)")
    if isinstance(event, Diagnosis):
        code = f"code {event.code}" if event.code is not None else "error"
        fix = f" — cause: {event.cause} fix: {event.fix}" if event.cause else ""
        return f"{event.command}: {code}: {event.message}{fix}"
    if isinstance(event, RolloutFinished):
        return f"rollout {event.outcome} (exit {event.exit_code}): {event.detail}"
    return ""


class View:
    """Base: consumes the bus; ``ask`` prompts with the screen stopped and output held back."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.model = ViewModel()
        self._prompting = False
        self._held: list[str] = []

    async def consume(self, stream: MemoryObjectReceiveStream[EngineEvent]) -> None:
        async with stream:
            async for event in stream:
                self.model.apply(event)
                self.on_event(event)

    def on_event(self, event: EngineEvent) -> None:
        pass

    def emit(self, line: str) -> None:
        if self._prompting:
            self._held.append(line)
        else:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    async def ask(self, question: str) -> bool | None:
        """Ask until the answer is yes or no: True, False, or None at end of input (nobody can answer).
        Cancellable at any moment (a breach, a signal, a timeout): the screen then says so."""
        self._prompting = True
        self.pause()
        lines = stdin_lines()
        lines.discard_pending()
        answer: bool | None = None
        try:
            prompt = f"{question} [y/n] "
            while True:
                self.console.print(prompt, end="", markup=False, highlight=False, soft_wrap=True)
                line = await lines.next()
                if line is None:
                    self.console.print("(no input: nobody can answer)", markup=False, highlight=False)
                    break
                word = line.strip().lower()
                if word in {"y", "yes"}:
                    answer = True
                    break
                if word in {"n", "no"}:
                    answer = False
                    break
                prompt = f"please answer y (yes) or n (no): {question} [y/n] "
        except anyio.get_cancelled_exc_class():
            self.console.print("\n(no longer waiting for an answer)", markup=False, highlight=False)
            raise
        finally:
            self._prompting = False
            held, self._held = self._held, []
            for line_ in held:
                self.emit(line_)
            self.resume()
        return answer

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    async def run(self, stream: MemoryObjectReceiveStream[EngineEvent]) -> None:
        await self.consume(stream)

    def close(self) -> None:
        pass


class PlainView(View):
    """One line per event: for CI logs and ``--no-tty``."""

    def on_event(self, event: EngineEvent) -> None:
        line = describe(event)
        if line:
            self.emit(line)


class LiveView(View):
    """The live screen; refreshed four times a second by its own task."""

    def __init__(self, console: Console, refresh_per_second: float = 4.0) -> None:
        super().__init__(console)
        self.live = Live(self.model, console=console, auto_refresh=False, transient=False,
                         redirect_stdout=False, redirect_stderr=False)
        self.interval = 1.0 / refresh_per_second
        self._started = False

    async def run(self, stream: MemoryObjectReceiveStream[EngineEvent]) -> None:
        self.live.start()
        self._started = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._refresh)
                await self.consume(stream)
                tg.cancel_scope.cancel()
        finally:
            self.close()

    async def _refresh(self) -> None:
        while True:
            if not self._prompting and self._started:
                self.live.refresh()
            await anyio.sleep(self.interval)

    def pause(self) -> None:
        if self._started:
            self.live.stop()
            self._started = False

    def resume(self) -> None:
        if not self._started:
            self.live.start()
            self._started = True

    def close(self) -> None:
        if self._started:
            self.live.refresh()
            self.live.stop()
            self._started = False
