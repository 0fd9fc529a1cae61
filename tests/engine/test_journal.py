"""The journal keeps rollouts, events and changes across processes."""

from __future__ import annotations

from pathlib import Path

from rollout.bus import Message
from rollout.journal import Change, Journal, latest_changes


async def test_changes_survive_reopen(tmp_path: Path) -> None:
    """What one process wrote, the next reads: the basis of `rollback --last` after SIGKILL."""
    path = tmp_path / "j.sqlite"
    async with Journal(path) as journal:
        await journal.start_rollout("r1", "plan", "/p/plan.py", "simulator", "http://x/client/v4", None, 1.0, 42)
        await journal.record_change(Change("r1", "a", "v1", None, "deploy a", 2.0, "intent"))
        await journal.record_change(Change("r1", "a", "v1", "v2", "deploy a", 3.0, "done"))
        await journal.record_change(Change("r1", "b", "w1", None, "deploy b", 4.0, "intent"))
        await journal.append("r1", [Message(text="hello")])
    async with Journal(path) as journal:
        (record,) = await journal.rollouts()
        assert record.id == "r1" and record.outcome is None and record.api_base == "http://x/client/v4"
        merged = latest_changes(await journal.changes("r1"))
        assert [(c.worker, c.before, c.after) for c in merged] == [("a", "v1", "v2"), ("b", "w1", None)]
        events = await journal.events("r1", kinds=["Message"])
        assert events[0]["text"] == "hello"
        await journal.finish("r1", 5.0, "succeeded", 0)
        assert (await journal.rollouts())[0].outcome == "succeeded"
