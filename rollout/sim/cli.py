"""``rollout sim``: run the simulator in the foreground.

stdout starts with ``KEY=value`` lines a shell can export, then one line per API call, until
SIGINT/SIGTERM.

A signal always stops it, and with exit code 0: the first SIGINT or SIGTERM asks the event loop to shut
down cleanly; if the loop has not finished :data:`_GRACE` seconds later (it is starved by work, or a
write blocks), an alarm interrupts whatever runs with :class:`SystemExit`, and :data:`_HARD_GRACE`
seconds after that the process exits without cleaning up.  Beyond loopback (``--host``) the API needs
the random ``CLOUDFLARE_API_TOKEN`` printed on stdout, and a warning goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import anyio

from rollout.errors import SimulatorError
from rollout.sim._http import DEFAULT_MAX_CONNECTIONS
from rollout.sim.scenario import shipped_scenarios
from rollout.sim.simulator import Simulator, is_loopback

_KEYS = ("CLOUDFLARE_API_BASE_URL", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "ROLLOUT_EDGE_URL")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: seconds a clean stop may take before the running code is interrupted
_GRACE = 3.0
#: seconds after that interruption before the process exits without any clean-up
_HARD_GRACE = 2.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollout sim",
        description="A local Cloudflare API + tail + edge simulator that the real wrangler talks to.",
        epilog="Shipped scenarios: " + ", ".join(shipped_scenarios()),
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--host", default=None,
                        help="address to bind (default 127.0.0.1; anything else only when given here, and then "
                             "the API needs the random CLOUDFLARE_API_TOKEN printed at start)")
    parser.add_argument("--scenario", default="healthy", help="a shipped scenario name or a TOML file")
    parser.add_argument("--state", type=Path, default=None, help="SQLite file that keeps state across restarts")
    parser.add_argument("--traffic-rate", type=float, default=None,
                        help="generated requests per second per worker (overrides the scenario)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated time runs this many times faster")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        help=f"simultaneous connections served; more are closed at once (default "
                             f"{DEFAULT_MAX_CONNECTIONS})")
    return parser


class _Stop:
    """SIGINT/SIGTERM handling that works even when the event loop is too busy to run callbacks.

    The handlers are Python-level (:func:`signal.signal`), so they run in the main thread between
    bytecodes whatever the loop is doing.  The first signal sets :attr:`event` through the loop and arms
    an alarm; see the module docstring for what the alarm does.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.event: anyio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._alarms = 0
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal only works there; the caller then stops us by cancelling
        for signum in (*_SIGNALS, signal.SIGALRM):
            self._previous[signum] = signal.getsignal(signum)
        for signum in _SIGNALS:
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_alarm)

    def uninstall(self) -> None:
        if not self._previous:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]  # getsignal's result is valid here
        self._previous.clear()

    def attach(self) -> anyio.Event:
        """The event a running loop waits on; already set if a signal came before the loop ran."""
        self.event = anyio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(self._loop_exception)
        if self.signum is not None:
            self.event.set()
        return self.event

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's handler, minus the report of our own alarm's SystemExit at shutdown."""
        exc = context.get("exception")
        if self._alarms and isinstance(exc, BaseException) and _only_system_exit(exc):
            return
        loop.default_exception_handler(context)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # already stopping; the alarm takes care of a stop that hangs
        self.signum = signum
        signal.setitimer(signal.ITIMER_REAL, _GRACE)
        if self._loop is not None and self.event is not None:
            self._loop.call_soon_threadsafe(self.event.set)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        self._alarms += 1
        if self._alarms == 1:
            os.write(2, f"rollout sim: not stopped {_GRACE:g} s after the signal; interrupting\n".encode())
            signal.setitimer(signal.ITIMER_REAL, _HARD_GRACE)
            raise SystemExit(0)
        os.write(2, b"rollout sim: still not stopped; exiting without clean-up\n")
        os._exit(0)


def _only_system_exit(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_system_exit(e) for e in exc.exceptions)
    return isinstance(exc, SystemExit)


def _startup_log() -> logging.Handler:
    """Warnings while starting (file limits, the connection cap, binding beyond loopback) go to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("rollout sim: %(levelname)s: %(message)s"))
    log = logging.getLogger("rollout.sim")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler


def _log_to_stdout(startup: logging.Handler) -> None:
    """One line per API call (and per fault) on stdout, after the KEY=value lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger("rollout.sim")
    log.removeHandler(startup)
    log.addHandler(handler)


async def _run(args: argparse.Namespace, stop: _Stop) -> None:
    stopped = stop.attach()
    host = args.host or "127.0.0.1"
    sim = Simulator(
        args.scenario, port=args.port, host=host, state_path=args.state, speed=args.speed,
        traffic_rate=args.traffic_rate, allow_remote=args.host is not None, max_connections=args.max_connections,
    )
    if not is_loopback(host):
        warning = (f"rollout sim: WARNING: binding {host}, beyond loopback: whoever reaches the port can use the "
                   "API and tails with the CLOUDFLARE_API_TOKEN printed on stdout, and the edge "
                   "(ROLLOUT_EDGE_URL) with no token at all")
        print(warning, file=sys.stderr, flush=True)  # noqa: T201
    startup = _startup_log()
    async with sim:
        env = sim.env()
        for key in _KEYS:
            print(f"{key}={env[key]}", flush=True)  # noqa: T201
        _log_to_stdout(startup)
        await stopped.wait()
        name = signal.Signals(stop.signum).name if stop.signum is not None else "request"
        logging.getLogger("rollout.sim").info("stopping on %s", name)


def main(argv: list[str]) -> int:
    """Entry point of ``rollout sim``; ``argv`` excludes the program and the ``sim`` word."""
    args = _parser().parse_args(argv)
    stop = _Stop()
    stop.install()
    try:
        anyio.run(_run, args, stop)
    except SimulatorError as exc:
        print(f"rollout sim: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        stop.uninstall()
    return 0
