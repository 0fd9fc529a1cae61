"""A tail that goes blind and stays blind is an alert, not silence (real wrangler against the simulator)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from rich.console import Console

from rollout.guards import LogRate
from rollout.sim import Simulator
from rollout.watch import WatchOptions, WatchResult, run_watch

from .helpers import Receiver

pytestmark = pytest.mark.wrangler

# The tail socket closes after 3 s, and every tail creation after the first fails: the watch cannot see.
SCENARIO = """
name = "blind"
base = "healthy"
[faults.tail]
drop_every = 3.0
[[faults.api]]
call = "tail-create"
skip = 1
times = 0
status = 500
code = 10013
"""


@pytest.mark.parametrize("source", ["wrangler", "ws"])
async def test_a_long_blind_spell_alerts_and_is_counted(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                        source: str) -> None:
    """After the socket drops and the tail cannot be re-created for longer than blind_alert_s, the webhook
    gets a "blind" alert naming the worker, and the summary counts the blind seconds."""
    scenario = workdir / "blind.toml"
    scenario.write_text(SCENARIO)
    receiver = Receiver()
    results: list[WatchResult] = []
    async with Simulator(scenario=str(scenario), traffic_rate=20) as sim, anyio.create_task_group() as tg:
        monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", sim.account_id)
        await tg.start(receiver.serve)
        options = WatchOptions(
            workers=["cf-ssai"], duration_s=16, api_base=sim.api_base_url, webhook=receiver.url, source=source,
            baseline_s=0, blind_alert_s=4, tty=False,
            guards=[LogRate(pattern="do_churn", max_per_hour=50, window_s=60, action="rollback")],
            console=Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None),
            journal_path=workdir / ".rollout" / "journal.sqlite")
        with anyio.fail_after(90):
            results.append(await run_watch(options))
        tg.cancel_scope.cancel()
    (result,) = results
    (summary,) = result.workers
    assert summary.requests > 0  # it saw the first session
    assert summary.blind_s > 4
    blind = [body for body in receiver.bodies if body.get("kind") == "blind"]
    assert blind, receiver.kinds()
    assert "cf-ssai" in blind[0]["text"] and "blind" in blind[0]["text"]
