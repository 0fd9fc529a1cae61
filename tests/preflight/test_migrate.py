"""D1 migrations with real wrangler against the simulator: N, then 0, then exactly 1 new."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from rollout.migrations import D1Migrator, parse_pending
from rollout.runner import RunOptions, run_plan
from rollout.sim import Simulator
from rollout.wrangler import Wrangler

from .conftest import DB_ID, scenario, write

pytestmark = pytest.mark.wrangler


def d1_project(directory: Path) -> Path:
    config = write(directory / "app" / "wrangler.toml", f'''
        name = "mig-worker"
        main = "src/index.js"
        compatibility_date = "2026-04-01"

        [[d1_databases]]
        binding = "DB"
        database_name = "app-db"
        database_id = "{DB_ID}"
        ''')
    write(directory / "app" / "src" / "index.js", "export default { fetch() { return new Response('ok') } }\n")
    write(directory / "app" / "migrations" / "0001_init.sql", "CREATE TABLE ads (id INTEGER PRIMARY KEY);\n")
    write(directory / "app" / "migrations" / "0002_cues.sql", "CREATE TABLE cues (id INTEGER PRIMARY KEY);\n")
    return config


RESOURCES = f'd1 = [{{ name = "app-db", id = "{DB_ID}" }}]'


async def test_apply_n_then_0_then_1(workdir: Path) -> None:
    """Two pending → 2 applied; again → 0; one new file → exactly 1; commands use the binding name."""
    config = d1_project(workdir)
    async with Simulator(scenario=scenario(workdir, RESOURCES), traffic_rate=0) as sim:
        migrator = D1Migrator(Wrangler.for_project(workdir, sim.env(), workdir / "run"), config, "DB")
        first = await migrator.migrate(config.parent / "migrations")
        assert first.applied == ("0001_init.sql", "0002_cues.sql")
        assert ("d1", "migrations", "apply", "DB", "--remote", "--config", "wrangler.toml") in first.commands
        assert all("app-db" not in argv for argv in first.commands)
        second = await migrator.migrate(config.parent / "migrations")
        assert second.applied == ()
        assert [argv[2] for argv in second.commands] == ["list"]
        write(config.parent / "migrations" / "0003_more.sql", "ALTER TABLE ads ADD COLUMN name TEXT;\n")
        third = await migrator.migrate(config.parent / "migrations")
        assert third.applied == ("0003_more.sql",)
        db = sim.state.storage.find_d1("app-db")
        assert db.applied_migrations() == ["0001_init.sql", "0002_cues.sql", "0003_more.sql"]


async def test_migrate_phase_journals_and_is_idempotent(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Migrate phase in a plan records what it applied; the second run of the plan applies nothing."""
    config = d1_project(workdir)
    plan = write(workdir / "plan.py", f'''
        from phases import Migrate
        from rollout import Plan, Worker

        app = Worker("mig-worker", config={str(config)!r}, watch=False, new=True)
        plan = Plan(name="migrate", workers=[app], baseline="0s", phases=[Migrate(app)])
        ''')
    async with Simulator(scenario=scenario(workdir, RESOURCES), traffic_rate=0) as sim:
        monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", sim.account_id)
        counts = []
        for run in range(2):
            console = Console(file=(workdir / f"out{run}.txt").open("w"), width=200, color_system=None)
            outcome = await run_plan(RunOptions(plan_path=plan, api_base=sim.api_base_url, yes=True, tty=False,
                                                report_dir=workdir / f"reports{run}", console=console,
                                                journal_path=workdir / ".rollout" / "journal.sqlite"))
            assert outcome.result.exit_code == 0, outcome.result.detail
            counts.append(len(outcome.report["migrations"]))  # type: ignore[arg-type]
        assert counts == [2, 0]


def test_parse_pending_tables() -> None:
    """wrangler's box tables and its "nothing to apply" line."""
    table = "Migrations to be applied:\n┌──┐\n│ Name │\n│ 0001_a.sql │\n│ 0002_b.sql │\n└──┘\n"
    assert parse_pending(table) == ["0001_a.sql", "0002_b.sql"]
    assert parse_pending("✅ No migrations to apply!") == []


def test_report_says_when_a_rollback_crosses_a_migration() -> None:
    """A rollback of a worker whose D1 migrations this rollout applied says they stay applied."""
    from rollout.bus import RollbackDone
    from rollout.report import ReportInput, build_report, render_markdown, render_summary

    event = RollbackDone(worker="mig-worker", from_version="v2", to_version="v1", attempts=1, verified=True,
                         detail="ok", recovered=True)
    report = build_report(ReportInput("r1", "p", "simulator", "rolled_back", 1, "guard", 0.0, 10.0, [event],
                                      migrations=[("mig-worker", "DB", "0003_more.sql")]))
    assert report["rollbacks"][0]["migrations_not_rolled_back"] == ["0003_more.sql"]
    assert "D1 data is never rolled back" in render_markdown(report)
    summary = render_summary(report)
    assert "0003_more.sql" in summary and "Rollback Available:" in summary
