"""The CLI's commands, each ``async def cmd_NAME(args, console) -> exit code`` (codes: :mod:`rollout.exits`)."""

from __future__ import annotations

import argparse
import contextlib
import math
import socket
import sys
import time
from pathlib import Path

import anyio
from rich.console import Console
from rich.table import Table

from .bus import EventBus
from .durations import format_duration
from .errors import LockHeld, UsageError
from .exits import EXIT_OK, EXIT_PREFLIGHT, EXIT_ROLLBACK_FAILED, EXIT_USAGE
from .journal import (
    Change,
    Journal,
    RolloutRecord,
    latest_changes,
    left_to_roll_back,
    pick_last_run,
    pick_run,
    rollback_done,
    rolled_back_to,
)
from .lock import hold_locks, locks_held_by, process_alive
from .plan import load_plan
from .rollback import rollback_and_verify
from .runner import RunOptions, run_plan
from .target import Target
from .wrangler import Wrangler


def _stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


async def _confirm(console: Console, question: str, no_terminal: str) -> bool:
    """Ask ``question [y/N]`` on the terminal; the answer is read without blocking the event loop.

    Raises:
        UsageError: stdin is not a terminal (``no_terminal`` says what to pass instead): nobody can answer,
            and a read would only meet the end of input.
    """
    from ._stdin import stdin_lines

    if not _stdin_is_terminal():
        raise UsageError(f"stdin is not a terminal: {no_terminal}")
    console.print(f"{question} [y/N] ", end="", markup=False, highlight=False)
    answer = await stdin_lines().next()
    return answer is not None and answer.strip().lower() in {"y", "yes"}


async def cmd_run(args: argparse.Namespace, console: Console) -> int:
    options = RunOptions(
        plan_path=args.plan, sim=args.sim, scenario=args.scenario, api_base=args.api_base, yes=args.yes,
        report_dir=args.report_dir, journal_path=args.journal, tty=not args.no_tty, time_scale=args.time_scale,
        console=console, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
        record_dir=args.record_tail,
    )
    return await _run_and_summarise(options, console)


async def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from .cli import EXAMPLE_PLAN

    options = RunOptions(
        plan_path=EXAMPLE_PLAN, sim=args.api_base is None, scenario=args.scenario, api_base=args.api_base, yes=True,
        report_dir=args.report_dir, journal_path=args.journal, tty=not args.no_tty, time_scale=args.time_scale,
        console=console, print_fault_timing=True, record_dir=args.record_tail,
    )
    return await _run_and_summarise(options, console)


async def _run_and_summarise(options: RunOptions, console: Console) -> int:
    outcome = await run_plan(options)
    result = outcome.result
    for path in outcome.report_files:
        console.print(f"wrote {path}", markup=False, highlight=False)
    if outcome.fault_to_verified_s is not None:
        console.print(f"fault onset → rollback verified: {outcome.fault_to_verified_s:.1f} s", markup=False,
                      highlight=False)
    if result.left_live:
        console.print("ROLLBACK NOT VERIFIED: act by hand, newest first:", style="bold red", markup=False)
        for item in result.left_live:
            console.print(item.line(), markup=False, highlight=False, soft_wrap=True)
            console.print(f"    then check: wrangler deployments status --name {item.worker}", markup=False,
                          highlight=False, soft_wrap=True)
    console.print(f"outcome: {result.outcome} (exit {result.exit_code}) — {result.detail}", markup=False,
                  highlight=False)
    return result.exit_code


