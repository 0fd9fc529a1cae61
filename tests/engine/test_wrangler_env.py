"""The user's shell must not change what rollout reads from wrangler.

``WRANGLER_LOG=debug`` once put debug lines before the JSON of ``deployments status --json``; rollout took
the first ``{`` and recorded "before = None", so a breach got no rollback.  Each variable below is set in
rollout's own environment (as a user's shell would), then a real wrangler deploy runs through the engine
against the simulator, and the journal's before/after must be the simulator's real versions.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from rich.console import Console

from rollout._node import bundled_wrangler_cli
from rollout.errors import WranglerError
from rollout.runner import RunOptions, run_plan
from rollout.sim import Simulator
from rollout.wrangler import Wrangler, json_document, parse_deployment_status, wrangler_env

from .conftest import write_plan

WORKER = "cf-ssai"

# Measured: 4.164.0 with WRANGLER_LOG=debug, `deployments status --json` (shortened, same shape).
DEBUG_STDOUT = '''🪵  Writing logs to "/tmp/h/.config/.wrangler/logs/wrangler-2026-12-01_21-39-21_979.log"
.env file not found at "/tmp/p/.env". Continuing... For more details, refer to https://developers.cloudflare.com/x
Metrics dispatcher: Dispatching disabled - would have sent {"deviceId":"374f","event":"wrangler command started"}.
Saving to cache: {"account":{"id":"5eed","name":""}}
-- START CF API REQUEST: GET http://127.0.0.1:45561/client/v4/accounts/5eed/workers/scripts/cf-ssai/deployments
QUERY STRING: omitted; set WRANGLER_LOG_SANITIZE=false to include sanitized data
-- END CF API REQUEST
-- START CF API RESPONSE:  200
RESPONSE: omitted; set WRANGLER_LOG_SANITIZE=false to include sanitized data
-- END CF API RESPONSE
{
  "id": "b88e89d2-80d4-4f07-9866-b303f299094e",
  "source": "wrangler",
  "annotations": {
    "workers/message": "x"
  },
  "versions": [
    {
      "version_id": "8e4738d7-364d-46cd-8b77-f77c8f2299de",
      "percentage": 100
    }
  ]
}
Metrics dispatcher: Dispatching disabled - would have sent {"deviceId":"042e","event":"wrangler command completed"}.
'''


def unused_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the parser and the environment, without wrangler ---------------------------------------------------

def test_json_document_skips_debug_lines() -> None:
    """The document is the last JSON value at column 0 that ends its line, not the first brace."""
    state = parse_deployment_status(WORKER, DEBUG_STDOUT)
    assert state.sole_version == "8e4738d7-364d-46cd-8b77-f77c8f2299de"
    assert state.deployment_id == "b88e89d2-80d4-4f07-9866-b303f299094e"
    assert json_document('[{"a": 1}]\n') == [{"a": 1}]
    assert json_document('{"first": 1}\nnoise {"x": 2}\n{"second": 2}\ntrailing words\n') == {"second": 2}
    assert json_document('\x1b[2m{"coloured": true}\x1b[0m\n') == {"coloured": True}
    with pytest.raises(ValueError, match="no JSON document"):
        json_document("Metrics dispatcher: would have sent {\"a\": 1}.\n")
    with pytest.raises(WranglerError, match="no deployment"):
        parse_deployment_status(WORKER, "[1, 2]")


def test_env_pins_what_the_user_may_have_set() -> None:
    """Debug level, colour forcing and proxies of the user's shell do not reach wrangler; NO_PROXY covers loopback."""
    user = {"WRANGLER_LOG": "debug", "FORCE_COLOR": "1", "NO_COLOR": "0", "CI": "false",
            "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "NO_PROXY": "corp.example",
            "PATH": "/usr/bin"}
    env = wrangler_env({"CLOUDFLARE_API_TOKEN": "t"}, base=user)
    assert env["WRANGLER_LOG"] == "log" and "FORCE_COLOR" not in env
    assert env["NO_COLOR"] == "1" and env["CI"] == "true" and env["PATH"] == "/usr/bin"
    assert "HTTPS_PROXY" not in env and "http_proxy" not in env
    assert env["NO_PROXY"] == env["no_proxy"] == "corp.example,127.0.0.1,localhost,::1"
    # a deliberate setting (the target's or the plan's env) still wins
    assert wrangler_env({"WRANGLER_LOG": "debug"}, base=user)["WRANGLER_LOG"] == "debug"


# -- real wrangler against the simulator ----------------------------------------------------------------

@pytest.fixture
def wrangler_4_86(monkeypatch: pytest.MonkeyPatch) -> None:
    """rollout starts wrangler 4.86.0 (ROLLOUT_WRANGLER wins over the bundled default)."""
    monkeypatch.setenv("ROLLOUT_WRANGLER", str(bundled_wrangler_cli("4.86.0")))


