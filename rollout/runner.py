"""Runs a plan end to end: target (Cloudflare, a running simulator, or one started in-process), journal,
view, engine, reports.  The CLI and the programmatic API share this."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from rich.console import Console

from .bus import EngineEvent, EventBus, Message
from .context import AskFunction
from .control import serve_control, socket_path
from .engine import Engine, EngineOptions, RunResult
from .github import GitHubView, append_step_summary, in_github_actions
from .journal import DEFAULT_JOURNAL, Journal
from .lock import rollout_locks
from .metrics import Metrics, MetricsServer
from .plan import Plan, load_plan
from .preflight import git_head
from .report import ReportInput, build_report, command_line, guard_specs, write_reports
from .series import run_series
from .target import Target
from .view import LiveView, PlainView, View
from .wrangler import Wrangler

logger = logging.getLogger("rollout.runner")


@dataclass
class RunOptions:
    """Everything ``rollout run`` takes; ``run_plan`` accepts the same for programmatic use."""

    plan_path: Path
    sim: bool = False
    scenario: str = "healthy"
    api_base: str | None = None
    yes: bool = False
    report_dir: Path = Path("reports")
    journal_path: Path = DEFAULT_JOURNAL
    tty: bool = True
    time_scale: float = 1.0
    console: Console | None = None
    print_fault_timing: bool = False
    engine: EngineOptions | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    record_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunOutcome:
    result: RunResult
    report: dict[str, object]
    report_files: list[Path]
    fault_to_verified_s: float | None


@contextlib.asynccontextmanager
async def open_target(sim: bool, scenario: str, api_base: str | None, run_dir: Path
                      ) -> AsyncIterator[tuple[Target, object | None]]:
    """Yield the target: a simulator started here, a running one (``api_base``), or Cloudflare."""
    if sim:
        from .sim import Simulator

        async with Simulator(scenario=scenario, port=0) as simulator:
            env = dict(simulator.env())
            env["XDG_CONFIG_HOME"] = str(run_dir / "wrangler-home")
            yield Target.simulator(env), simulator
    elif api_base:
        target = Target.from_api_base(api_base)
        if target.edge_url is None:
            target = await _discover_edge(target)
        yield target, None
    else:
        yield Target.cloudflare(), None


async def _discover_edge(target: Target) -> Target:
    """A running simulator serves its edge on the API's own port, outside ``/client/v4``."""
    assert target.api_base is not None
    if not target.api_base.rstrip("/").endswith("/client/v4"):
        return target
    edge = target.api_base.rstrip("/")[: -len("/client/v4")]
    env = dict(target.env)
    env["ROLLOUT_EDGE_URL"] = edge
    return Target(name=target.name, env=env, edge_url=edge)


def make_view(console: Console, tty: bool) -> View:
    if tty and console.is_terminal:
        return LiveView(console)
    return GitHubView(console) if in_github_actions() else PlainView(console)