async def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    plan = load_plan(args.plan)
    console.print(f"plan {plan.name!r} ({plan.source})", markup=False, highlight=False)
    console.print(f"workers: {', '.join(w.name for w in plan.workers)}", markup=False)
    console.print(f"baseline: {format_duration(plan.baseline_s)} before the first deploy", markup=False)
    console.print("guards:", markup=False)
    for guard in plan.guards:
        console.print(f"  - {guard.name} → {guard.action}  ({guard!r})", markup=False, highlight=False)
    console.print("phases:", markup=False)
    for index, phase in enumerate(plan.steps, start=1):
        console.print(f"  {index}. {phase.name}", markup=False, highlight=False)
        for line in phase.describe():
            console.print(f"       $ {line}" if _is_command(line) else f"       {line}", markup=False, highlight=False)
    console.print("on a rollback breach, for each changed worker, newest first:", markup=False)
    console.print("       $ wrangler rollback <version before> --name <worker> --message \"rollout: …\" -y",
                  markup=False)
    console.print("       $ wrangler deployments status --name <worker> --json   (verify)", markup=False)
    return 0


def _is_command(line: str) -> bool:
    return line.startswith(("wrangler ", "npm ", "npx ", "node ", "git ", "python")) or line.split(" ")[0].startswith(
        ("./", "/"))


def runner_state(record: RolloutRecord) -> tuple[str, str]:
    """``(state, text)`` of a rollout with no end: ``running`` while its runner still holds one of its
    locks or is alive, ``killed`` when its pid is gone, ``unknown`` when this machine cannot tell."""
    pid = record.pid
    if pid is None:
        return "unknown", "running or killed (no pid recorded)"
    if record.host and record.host != socket.gethostname():
        return "unknown", f"running or killed (pid {pid} on {record.host}: cannot tell from here)"
    if locks_held_by(pid) or process_alive(pid, record.started):
        return "running", f"running (pid {pid})"
    return "killed", f"killed (pid {pid} gone)"


async def cmd_status(args: argparse.Namespace, console: Console) -> int:
    if not args.journal.exists():
        console.print(f"no journal at {args.journal}: no rollout has run from this directory", markup=False)
        return 0
    async with Journal(args.journal) as journal:
        records = await journal.rollouts(args.n)
        pick = await pick_last_run(journal)
        table = Table(title=f"last rollouts ({args.journal})", title_justify="left")
        for column in ("id", "plan", "target", "started", "duration", "outcome", "changed"):
            table.add_column(column)
        for record in records:
            changes = latest_changes(await journal.changes(record.id))
            if record.ended is not None:
                outcome = record.outcome or "?"
            else:
                state, outcome = await anyio.to_thread.run_sync(runner_state, record)  # reads /proc
                if state == "killed" and record.mode == "run":
                    undone = await rolled_back_to(journal, record.id)
                    if pick.record is not None and pick.record.id == record.id:
                        outcome += ": run `rollout rollback --last` to undo what it changed"
                    elif changes and all(undone.get(c.worker) == c.before for c in changes if c.before):
                        outcome += "; rolled back and verified since"
            duration = format_duration(record.ended - record.started) if record.ended else "–"
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started))
            changed = ", ".join(f"{c.worker} {c.before}→{c.after or '?'}" for c in changes) or "–"
            row = (record.id, record.plan, record.target or "", started, duration, outcome, changed)
            if args.no_tty:
                console.print("  ".join(row), markup=False, highlight=False, soft_wrap=True)
            table.add_row(*row)
    if args.no_tty:
        return 0
    console.print(table)
    return 0


