"""The command line: parse arguments, call the library, print one line on error, return an exit code.

Exit codes: 0 success, 1 rolled back and verified, 2 plan or usage error (nothing changed),
3 rollback failed or unverified.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
from rich.console import Console

from .errors import PlanError, RolloutError, UsageError
from .journal import DEFAULT_JOURNAL

EXAMPLE_PLAN = Path(__file__).resolve().parent.parent / "examples" / "cf_ssai" / "plan.py"
DEMO_TIME_SCALE = 0.03


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-tty", action="store_true", help="plain line-per-event output (for CI logs)")
    parser.add_argument("--api-base", metavar="URL", help="use a running simulator at this API base URL")
    parser.add_argument("--journal", type=Path, default=DEFAULT_JOURNAL, help="journal file (SQLite)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rollout", description="Staged rollouts for Cloudflare Workers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a rollout plan")
    run.add_argument("plan", type=Path)
    run.add_argument("--sim", action="store_true", help="start the local simulator in-process and run against it")
    run.add_argument("--scenario", default="healthy", help="simulator scenario (name or file), with --sim")
    run.add_argument("--yes", action="store_true", help="approve every gate without asking")
    run.add_argument("--report-dir", type=Path, default=Path("reports"))
    run.add_argument("--time-scale", type=float, default=1.0, help="multiply plan durations (e.g. 0.05)")
    _common(run)

    plan = sub.add_parser("plan", help="dry run: show phases, guards and the exact commands")
    plan.add_argument("plan", type=Path)
    _common(plan)

    status = sub.add_parser("status", help="show the last rollouts from the journal")
    status.add_argument("-n", type=int, default=10)
    _common(status)

    rollback = sub.add_parser("rollback", help="roll back what a rollout changed")
    rollback.add_argument("--last", action="store_true", required=True, help="the last rollout in the journal")
    rollback.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _common(rollback)

    demo = sub.add_parser("demo", help="run examples/cf_ssai/plan.py against the simulator (about a minute)")
    demo.add_argument("--scenario", default="bad-release")
    demo.add_argument("--report-dir", type=Path, default=Path("reports"))
    demo.add_argument("--time-scale", type=float, default=DEMO_TIME_SCALE)
    _common(demo)

    sub.add_parser("sim", help="run the local Cloudflare simulator (see `rollout sim --help`)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "sim":
        from .sim.cli import main as sim_main

        return sim_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    console = Console(no_color=args.no_tty, force_terminal=None)
    from .runner import configure_logging

    configure_logging(args.journal.parent)
    try:
        return anyio.run(_dispatch, args, console)
    except KeyboardInterrupt:
        console.print("interrupted", markup=False)
        return 130
    except PlanError as exc:
        console.print(f"plan error: {exc}", markup=False, highlight=False)
        return 2
    except UsageError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False)
        return 2
    except RolloutError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False)
        return 2


async def _dispatch(args: argparse.Namespace, console: Console) -> int:
    from . import commands

    handler = getattr(commands, f"cmd_{args.command}")
    code: int = await handler(args, console)
    return code


if __name__ == "__main__":
    sys.exit(main())
