"""``rollout sim``: run the simulator in the foreground.

stdout starts with ``KEY=value`` lines a shell can export, then one line per API call, until
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import anyio

from rollout.errors import SimulatorError
from rollout.sim.scenario import shipped_scenarios
from rollout.sim.simulator import Simulator

_KEYS = ("CLOUDFLARE_API_BASE_URL", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "ROLLOUT_EDGE_URL")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollout sim",
        description="A local Cloudflare API + tail + edge simulator that the real wrangler talks to.",
        epilog="Shipped scenarios: " + ", ".join(shipped_scenarios()),
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--host", default=None,
                        help="address to bind (default 127.0.0.1; anything else only when given here)")
    parser.add_argument("--scenario", default="healthy", help="a shipped scenario name or a TOML file")
    parser.add_argument("--state", type=Path, default=None, help="SQLite file that keeps state across restarts")
    parser.add_argument("--traffic-rate", type=float, default=None,
                        help="generated requests per second per worker (overrides the scenario)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated time runs this many times faster")
    return parser


def _log_to_stdout() -> None:
    """One line per API call (and per fault) on stdout, after the KEY=value lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger("rollout.sim")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


async def _run(args: argparse.Namespace) -> None:
    host = args.host or "127.0.0.1"
    sim = Simulator(
        args.scenario, port=args.port, host=host, state_path=args.state, speed=args.speed,
        traffic_rate=args.traffic_rate, allow_remote=args.host is not None,
    )
    async with sim:
        env = sim.env()
        for key in _KEYS:
            print(f"{key}={env[key]}", flush=True)  # noqa: T201
        _log_to_stdout()
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                logging.getLogger("rollout.sim").info("stopping on %s", signal.Signals(signum).name)
                return


def main(argv: list[str]) -> int:
    """Entry point of ``rollout sim``; ``argv`` excludes the program and the ``sim`` word."""
    args = _parser().parse_args(argv)
    try:
        anyio.run(_run, args)
    except SimulatorError as exc:
        print(f"rollout sim: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