async def cmd_rollback(args: argparse.Namespace, console: Console) -> int:
    """Roll back what a run changed that is not rolled back and verified yet, under the workers' lock: the
    newest such run (``--last``) or the run ``ROLLOUT_ID``.

    A simulator run is rolled back on its simulator (the journal's API base, or ``--api-base``), never on
    Cloudflare, and only while that simulator answers.  Exit 0 every rollback verified (or nothing left to
    do); 3 one is not; 2 nothing done (refused: no such run, its simulator is gone, a live runner holds the
    lock, nobody to ask, or the answer was no).
    """
    if not args.journal.exists():
        raise UsageError(f"no journal at {args.journal}: nothing to roll back")
    rollout_id: str | None = getattr(args, "rollout_id", None)
    how = "rollback" if rollout_id else "rollback --last"
    async with Journal(args.journal) as journal:
        if rollout_id:
            pick = await pick_run(journal, rollout_id)
            if pick.empty:
                raise UsageError(await _unknown_run(journal, rollout_id))
            for skipped, why in pick.skipped:
                console.print(f"rollout {skipped.id} ({skipped.plan}): {why}: nothing to do", markup=False,
                              highlight=False)
        else:
            pick = await pick_last_run(journal)
            if pick.empty:
                raise UsageError("the journal has no rollout")
            for skipped, why in pick.skipped:
                console.print(f"skipped rollout {skipped.id} ({skipped.plan}): {why}", markup=False, highlight=False)
        record = pick.record
        if record is None:
            if not rollout_id:
                console.print("no rollout in the journal has changes left to roll back: nothing to do", markup=False)
            return EXIT_OK
        changes = pick.changes
        api_base, recorded = _rollback_api_base(args.api_base, record)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started))
        console.print(f"{'picked rollout' if not rollout_id else 'rollout'} {record.id} ({record.plan}, started "
                      f"{started}, {record.outcome or 'no end recorded'}), which changed:", markup=False,
                      highlight=False)
        for change in changes:
            console.print(f"  {change.worker}: {change.before} → {change.after or '(deploy in progress)'}",
                          markup=False, highlight=False)
        for note in await _changed_since(journal, record, changes):
            console.print(note, markup=False, highlight=False, soft_wrap=True)
        if not args.yes and not _stdin_is_terminal():  # before the network: nobody can say yes anyway
            raise UsageError("stdin is not a terminal: pass --yes to roll back without asking")
        if api_base:
            await _require_simulator(api_base, recorded)
        target = Target.from_api_base(api_base) if api_base else Target.cloudflare()
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(hold_locks(
                    [c.worker for c in changes], env=target.env, plan=f"{how} of {record.id}"))
            except LockHeld as exc:  # a live runner (or a watch that rolls back) owns the worker: hands off
                raise LockHeld(f"not rolling back: {exc}") from None
            if not args.yes and not await _confirm(console, "roll all of them back, newest first?",
                                                   "pass --yes to roll back without asking"):
                console.print("nothing done", markup=False)
                return EXIT_USAGE
            return await _roll_back(args, console, journal, record, changes, target, how)


def _rollback_api_base(api_base: str | None, record: RolloutRecord) -> tuple[str | None, bool]:
    """The simulator API base to roll ``record`` back on (None: Cloudflare), and whether it came from the
    journal: a simulator run goes to ``--api-base`` or the simulator it used, never to Cloudflare."""
    if api_base:
        return api_base, False
    if record.target == "simulator" or (record.target != "cloudflare" and record.api_base):
        if not record.api_base:
            raise UsageError(f"rollout {record.id} ran against a simulator the journal has no address of: "
                             "pass --api-base URL of a running one")
        return record.api_base, True
    return None, False


async def _require_simulator(api_base: str, recorded: bool, timeout_s: float = 2.0) -> None:
    """Refuse (UsageError) when nothing answers at a simulator's API base within ``timeout_s``: any HTTP
    answer will do (the account may not be known yet), a refused connection or a timeout will not."""
    import os

    import httpx

    base = api_base.rstrip("/")
    account = os.environ.get("CLOUDFLARE_ACCOUNT_ID") or "0" * 32
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as http:
            await http.get(f"{base}/accounts/{account}/workers/scripts",
                           headers={"Authorization": f"Bearer {os.environ.get('CLOUDFLARE_API_TOKEN', '')}"})
    except (httpx.TransportError, httpx.InvalidURL) as exc:  # refused, timed out, no such host: not there
        if recorded:
            raise UsageError(f"the simulator this run used ({base}) is gone: nothing to roll back there; "
                             "pass --api-base URL of a running one") from None
        why = "connection refused" if isinstance(exc, httpx.ConnectError) else type(exc).__name__
        raise UsageError(f"no simulator answers at --api-base {base} ({why}): pass --api-base URL of a "
                         "running one") from None


