"""Small pure pieces of watch: the rollback target, guards files, the markdown report, the CLI report."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from rollout.cli import main
from rollout.errors import UsageError
from rollout.guards import LogRate
from rollout.hourly import HourSummary, render_markdown
from rollout.journal import Journal
from rollout.watch import load_guards, pick_previous


def deployment(created: str, *versions: tuple[str, float]) -> dict[str, object]:
    return {"created_on": created, "versions": [{"version_id": v, "percentage": p} for v, p in versions]}


def test_previous_version_is_the_newest_earlier_sole_version() -> None:
    """The target is the second newest single-version-at-100% deployment, whatever the list order."""
    deployments = [
        deployment("2026-01-01T00:00:00Z", ("v1", 100)),
        deployment("2026-01-02T00:00:00Z", ("v2", 100)),
        deployment("2026-01-03T00:00:00Z", ("v2", 90), ("v3", 10)),
        deployment("2026-01-04T00:00:00Z", ("v3", 100)),
    ]
    assert pick_previous(deployments) == ("v3", "v2")
    assert pick_previous(list(reversed(deployments))) == ("v3", "v2")
    assert pick_previous(deployments[:3]) == (None, "v2")  # mid-split: back to the last sole version
    assert pick_previous(deployments[:1]) == ("v1", None)


def test_guards_file(tmp_path: Path) -> None:
    """A guards file defines ``guards = [...]``; anything else is a usage error that names the file."""
    good = tmp_path / "guards.py"
    good.write_text("from rollout.guards import LogRate\nguards = [LogRate(pattern='do_churn', max_per_hour=10)]\n")
    (guard,) = load_guards(good, None)
    assert isinstance(guard, LogRate)
    assert guard.max_per_hour == 10
    bad = tmp_path / "bad.py"
    bad.write_text("guards = 3\n")
    with pytest.raises(UsageError, match="bad.py"):
        load_guards(bad, None)
    assert [g.name for g in load_guards(None, None)] == ["error_rate", "do_churn_per_hour", "do_young_per_hour"]


def test_markdown_report_flags_breached_hours() -> None:
    """One table per worker; an hour with a breach is marked."""
    hour = HourSummary("cf-ssai", 1_800_000_000.0, 72_000, 36, churn=900, young=3, created=4, breaches=1,
                       reconnects=1, blind_s=2.0, sampled=False)
    row = {"worker": hour.worker, "hour_start": hour.hour_start, "requests": hour.requests, "errors": hour.errors,
           **hour.data()}
    text = render_markdown([row])
    assert "## cf-ssai" in text
    assert "| 72000 | 36 | 0.05% | 900 | 3 | 1 **!** | 1 | 2.0 |" in text
    assert "No hourly summaries" in render_markdown([])


def test_report_command_renders_the_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``rollout report --since 24h`` prints the hours the journal holds."""
    journal_path = tmp_path / "journal.sqlite"

    async def fill() -> None:
        import time

        async with Journal(journal_path) as journal:
            await journal.record_hour("watch-1", "cf-ssai", time.time() - 3600, 100, 2,
                                      {"churn": 7, "breaches": 0, "reconnects": 1, "blind_s": 0.5})

    anyio.run(fill)
    assert main(["report", "--since", "24h", "--journal", str(journal_path), "--no-tty"]) == 0
    out = capsys.readouterr().out
    assert "## cf-ssai" in out
    assert "| 100 | 2 | 2.00% | 7 |" in out
