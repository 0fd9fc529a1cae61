"""SIGINT and SIGTERM during a run: the first aborts (roll back what changed, verify, report), the second
exits at once and says exactly what is left live and the command that undoes it.

A cancelled CI job sends SIGTERM, a person presses Ctrl-C: both must leave no bad version live.  The
rollback that follows the first signal is shielded from cancellation, so only a second signal can cut it
short, and then the person is told what to do by hand.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

import anyio

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class LeftLive:
    """A worker this run changed and has not (yet) rolled back and verified."""

    worker: str
    live: str | None
    undo_to: str | None

    def line(self) -> str:
        if self.undo_to is None:
            return (f"  {self.worker}: {self.live or 'a new version'} is live; it did not exist before "
                    f"(remove it with: wrangler delete --name {self.worker})")
        return (f"  {self.worker}: {self.live or 'the new version'} may be live; undo with: "
                f"wrangler rollback {self.undo_to} --name {self.worker} -y")


def exit_code_for(signum: int) -> int:
    """128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells do."""
    return 128 + signum


def can_handle_signals() -> bool:
    """Signal handlers can only be installed from the main thread."""
    return threading.current_thread() is threading.main_thread()


async def watch_signals(on_first: Callable[[int], None], left_live: Callable[[], list[LeftLive]]) -> None:
    """Call ``on_first(signum)`` on the first SIGINT/SIGTERM; on the second, write what is left live to
    stderr and exit the process at once (the only output that bypasses the view: it is the last)."""
    with anyio.open_signal_receiver(*SIGNALS) as signals:
        first = True
        async for signum in signals:
            if first:
                first = False
                on_first(signum)
                continue
            name = signal.Signals(signum).name
            left = left_live()
            lines = [f"\nrollout: second {name}: exiting now, without finishing the rollback."]
            if left:
                lines.append("left live, not rolled back and verified:")
                lines += [item.line() for item in left]
                lines.append("or run: rollout rollback --last --yes")
            else:
                lines.append("nothing this run changed is left live.")
            os.write(2, ("\n".join(lines) + "\n").encode())
            os._exit(exit_code_for(signum))