async def _unknown_run(journal: Journal, rollout_id: str) -> str:
    records = await journal.rollouts(5, mode="run")
    if not records:
        return f"no rollout {rollout_id} in {journal.path}: the journal has no rollout"
    last = ", ".join(f"{r.id} ({r.plan}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(r.started))})"
                     for r in records)
    return f"no rollout {rollout_id} in {journal.path}; the last ones, newest first: {last}"


async def _changed_since(journal: Journal, record: RolloutRecord, changes: list[Change]) -> list[str]:
    """A note per worker that a newer run changed too (and that is not rolled back): going back to this
    run's version before undoes that run's change as well."""
    workers = {c.worker: c for c in changes}
    notes = []
    for newer in reversed(await journal.rollouts(100, mode="run")):
        if newer.id == record.id or newer.started < record.started:
            continue
        left, _ = await left_to_roll_back(journal, newer)
        for later in left:
            mine = workers.get(later.worker)
            if mine is not None:
                notes.append(f"note: rollout {newer.id} changed {later.worker} after this run ({later.before} → "
                             f"{later.after or '?'}); going back to {mine.before} undoes that too")
    return notes


async def _roll_back(args: argparse.Namespace, console: Console, journal: Journal, record: RolloutRecord,
                     changes: list[Change], target: Target, how: str = "rollback --last") -> int:
    run_dir = args.journal.parent
    plan_dir = Path(record.plan_path).parent if record.plan_path else None
    wrangler = Wrangler.for_project(plan_dir, target.env, run_dir / "wrangler")
    message = f"rollout: {how} of {record.id}"
    failed = False
    bus = EventBus()  # the attempts are only printed: this command has no view
    for change in reversed(changes):
        assert change.before is not None
        # the same retried, timed-out and verified rollback as a run's own (rollout/rollback.py)
        outcome = await rollback_and_verify(wrangler, bus, change.worker, change.after, change.before, message)
        verified = outcome.verified
        failed |= not verified
        note = "verified" if verified else f"NOT verified: {outcome.detail}"
        with anyio.CancelScope(shield=True):
            await journal.append(record.id, [rollback_done(
                change.worker, change.after, change.before, verified, f"rollout {how}: {note}", time.time())])
        console.print(f"{change.worker} → {change.before}: {note}", markup=False, highlight=False)
    return EXIT_ROLLBACK_FAILED if failed else EXIT_OK


def _share(text: str, option: str) -> float:
    """``"20%"`` or ``"0.2"`` → 0.2; a usage error unless it is a share from 0 to 100%."""
    value = text.strip()
    try:
        share = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        share = math.nan
    if not 0.0 <= share <= 1.0:  # also refuses nan
        raise UsageError(f"{option} {text}: give a share of the watch from 0 to 100% (e.g. 20% or 0.2)")
    return share


async def cmd_watch(args: argparse.Namespace, console: Console) -> int:
    from .durations import parse_duration
    from .watch import WatchOptions, run_watch

    try:
        duration, blind, baseline = (parse_duration(v) for v in (args.duration, args.blind_alert, args.baseline))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not math.isfinite(duration) or duration <= 0:
        raise UsageError(f"--for {args.duration}: a watch needs a finite time of more than 0 (e.g. 24h, 30m)")
    max_blind = _share(args.max_blind, "--max-blind")
    options = WatchOptions(
        workers=list(args.workers), duration_s=duration, guards_path=args.guards, plan_path=args.plan,
        rollback_on_breach=args.rollback_on_breach, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
        webhook=args.webhook, source=args.source, sim=args.sim, scenario=args.scenario, api_base=args.api_base,
        tty=not args.no_tty, journal_path=args.journal, console=console, blind_alert_s=blind, baseline_s=baseline,
        max_blind=max_blind,
    )
    result = await run_watch(options)
    for line in result.lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return result.exit_code


