"""``rollout record``: save a worker's tail, exactly as ``wrangler tail --format json`` printed it, for
``rollout replay``.

The tail runs through :class:`~rollout.sources.WranglerTailSource` (restarted when it drops, like the live
monitor's) for a fixed time; a :class:`~rollout.tailfile.TailWriter` writes the chunks from its own task, so
the source's callback never blocks on the disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .durations import format_duration, parse_duration
from .errors import UsageError
from .runner import open_target
from .sources import WranglerTailSource
from .tailfile import TailWriter
from .wrangler import Wrangler

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["RecordOptions", "record_tail"]


@dataclass(frozen=True)
class RecordOptions:
    """Everything ``rollout record`` takes.

    Args:
        worker: the worker whose tail to save.
        duration: how long to record (``"10m"``, seconds, ...).
        out: the file to write; default ``WORKER-YYYYmmdd-HHMMSS.tail.json`` in the current folder.
        sim: record from a simulator started in-process (running ``scenario``).
        api_base: record from a running simulator at this API base URL.
        run_dir: where wrangler keeps its logs.
    """

    worker: str
    duration: str | float = "10m"
    out: Path | None = None
    sim: bool = False
    scenario: str = "healthy"
    api_base: str | None = None
    run_dir: Path = Path(".rollout")


async def record_tail(options: RecordOptions, console: Console) -> int:
    """Record the tail to a file; 0 when something was recorded, 2 when nothing came."""
    try:
        seconds = parse_duration(options.duration)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    out = options.out or Path(f"{options.worker}-{time.strftime('%Y%m%d-%H%M%S')}.tail.json")
    await anyio.Path(options.run_dir).mkdir(parents=True, exist_ok=True)
    async with open_target(options.sim, options.scenario, options.api_base, options.run_dir) as (target, _):
        wrangler = Wrangler.for_project(None, target.env, options.run_dir / "wrangler")
        source = WranglerTailSource(argv=wrangler.tail_argv(options.worker), env=wrangler.process_env(),
                                    clock=time.time)
        console.print(f"recording the tail of {options.worker} ({target.name}) for {format_duration(seconds)} "
                      f"to {out}", markup=False, highlight=False)
        written = await _record(source, out, seconds)
    console.print(f"wrote {written} bytes to {out} ({source.status.sessions} tail session(s))", markup=False,
                  highlight=False)
    if not written:
        console.print("nothing was recorded: is the worker deployed and receiving traffic?", markup=False)
        return 2
    return 0


async def _record(source: WranglerTailSource, out: Path, seconds: float) -> int:
    writer = TailWriter(out)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        with anyio.move_on_after(seconds):
            await source.run(writer.write)
        writer.close()
    return writer.written