async def run_plan(options: RunOptions, plan: Plan | None = None) -> RunOutcome:
    """Load and run a plan; returns the result and the written reports."""
    plan = plan or load_plan(options.plan_path)
    engine_options = _engine_options(options)  # bad values are usage errors before anything starts
    console = options.console or Console()
    run_dir = options.journal_path.parent
    await anyio.Path(run_dir).mkdir(parents=True, exist_ok=True)
    async with open_target(options.sim, options.scenario, options.api_base, run_dir) as (target, simulator), \
            rollout_locks(plan, target.env):  # one rollout per worker at a time (LockHeld → exit 2)
        project_dir = plan.source.parent if plan.source else Path.cwd()
        wrangler = Wrangler.for_project(project_dir, {**target.env, **options.extra_env}, run_dir / "wrangler")
        bus = EventBus()
        view = make_view(console, options.tty)
        metrics = Metrics()
        server = MetricsServer(metrics, host=options.metrics_host, port=options.metrics_port) \
            if options.metrics_port is not None else None
        if server is not None:
            server.start()
        async with Journal(options.journal_path) as journal:
            engine = Engine(plan, target, wrangler=wrangler, journal=journal, bus=bus, metrics=metrics,
                            ask=_asker(view, options.yes) if options.yes or can_prompt() else None,
                            options=engine_options)
            journal_stream = bus.subscribe("journal", buffer=100_000)
            view_stream = bus.subscribe("view", buffer=10_000)
            metrics_stream = bus.subscribe("metrics", buffer=10_000)
            async with anyio.create_task_group() as tg:
                tg.start_soon(journal_writer, journal, engine.rollout_id, journal_stream)
                tg.start_soon(feed_metrics, metrics, metrics_stream)
                tg.start_soon(view.run, view_stream)
                try:
                    async with _control(options.journal_path, engine):
                        result = await engine.run()
                finally:
                    bus.close()
                    if server is not None:
                        server.stop()
            fault_onset = simulator.first_fault_onset() if simulator is not None else None  # type: ignore[attr-defined]
            migrations = await journal.migrations(engine.rollout_id)
        timing = None
        if fault_onset is not None and result.rollback_verified_at is not None:
            timing = result.rollback_verified_at - fault_onset
        series_start, series = run_series({w: m.signals for w, m in engine.monitors.items()}, bus.history,
                                          result.started, result.ended)
        report = build_report(ReportInput(
            rollout_id=result.rollout_id, plan=plan.name, target=target.name, outcome=result.outcome,
            exit_code=result.exit_code, detail=result.detail, started=result.started, ended=result.ended,
            events=list(bus.history), migrations=migrations, command=command_line(),
            plan_path=str(plan.source or options.plan_path), scenario=options.scenario if options.sim else None,
            time_scale=engine.time_scale, git_commit=await git_head(project_dir), fault_to_verified_s=timing,
            series=series, series_start=series_start, guards=guard_specs(plan.guards),
            watched=[w.name for w in plan.workers if w.watch]))
        files = await write_reports(report, options.report_dir)
        if in_github_actions():
            step_summary = append_step_summary(options.report_dir / "summary.md")
            if step_summary is not None:
                files.append(step_summary)
    return RunOutcome(result, report, files, timing)


@contextlib.asynccontextmanager
async def _control(journal_path: Path, engine: Engine) -> AsyncIterator[None]:
    """`rollout pause|resume|promote|abort` reach this run through a unix socket (none if it cannot be made)."""
    path = socket_path(journal_path, engine.rollout_id)
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(serve_control(path, engine.control))
        except OSError as exc:
            logger.warning("no control socket at %s: %s", path, exc)
            engine.bus.publish(Message(level="warn", text=f"`rollout pause/abort` cannot reach this run: {exc}"))
        yield


def _engine_options(options: RunOptions) -> EngineOptions:
    engine = options.engine or EngineOptions(time_scale=options.time_scale)
    if options.yes:
        engine = dataclasses.replace(engine, auto_approve=True)
    if options.record_dir is not None:
        engine = dataclasses.replace(engine, record_dir=options.record_dir)
    return engine


def _asker(view: View, yes: bool) -> AskFunction:
    async def ask(question: str) -> bool | None:
        if yes:
            return True
        return await view.ask(question)

    return ask


def can_prompt() -> bool:
    """A person can answer: standard input is a terminal."""
    return sys.stdin is not None and sys.stdin.isatty()


async def feed_metrics(metrics: Metrics, stream: MemoryObjectReceiveStream[EngineEvent]) -> None:
    """Update the Prometheus series from engine events."""
    async with stream:
        async for event in stream:
            metrics.observe(event)


async def journal_writer(journal: Journal, rollout_id: str, stream) -> None:  # type: ignore[no-untyped-def]
    """Append events in small batches, each batch one transaction."""
    from .bus import WorkerStats

    async with stream:
        batch = []
        async for event in stream:
            if isinstance(event, WorkerStats):
                continue
            batch.append(event)
            while True:
                try:
                    extra = stream.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                if not isinstance(extra, WorkerStats):
                    batch.append(extra)
            with anyio.CancelScope(shield=True):
                await journal.append(rollout_id, batch)
            batch = []


def configure_logging(run_dir: Path) -> None:
    """Library logs go to a file, never to the terminal (the view owns it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "rollout.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("rollout")
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("ROLLOUT_LOG_LEVEL", "INFO"))
    root.propagate = False