async def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """The hours that overlap the last ``--since`` and every breach in it with the action taken, as markdown
    (or one JSON object with ``--json``)."""
    import json

    from .durations import parse_duration
    from .hourly import WindowReport, render_markdown, window_report

    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not math.isfinite(since) or since <= 0:
        raise UsageError(f"--since {args.since}: give a finite time of more than 0 (e.g. 24h, 10m)")
    now = time.time()
    if not args.journal.exists():
        if args.json:
            report = WindowReport(now - since, now, [], [])
            console.print(json.dumps(report.data(args.since)), markup=False, highlight=False, soft_wrap=True)
        else:
            console.print(f"no journal at {args.journal}: nothing has been watched from this directory",
                          markup=False)
        return 0
    async with Journal(args.journal) as journal:
        report = await window_report(journal, since, now)
    if args.json:
        console.print(json.dumps(report.data(args.since)), markup=False, highlight=False, soft_wrap=True)
        return 0
    since_clock = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report.start))
    console.print(render_markdown(report.hours, title=f"Watch report: the last {args.since} (since {since_clock})",
                                  breaches=report.breaches), markup=False, highlight=False, soft_wrap=True)
    return 0


async def cmd_replay(args: argparse.Namespace, console: Console) -> int:
    from .replay import run_replay

    return await run_replay(args.tail_file, args.plan, baseline=args.baseline, as_json=args.json,
                            context_file=args.context, console=console)


async def cmd_record(args: argparse.Namespace, console: Console) -> int:
    from .record import RecordOptions, record_tail

    options = RecordOptions(worker=args.worker, duration=args.duration, out=args.out, sim=args.sim,
                            scenario=args.scenario, api_base=args.api_base, run_dir=args.journal.parent)
    return await record_tail(options, console)