async def _deploy_through_engine(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                 variables: dict[str, str]) -> tuple[dict[str, object], str, str]:
    """Run `Deploy(manifest)` with ``variables`` in rollout's environment; (the change, before, after)."""
    async with Simulator("healthy") as sim:
        (before, _), = sim.active_versions(WORKER)
        for name, value in {**sim.env(), **variables}.items():
            monkeypatch.setenv(name, value)
        plan = write_plan(workdir, "Deploy(manifest)", baseline="1s")
        console = Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None)
        outcome = await run_plan(RunOptions(
            plan_path=plan, api_base=sim.api_base_url, yes=True, report_dir=workdir / "reports",
            journal_path=workdir / ".rollout" / "journal.sqlite", tty=False, console=console))
        assert outcome.result.exit_code == 0, outcome.result.detail
        (after, pct), = sim.active_versions(WORKER)
        assert pct == 100.0 and after != before
        assert after == sim.versions(WORKER)[-1].id
    changes: list[dict[str, object]] = outcome.report["changes"]  # type: ignore[assignment]
    assert len(changes) == 1, changes
    return changes[0], before, after


ENVIRONMENTS: dict[str, dict[str, str]] = {
    "debug-log": {"WRANGLER_LOG": "debug"},
    "debug-log-unsanitized": {"WRANGLER_LOG": "debug", "WRANGLER_LOG_SANITIZE": "false"},
    "no-color": {"NO_COLOR": "1"},
    "ci": {"CI": "true"},
    "force-color": {"FORCE_COLOR": "1"},
    "proxies": {"HTTPS_PROXY": "http://127.0.0.1:{port}", "HTTP_PROXY": "http://127.0.0.1:{port}",
                "https_proxy": "http://127.0.0.1:{port}", "ALL_PROXY": "http://127.0.0.1:{port}",
                "NO_PROXY": "corp.example"},
}


@pytest.mark.wrangler
@pytest.mark.parametrize("case", list(ENVIRONMENTS))
async def test_user_environment_does_not_change_recorded_versions(
        case: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """wrangler 4.164.0: the recorded before/after are the simulator's real versions under each variable."""
    port = str(unused_loopback_port())
    variables = {name: value.replace("{port}", port) for name, value in ENVIRONMENTS[case].items()}
    change, before, after = await _deploy_through_engine(workdir, monkeypatch, variables)
    assert (change["worker"], change["before"], change["after"]) == (WORKER, before, after)


@pytest.mark.wrangler
@pytest.mark.usefixtures("wrangler_4_86")
@pytest.mark.parametrize("case", ["debug-log", "proxies"])
async def test_user_environment_with_wrangler_4_86(case: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with wrangler 4.86.0 (a different bundle, different debug lines)."""
    port = str(unused_loopback_port())
    variables = {name: value.replace("{port}", port) for name, value in ENVIRONMENTS[case].items()}
    change, before, after = await _deploy_through_engine(workdir, monkeypatch, variables)
    assert (change["worker"], change["before"], change["after"]) == (WORKER, before, after)


@pytest.mark.wrangler
@pytest.mark.parametrize("version", ["4.164.0", "4.86.0"])
async def test_debug_stdout_parsed_when_debug_is_forced(version: str, tmp_path: Path) -> None:
    """Debug forced on purpose (through the wrangler env, which wins): status and the output file still read right."""
    async with Simulator("healthy", traffic_rate=0) as sim:
        from rollout._node import wrangler_command

        env = {**sim.env(), "WRANGLER_LOG": "debug", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
        wrangler = Wrangler(command=wrangler_command(bundled_wrangler_cli(version)), env=env,
                            run_dir=tmp_path / "wrangler")
        result = await wrangler.run("deployments", "status", "--name", WORKER, "--json")
        assert result.ok, result.error_text
        assert "START CF API REQUEST" in result.stdout  # the debug lines really are there
        (live, _), = sim.active_versions(WORKER)
        assert parse_deployment_status(WORKER, result.stdout).sole_version == live
        assert result.json()["versions"][0]["version_id"] == live
        assert [r["type"] for r in result.records] == ["wrangler-session"]
        missing = await wrangler.run("deployments", "status", "--name", "no-such-worker", "--json")
        assert not missing.ok and missing.codes[0] == 10007
        assert missing.record("command-failed") is not None
        assert list((tmp_path / "wrangler").glob("out-*.jsonl")) == []  # each call's file is removed


@pytest.mark.wrangler
@pytest.mark.slow
async def test_bad_release_rolls_back_under_debug_log(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The measured bug end to end: WRANGLER_LOG=debug, bad release → the breach is rolled back and verified."""
    async with Simulator("bad-release") as sim:
        (before, _), = sim.active_versions(WORKER)
        for name, value in {**sim.env(), "WRANGLER_LOG": "debug"}.items():
            monkeypatch.setenv(name, value)
        plan = write_plan(workdir, 'Deploy(manifest), Watch("40s")')
        console = Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None)
        outcome = await run_plan(RunOptions(
            plan_path=plan, api_base=sim.api_base_url, yes=True, report_dir=workdir / "reports",
            journal_path=workdir / ".rollout" / "journal.sqlite", tty=False, console=console))
        assert outcome.result.exit_code == 1, outcome.result.detail
        assert sim.active_versions(WORKER) == [(before, 100.0)]
    report = json.loads((workdir / "reports" / "report.json").read_text())
    assert report["changes"][0]["before"] == before
    (rollback,) = report["rollbacks"]
    assert rollback["verified"] is True and rollback["to_version"] == before
