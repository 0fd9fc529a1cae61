"""The command line: parse arguments, call the library, print one line on error, return an exit code.

Exit codes (one meaning each, see :mod:`rollout.exits`): 0 success, 1 rolled back and verified, 2 usage,
plan or refusal before any change, 3 rollback failed or unverified, 4 internal error, 5 blind watch,
6 watch alerted without rolling back, 7 preflight problems, 130/143 interrupted before any change.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
from rich.console import Console

from .errors import PlanError, RolloutError, UsageError
from .exits import EXIT_INTERNAL, EXIT_USAGE
from .journal import DEFAULT_JOURNAL

EXAMPLE_PLAN = Path(__file__).resolve().parent.parent / "examples" / "cf_ssai" / "plan.py"
DEMO_TIME_SCALE = 0.03


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-tty", action="store_true", help="plain line-per-event output (for CI logs)")
    parser.add_argument("--api-base", metavar="URL", help="use a running simulator at this API base URL")
    parser.add_argument("--journal", type=Path, default=DEFAULT_JOURNAL, help="journal file (SQLite)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rollout", description="Staged rollouts for Cloudflare Workers.")
    parser.add_argument("--version", action="version", version=f"rollout {_version()}")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour on the terminal (default auto: off when NO_COLOR is set or not a terminal)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a rollout plan")
    run.add_argument("plan", type=Path)
    run.add_argument("--sim", action="store_true", help="start the local simulator in-process and run against it")
    run.add_argument("--scenario", default="healthy", help="simulator scenario (name or file), with --sim")
    run.add_argument("--yes", action="store_true", help="approve every gate without asking")
    run.add_argument("--report-dir", type=Path, default=Path("reports"))
    run.add_argument("--time-scale", type=float, default=1.0, help="multiply plan durations (e.g. 0.05)")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0: a free one)")
    run.add_argument("--metrics-host", default="127.0.0.1")
    run.add_argument("--record-tail", type=Path, metavar="DIR",
                     help="save each watched worker's tail and a replay context in DIR (for `rollout replay`)")
    _common(run)

    plan = sub.add_parser("plan", help="dry run: show phases, guards and the exact commands")
    plan.add_argument("plan", type=Path)
    _common(plan)

    status = sub.add_parser("status", help="show the last rollouts from the journal")
    status.add_argument("-n", type=int, default=10)
    _common(status)

    rollback = sub.add_parser("rollback", help="roll back what a rollout changed")
    which = rollback.add_mutually_exclusive_group(required=True)
    which.add_argument("rollout_id", nargs="?", metavar="ROLLOUT_ID", help="this rollout (see `rollout status`)")
    which.add_argument("--last", action="store_true",
                       help="the last rollout in the journal with changes not rolled back yet")
    rollback.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _common(rollback)

    demo = sub.add_parser("demo", help="run examples/cf_ssai/plan.py against the simulator (about a minute)")
    demo.add_argument("--scenario", default="bad-release")
    demo.add_argument("--report-dir", type=Path, default=Path("reports"))
    demo.add_argument("--time-scale", type=float, default=DEMO_TIME_SCALE)
    demo.add_argument("--record-tail", type=Path, metavar="DIR",
                     help="save each watched worker's tail and a replay context in DIR (for `rollout replay`)")
    _common(demo)

    watch = sub.add_parser("watch", help="watch live workers under guards for hours (metrics, alerts, hourly)")
    watch.add_argument("workers", nargs="+", metavar="WORKER")
    watch.add_argument("--for", dest="duration", default="24h", help="how long to watch (e.g. 24h, 30m, 30s)")
    guards = watch.add_mutually_exclusive_group()
    guards.add_argument("--guards", type=Path, metavar="FILE", help="a Python file defining `guards = [...]`")
    guards.add_argument("--plan", type=Path, metavar="PLAN", help="use the guards of this plan")
    watch.add_argument("--rollback-on-breach", action="store_true",
                       help="roll a breached worker back to its previous 100%% version (default: alert only)")
    watch.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on this port")
    watch.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST")
    watch.add_argument("--webhook", metavar="URL", help="POST JSON alerts (Slack-compatible) to this URL")
    watch.add_argument("--blind-alert", default="60s", metavar="DURATION", help="alert on blind spells this long")
    watch.add_argument("--max-blind", default="20%", metavar="SHARE",
                       help="exit 5 (blind) when a worker's tail was blind for more than this share of the watch "
                            "(default 20%%; a tail that carried no event at all is always blind)")
    watch.add_argument("--baseline", default="60s", metavar="DURATION", help="baseline = the first window (0: none)")
    watch.add_argument("--source", choices=("wrangler", "ws"), default="wrangler", help="how to read the tail")
    watch.add_argument("--sim", action="store_true", help="start the local simulator in-process and watch it")
    watch.add_argument("--scenario", default="healthy", help="simulator scenario (name or file), with --sim")
    _common(watch)

    report = sub.add_parser("report", help="hourly summaries and breaches of recent watches, as markdown")
    report.add_argument("--since", default="24h", metavar="DURATION",
                        help="the hours that overlap the last DURATION, and its breaches (e.g. 24h, 10m)")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    _common(report)

    replay = sub.add_parser("replay", help="run a plan's guards over a recorded tail, in event time")
    replay.add_argument("tail_file", type=Path, metavar="TAIL_FILE")
    replay.add_argument("--plan", type=Path, required=True)
    replay.add_argument("--json", action="store_true", help="print one JSON object")
    replay.add_argument("--baseline", metavar="DURATION",
                        help="baseline: the first DURATION of the recording (ignores a live run's context)")
    replay.add_argument("--context", type=Path, metavar="FILE",
                        help="a live run's context (default: NAME.context.json beside NAME.tail.json, if there)")
    _common(replay)

    record = sub.add_parser("record", help="save a worker's tail (wrangler's JSON output) for `rollout replay`")
    record.add_argument("worker")
    record.add_argument("--for", dest="duration", default="10m", metavar="DURATION")
    record.add_argument("--out", type=Path, help="file to write (default: WORKER-TIME.tail.json)")
    record.add_argument("--sim", action="store_true", help="record from a simulator started in-process")
    record.add_argument("--scenario", default="healthy", help="simulator scenario, with --sim")
    _common(record)

    preflight = sub.add_parser("preflight", help="check wrangler, configs, resources, artifacts and git; no changes")
    preflight.add_argument("plan", type=Path, nargs="?", help="a plan file (or give --config)")
    preflight.add_argument("--config", type=Path, action="append", help="a wrangler config (repeatable)")
    preflight.add_argument("--sim", action="store_true", help="check against an in-process simulator")
    preflight.add_argument("--scenario", default="healthy", help="simulator scenario, with --sim")
    preflight.add_argument("--require-clean", action="store_true", help="the git tree must be clean")
    preflight.add_argument("--require-tag", action="store_true", help="HEAD must be tagged")
    preflight.add_argument("--require-artifacts", action="store_true",
                           help="every worker needs dist/build-manifest.json from the current commit")
    preflight.add_argument("--manifest", action="append", metavar="WORKER=PATH", help="a worker's build manifest")
    _common(preflight)

    unlock = sub.add_parser("unlock", help="remove the rollout lock of workers whose rollout is gone")
    unlock.add_argument("workers", nargs="+", metavar="WORKER")
    unlock.add_argument("--yes", action="store_true", help="do not ask")
    unlock.add_argument("--account", action="store_true", help="also remove the account-wide (KV) lock")
    unlock.add_argument("--sim", action="store_true", help="the lock of simulator rehearsals")
    _common(unlock)

    for name, what in (("pause", "hold a running rollout: the next phase does not start, a bake does not end"),
                       ("resume", "let a paused rollout go on"),
                       ("promote", "answer its waiting gate yes, or end the current bake's minimum time "
                                   "(evidence is still required)"),
                       ("abort", "stop a running rollout now: roll back what it changed, verify, report")):
        control = sub.add_parser(name, help=what)
        control.add_argument("rollout_id", nargs="?", metavar="ROLLOUT_ID",
                             help="default: the running rollout of this journal")
        _common(control)

    rules = sub.add_parser("prometheus-rules", help="Prometheus alerting rules from a plan's guards (JSON = YAML)")
    rules.add_argument("plan", type=Path, nargs="?", help="the plan (default: the runbook's guards)")
    rules.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    rules.add_argument("--job", default="rollout", help="the scrape job's name, for the exporter-down rule")
    _common(rules)

    grafana = sub.add_parser("grafana", help="a Grafana dashboard (JSON) of the exported series")
    grafana.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    _common(grafana)

    sub.add_parser("sim", help="run the local Cloudflare simulator (see `rollout sim --help`)", add_help=False)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rollout")
    except PackageNotFoundError:
        return "unknown"


def _console(args: argparse.Namespace) -> Console:
    """One console for the run.  ``NO_COLOR`` (any value) and ``--no-tty`` turn colour off, as rich itself
    would; ``--color always|never`` wins over both."""
    if args.color == "always":
        return Console(force_terminal=True, no_color=False)
    if args.color == "never" or args.no_tty or os.environ.get("NO_COLOR"):
        return Console(no_color=True)
    return Console()


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "sim":
        from .sim.cli import main as sim_main

        return sim_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    console = _console(args)
    from .runner import configure_logging

    configure_logging(args.journal.parent)
    try:
        return anyio.run(_dispatch, args, console)
    except KeyboardInterrupt:
        console.print("interrupted", markup=False)
        return 130
    except PlanError as exc:
        console.print(f"plan error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except UsageError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except RolloutError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except BaseExceptionGroup as group:  # a RolloutError raised inside a task group (e.g. LockHeld)
        matched, _ = group.split(RolloutError)
        if matched is None:
            return _internal_error(group, console, args.journal.parent)
        leaf: BaseException = matched
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        console.print(f"{'plan error' if isinstance(leaf, PlanError) else 'error'}: {leaf}", markup=False,
                      highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except Exception as exc:  # a bug of ours: one line here, the traceback in the log
        return _internal_error(exc, console, args.journal.parent)


def _internal_error(exc: BaseException, console: Console, run_dir: Path) -> int:
    from .failures import explain

    failure = explain(exc)
    text = failure.text if failure.internal else f"internal error while running {failure.text}"
    console.print(f"error: {text} (log: {run_dir / 'rollout.log'})", markup=False, highlight=False, soft_wrap=True)
    return EXIT_INTERNAL


async def _dispatch(args: argparse.Namespace, console: Console) -> int:
    from . import commands

    name = "control" if args.command in ("pause", "resume", "promote", "abort") else args.command.replace("-", "_")
    handler = getattr(commands, f"cmd_{name}")
    code: int = await handler(args, console)
    return code


if __name__ == "__main__":
    sys.exit(main())