async def cmd_preflight(args: argparse.Namespace, console: Console) -> int:
    """``rollout preflight PLAN`` or ``rollout preflight --config wrangler.toml …``: 0 ok, 7 problems."""
    from phases._preflight import Preflight, targets

    from .preflight import PreflightOptions, WorkerTarget, run_preflight
    from .runner import open_target
    from .wrangler_config import load_config

    if args.plan is None and not args.config:
        raise UsageError("give a plan file or at least one --config wrangler.toml")
    manifests = dict(item.split("=", 1) for item in args.manifest or [])
    require_clean, require_tag = args.require_clean, args.require_tag
    if args.plan is not None:
        plan = load_plan(args.plan)
        phase = next((p for p in plan.steps if isinstance(p, Preflight)), None)
        if phase is not None:
            manifests = {**phase.artifacts, **manifests}
            require_clean, require_tag = require_clean or phase.require_clean, require_tag or phase.require_tag
        workers = targets(plan, (), manifests)
        project_dir = plan.source.parent if plan.source else Path.cwd()
    else:
        workers = []
        for path in args.config:
            name = load_config(path).name or path.parent.name
            workers.append(WorkerTarget(name, path.resolve(), Path(manifests[name]) if name in manifests else None))
        project_dir = args.config[0].resolve().parent
    options = PreflightOptions(require_clean=require_clean, require_tag=require_tag,
                               require_artifacts=args.require_artifacts, repo_dir=project_dir)
    run_dir = args.journal.parent
    async with open_target(args.sim, args.scenario, args.api_base, run_dir) as (target, _):
        wrangler = Wrangler.for_project(project_dir, target.env, run_dir / "wrangler")
        console.print(f"preflight of {', '.join(w.name for w in workers)} against {target.name}", markup=False)
        result = await run_preflight(workers, wrangler, options)
    console.print(result.render(), markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK if result.ok else EXIT_PREFLIGHT


async def cmd_unlock(args: argparse.Namespace, console: Console) -> int:
    """Remove the lock of workers whose rollout is gone (asks unless --yes)."""
    import os

    import httpx

    from .lock import AccountLock, LocalLock, lock_scope, simulator_locks

    if args.api_base:
        env = dict(Target.from_api_base(args.api_base).env)
    else:
        env = {k: os.environ.get(k, "") for k in ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN")}
    if args.sim:  # every simulator's lock of these workers (each simulator is its own account)
        locks = [lock for worker in args.workers for lock in simulator_locks(worker)]
        locks = locks or [LocalLock(lock_scope({"CLOUDFLARE_API_BASE_URL": "none"}), w) for w in args.workers]
    else:
        locks = [LocalLock(lock_scope(env), worker) for worker in args.workers]
    for lock in locks:
        holder = lock.read_holder()
        console.print(f"{lock.worker}: " + (f"held by {holder.describe()}" if holder else "no owner recorded")
                      + f" ({lock.path})", markup=False, highlight=False)
    if not args.yes and not await _confirm(console, f"remove the lock of {', '.join(args.workers)}?",
                                           "pass --yes to remove the lock without asking"):
        console.print("nothing done", markup=False)
        return EXIT_USAGE
    for lock in locks:
        console.print(f"{lock.worker}: {'removed' if lock.break_lock() else 'was not locked'}", markup=False)
    if args.account:
        if not args.api_base and not env.get("CLOUDFLARE_API_TOKEN"):
            raise UsageError("--account needs CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID (or --api-base)")
        base = args.api_base or "https://api.cloudflare.com/client/v4"
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
            remote = AccountLock(http, base, env["CLOUDFLARE_ACCOUNT_ID"], env["CLOUDFLARE_API_TOKEN"])
            for worker in args.workers:
                await remote.delete(worker)
                console.print(f"{worker}: account lock removed", markup=False)
    return 0


async def cmd_prometheus_rules(args: argparse.Namespace, console: Console) -> int:
    """Alerting rules for the plan's guards (or the defaults), plus blind, no-data and rollback rules."""
    from .dashboards import prometheus_rules
    from .guards import default_guards

    guards = load_plan(args.plan).guards if args.plan is not None else default_guards()
    return await _write_json(prometheus_rules(guards, job=args.job), args.output, console)


async def cmd_grafana(args: argparse.Namespace, console: Console) -> int:
    from .dashboards import grafana_dashboard

    return await _write_json(grafana_dashboard(), args.output, console)


async def _write_json(data: object, output: Path | None, console: Console) -> int:
    import json

    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    else:
        await anyio.Path(output).write_text(text, encoding="utf-8")
        console.print(f"wrote {output}", markup=False, highlight=False)
    return 0


async def cmd_control(args: argparse.Namespace, console: Console) -> int:
    """``rollout pause|resume|promote|abort [ID]``: steer a running rollout through its control socket."""
    from .control import send_control, socket_path

    if not args.journal.exists():
        raise UsageError(f"no journal at {args.journal}: no rollout runs from this directory")
    async with Journal(args.journal) as journal:
        if args.rollout_id:
            record = await journal.rollout(args.rollout_id)
            if record is None:
                raise UsageError(f"no rollout {args.rollout_id} in {args.journal}")
        else:
            running = [r for r in await journal.rollouts(20, mode="run") if r.ended is None]
            if not running:
                raise UsageError(f"no running rollout in {args.journal}: nothing to {args.command}")
            record = running[0]
    if record.ended is not None:
        raise UsageError(f"rollout {record.id} has ended ({record.outcome}): nothing to {args.command}")
    path = socket_path(args.journal, record.id)
    try:
        reply = await send_control(path, args.command)
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"rollout {record.id} does not answer ({exc}); if its runner was killed, "
                         "`rollout status` says so and `rollout rollback --last` undoes what it changed") from None
    console.print(f"rollout {record.id}: {args.command}: {'ok' if reply.ok else 'refused'} — {reply.state}: "
                  f"{reply.detail}", markup=False, highlight=False, soft_wrap=True)
    return 0 if reply.ok else 2
